"""The Spark cluster service without starting it, and how ``--engine spark`` picks its
master: the settings, else the cluster ``services up spark`` recorded (HAND-MADE
records, no JVM; the real cluster: tests/integration/test_spark_cluster.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stockbatch.process import spark_session as spark_session_module
from stockbatch.services import tls
from stockbatch.services.endpoints import effective_spark_settings, record_endpoint
from stockbatch.services.spark import NO_HOSTNAME_CHECK, SparkService, scala_version, spark_home
from stockbatch.services.system import ServiceError, free_port
from stockbatch.settings import ProcessSettings, Settings

RECORD = {
    "master_url": "spark://127.0.0.1:40001",
    "web_ui": "http://127.0.0.1:40002",
    "workers": 2,
    "app_conf": {"spark.executor.memory": "1g", "spark.cores.max": "2"},
}


@pytest.fixture(autouse=True)
def _no_spark_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STOCKBATCH_PROCESS__SPARK_MASTER", raising=False)
    monkeypatch.delenv("STOCKBATCH_PROCESS__SPARK_CONF", raising=False)


def _settings(home: Path, **process: Any) -> Settings:
    return Settings(home=home, process=ProcessSettings(engine="spark", **process))


def test_nothing_recorded_keeps_local_mode(tmp_path: Path) -> None:
    p = effective_spark_settings(_settings(tmp_path))
    assert p.spark_master == "local[*]" and p.spark_conf == {}


def test_default_master_uses_the_recorded_cluster(tmp_path: Path) -> None:
    record_endpoint(tmp_path, "spark", RECORD)
    p = effective_spark_settings(_settings(tmp_path, spark_conf={"spark.executor.memory": "2g"}))
    assert p.spark_master == "spark://127.0.0.1:40001"
    # The record fills in; an explicit Spark setting wins key by key.
    assert p.spark_conf == {"spark.executor.memory": "2g", "spark.cores.max": "2"}


EXPLICIT = ["spark://other:7077", "yarn", "k8s://https://k:6443", "local[2]"]


@pytest.mark.parametrize("master", EXPLICIT)
def test_an_explicit_master_ignores_the_record(tmp_path: Path, master: str) -> None:
    record_endpoint(tmp_path, "spark", RECORD)
    p = effective_spark_settings(_settings(tmp_path, spark_master=master))
    assert p.spark_master == master and p.spark_conf == {}


def test_session_for_starts_the_session_on_the_recorded_master(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.delenv("STOCKBATCH_SPARK_SUBMIT", raising=False)
    monkeypatch.setattr(spark_session_module, "spark_session", lambda **kw: calls.append(kw))
    record_endpoint(tmp_path, "spark", RECORD)
    spark_session_module.session_for(_settings(tmp_path))
    assert calls == [{"master": RECORD["master_url"], "conf": RECORD["app_conf"]}]


@pytest.mark.parametrize(
    ("master", "loopback"),
    [
        ("spark://127.0.0.1:7077", True),
        ("spark://localhost:7077", True),
        ("spark://127.0.0.1:7077,127.0.0.1:7078", True),
        ("spark://spark-master.example:7077", False),
        ("spark://127.0.0.1:7077,10.0.0.2:7077", False),
        ("yarn", False),
        ("k8s://https://127.0.0.1:6443", False),
    ],
)
def test_driver_binds_loopback_only_for_a_local_master(master: str, loopback: bool) -> None:
    assert spark_session_module._on_loopback(master) is loopback


def test_sizes_app_conf_and_status_before_any_start(tmp_path: Path) -> None:
    service = SparkService(tmp_path, workers=3, worker_cores=2, worker_memory="768m")
    status = service.status()
    assert status.state == "not started" and status.endpoint == {}
    service._save_state({"port": 40001, "webui_port": 40002, "workers": 3})
    assert service.app_conf() == {
        "spark.executor.cores": "2",
        "spark.executor.memory": "768m",
        "spark.cores.max": "6",
        "spark.sql.shuffle.partitions": "12",
        "spark.default.parallelism": "6",
    }
    endpoint = service.endpoint()
    assert endpoint["master_url"] == "spark://127.0.0.1:40001"
    assert endpoint["web_ui"] == "http://127.0.0.1:40002"
    # Unset options are what the last start used, else the defaults (2 x 1 core, 1g).
    assert SparkService(tmp_path).endpoint()["workers"] == 3
    assert SparkService(tmp_path / "other")._sizes({}) == (2, 1, "1g")


def test_a_running_cluster_is_not_resized(tmp_path: Path) -> None:
    state = {"port": 40001, "workers": 2, "worker_cores": 1, "worker_memory": "1g", "tls": True}
    SparkService(tmp_path, workers=2)._check_options(state, pid=1)  # same size: kept
    with pytest.raises(ServiceError, match="services down spark"):
        SparkService(tmp_path, workers=3)._check_options(state, pid=1)


@pytest.mark.parametrize(
    "options", [{"workers": 0}, {"worker_cores": 0}, {"worker_memory": "1 GB"}]
)
def test_bad_sizes_are_refused(tmp_path: Path, options: dict[str, Any]) -> None:
    with pytest.raises(ServiceError):
        SparkService(tmp_path, **options)


def test_the_installed_distribution_is_found() -> None:
    home = spark_home()
    assert (home / "jars").is_dir()
    assert scala_version(home) == "2.13"


# ----------------------------------------------------------------------------- security


def _prepared(home: Path, insecure: bool) -> tuple[SparkService, dict[str, Any]]:
    """A cluster configured but not launched: its state and the supervisor's spec."""
    service = SparkService(home, workers=2, insecure=insecure)
    state: dict[str, Any] = {"port": free_port()}
    service._prepare(state, ("java", spark_home()))
    return service, json.loads((service.dir / "supervisor.json").read_text())


def test_a_secured_cluster_keeps_its_secrets_off_command_lines(tmp_path: Path) -> None:
    service, spec = _prepared(tmp_path, insecure=False)
    secret = service.secret_file.read_text().strip()
    assert len(secret) == 64 and service.secret_file.stat().st_mode & 0o777 == 0o600
    properties = service.conf_dir / "daemons.properties"
    assert properties.stat().st_mode & 0o777 == 0o600
    text = properties.read_text()
    assert f"spark.authenticate.secret={secret}\n" in text
    password = service._stored_state()["keystore_password"]
    assert "spark.ssl.standalone.enabled=true" in text and password in text
    for argv in spec["components"].values():
        assert argv[argv.index("--properties-file") + 1] == str(properties)
        assert NO_HOSTNAME_CHECK in argv
        assert not any(secret in a or password in a for a in argv)
    argvs = spec["components"].values()
    https_ports = {a for argv in argvs for a in argv if "standalone.port" in a}
    assert len(https_ports) == 3  # master and two workers, each its own HTTPS port
    # The record: TLS, the CA, the HTTPS UI, the secret FILE for applications.
    endpoint = service.endpoint()
    assert endpoint["tls"] is True and endpoint["ca_file"] == str(tls.ca_file(tmp_path))
    assert endpoint["web_ui"].startswith("https://127.0.0.1:")
    assert endpoint["secret_file"] == str(service.secret_file)
    assert secret not in json.dumps(endpoint) and password not in json.dumps(endpoint)
    conf = endpoint["app_conf"]
    assert conf["spark.authenticate"] == "true"
    assert conf["spark.authenticate.secret.file"] == str(service.secret_file)
    assert conf["spark.ssl.rpc.enabled"] == "true"
    assert Path(conf["spark.ssl.rpc.certChain"]).read_text().count("BEGIN CERTIFICATE") == 2
    # A restart keeps the secret (applications holding the file's path keep working).
    service._prepare({"port": free_port()}, ("java", spark_home()))
    assert service.secret_file.read_text().strip() == secret


def test_an_insecure_cluster_says_so(tmp_path: Path) -> None:
    service, spec = _prepared(tmp_path, insecure=True)
    assert service.warnings and "WITHOUT authentication or TLS" in service.warnings[0]
    for argv in spec["components"].values():
        assert "--properties-file" not in argv and NO_HOSTNAME_CHECK not in argv
    endpoint = service.endpoint()
    assert endpoint["tls"] is False and endpoint["ca_file"] is None
    assert endpoint["web_ui"].startswith("http://")
    assert not any(k.startswith(("spark.ssl", "spark.auth")) for k in endpoint["app_conf"])


def test_a_running_cluster_is_not_switched_between_tls_and_plain(tmp_path: Path) -> None:
    secured = {"port": 40001, "workers": 2, "worker_cores": 1, "worker_memory": "1g", "tls": True}
    SparkService(tmp_path)._check_options(secured, pid=1)
    with pytest.raises(ServiceError, match="with authentication and TLS"):
        SparkService(tmp_path, insecure=True)._check_options(secured, pid=1)
    plain = {**secured, "tls": False}
    with pytest.raises(ServiceError, match="services down spark"):
        SparkService(tmp_path)._check_options(plain, pid=1)
    insecure = SparkService(tmp_path, insecure=True)
    insecure._check_options(plain, pid=1)
    assert insecure.warnings


def test_the_session_reads_the_secret_file_for_a_standalone_master(tmp_path: Path) -> None:
    secret_file = tmp_path / "auth.secret"
    secret_file.write_text("s3cret\n")
    settings = {"spark.authenticate": "true", "spark.authenticate.secret.file": str(secret_file)}
    spark_session_module._read_secret_file(settings, "spark://127.0.0.1:7077")
    assert settings == {"spark.authenticate": "true", "spark.authenticate.secret": "s3cret"}
    # Kubernetes reads secret files itself; an explicit secret wins.
    k8s = {"spark.authenticate.secret.file": str(secret_file)}
    spark_session_module._read_secret_file(k8s, "k8s://https://k:6443")
    assert k8s == {"spark.authenticate.secret.file": str(secret_file)}
    missing = {"spark.authenticate.secret.file": str(tmp_path / "gone")}
    with pytest.raises(spark_session_module.SparkUnavailableError, match="services up spark"):
        spark_session_module._read_secret_file(missing, "spark://127.0.0.1:7077")


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("spark.authenticate.secret", True),
        ("spark.ssl.keyStorePassword", True),
        ("spark.ssl.rpc.privateKeyPassword", True),
        ("spark.authenticate", False),
        ("spark.ssl.rpc.privateKey", False),
    ],
)
def test_secret_settings_are_kept_off_the_gateway_command_line(key: str, secret: bool) -> None:
    assert spark_session_module._is_secret(key) is secret
