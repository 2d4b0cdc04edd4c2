"""The Spark cluster service without starting it, and how ``--engine spark`` picks its
master: the settings, else the cluster ``services up spark`` recorded (HAND-MADE
records, no JVM; the real cluster: tests/integration/test_spark_cluster.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stockbatch.process import spark_session as spark_session_module
from stockbatch.services.endpoints import effective_spark_settings, record_endpoint
from stockbatch.services.spark import SparkService, scala_version, spark_home
from stockbatch.services.system import ServiceError
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
    state = {"port": 40001, "workers": 2, "worker_cores": 1, "worker_memory": "1g"}
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
