"""The local Airflow that the project runs itself, and ``stockbatch orchestrate``.

One real Airflow 3 (API server, scheduler, DAG processor, triggerer) for the whole
module, started with ``stockbatch services up airflow`` in the home of the session's
PostgreSQL (its metadata database lives there), reading the test DAGs of
``tests/fixtures/dags``; it is stopped at the end whatever happens. It serves HTTPS
with a certificate of the home's CA (the default): every client here verifies it
against that CA, and the tasks' Execution API calls go over it. Tests run in file
order; the last one stops it and checks that no process is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from integration.conftest import Postgres
from stockbatch.cli import app
from stockbatch.cli.services import app as services_app
from stockbatch.orchestrate.client import AirflowClient
from stockbatch.services import ServiceError, recorded_endpoints, tls
from stockbatch.services.airflow import AirflowService
from stockbatch.services.system import free_port, pid_alive
from stockbatch.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

DAGS = Path(__file__).resolve().parents[1] / "fixtures" / "dags"
OK_DAG = "stockbatch_test_ok"
FAIL_DAG = "stockbatch_test_fail"
FAILURE = "stockbatch test failure: the quality gate says no"  # tests/fixtures/dags/dag_fail.py
MARKER = "airflow-sees-this"

runner = CliRunner()


@dataclass
class LocalAirflow:
    """The module's running Airflow: its home, its environment, its recorded endpoint."""

    home: Path
    env: dict[str, str]
    service: AirflowService
    up_output: str
    up_seconds: float

    @property
    def record(self) -> dict[str, Any]:
        return recorded_endpoints(self.home)["airflow"]

    @property
    def verify(self) -> ssl.SSLContext:
        """What an httpx call verifies the API server with: the recorded CA alone."""
        return ssl.create_default_context(cafile=self.record["ca_file"])

    def client(self, password: str | None = None) -> AirflowClient:
        rec = self.record
        return AirflowClient(
            rec["url"], rec["username"], password or rec["password"], ca_file=rec["ca_file"]
        )

    def cli(self, *args: str) -> Result:
        return runner.invoke(app, list(args), env=self.env, catch_exceptions=False)


def _env(home: Path) -> dict[str, str]:
    return {
        "STOCKBATCH_HOME": str(home),
        "STOCKBATCH_AIRFLOW__DAGS_FOLDER": str(DAGS),
        "STOCKBATCH_AIRFLOW__METADATA_DB": "postgresql",
        "STOCKBATCH_TEST_MARKER": MARKER,
    }


def _live_group_members(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


def _processes_with_airflow_home(folder: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"AIRFLOW_HOME={folder}".encode() in environ and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def airflow(pg: Postgres) -> Iterator[LocalAirflow]:
    """``services up airflow`` once (metadata in the session's PostgreSQL); always stopped."""
    home = pg.home
    env = _env(home)
    service = AirflowService(home, metadata_db="postgresql", dags_folder=DAGS)
    try:
        t0 = time.monotonic()
        result = runner.invoke(services_app, ["up", "airflow", "--home", str(home)], env=env)
        seconds = time.monotonic() - t0
        if result.exit_code != 0:
            pytest.fail(f"services up airflow failed:\n{result.output}", pytrace=False)
        running = LocalAirflow(home, env, service, result.output, seconds)
        # The DAG processor parses the folder right after start: wait for both test DAGs.
        deadline = time.monotonic() + 60
        with running.client() as client:
            while not {OK_DAG, FAIL_DAG} <= set(client.dag_ids()):
                assert time.monotonic() < deadline, f"test DAGs not parsed: {client.dag_ids()}"
                time.sleep(1)
        yield running
    finally:
        with contextlib.suppress(ServiceError):
            service.down()


# ----------------------------------------------------------------------------- the service


def test_up_reports_running_with_url_and_records_credentials(airflow: LocalAirflow) -> None:
    assert "airflow: running at https://127.0.0.1:" in airflow.up_output
    assert "TLS, verify with ca_file" in airflow.up_output
    assert "password in services.json" in airflow.up_output
    assert "WARNING" not in airflow.up_output  # PostgreSQL is up, TLS on: nothing to warn
    assert airflow.up_seconds < 90, f"start took {airflow.up_seconds:.0f} s"

    rec = airflow.record
    assert rec["url"].startswith("https://127.0.0.1:") and rec["url"] == airflow.service.url
    assert rec["tls"] is True and rec["ca_file"] == str(tls.ca_file(airflow.home))
    assert rec["username"] == "admin" and len(rec["password"]) >= 32
    assert rec["metadata_db"] == "postgresql"
    assert rec["dags_folder"] == str(DAGS)
    assert set(rec["components"]) == {"api-server", "scheduler", "dag-processor", "triggerer"}
    for folder_file in (airflow.home / "services.json", airflow.service.config_file):
        assert stat.S_IMODE(folder_file.stat().st_mode) == 0o600, folder_file

    result = runner.invoke(services_app, ["status", "airflow", "--home", str(airflow.home)])
    assert result.exit_code == 0, result.output
    assert f"airflow: running at {rec['url']}" in result.output
    result = runner.invoke(
        services_app, ["status", "airflow", "--home", str(airflow.home), "--json"]
    )
    status = json.loads(result.output)["airflow"]
    assert status["state"] == "running"
    assert "password" not in status["endpoint"]  # status never shows the secret
    assert "scheduler, dag-processor, triggerer healthy" in status["detail"]


def test_health_reports_every_component(airflow: LocalAirflow) -> None:
    health = httpx.get(
        f"{airflow.record['url']}/api/v2/monitor/health", timeout=10, verify=airflow.verify
    ).json()
    for part in ("metadatabase", "scheduler", "dag_processor", "triggerer"):
        assert health[part]["status"] == "healthy", health


def test_the_api_server_speaks_https_only_and_is_verified_by_the_home_ca(
    airflow: LocalAirflow, tmp_path: Path
) -> None:
    url = airflow.record["url"]
    health = f"{url}/api/v2/monitor/health"
    assert httpx.get(health, timeout=10, verify=airflow.verify).status_code == 200
    # Plain HTTP to the same port gets no answer (a TLS server drops it).
    with pytest.raises(httpx.HTTPError):
        httpx.get(health.replace("https://", "http://", 1), timeout=10)
    # A client trusting another CA, or only the public ones, refuses the certificate.
    other_ca = tls.ensure_ca(tmp_path / "other").cert_file
    for verify in (ssl.create_default_context(cafile=str(other_ca)), True):
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(health, timeout=10, verify=verify)
    # So does stockbatch orchestrate pointed at it without the recorded CA, in one line.
    explicit = {
        **airflow.env,
        "STOCKBATCH_AIRFLOW__URL": url,
        "STOCKBATCH_AIRFLOW__USERNAME": "admin",
        "STOCKBATCH_AIRFLOW__PASSWORD": airflow.record["password"],
    }
    result = runner.invoke(app, ["orchestrate", "status"], env=explicit)
    assert result.exit_code == 1
    assert "TLS certificate is not trusted" in result.output
    assert "Traceback" not in result.output
    # The task runners' client trusts the home's CA alone, at the https Execution API.
    cfg = airflow.service.config_file.read_text()
    assert f"execution_api_server_url = {url}/execution/" in cfg
    assert f"ssl_ca_file = {airflow.record['ca_file']}" in cfg
    assert "client_use_public_certs = False" in cfg


def test_metadata_lives_in_its_own_postgres_database(airflow: LocalAirflow, pg: Postgres) -> None:
    with pg.superuser() as conn:
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'airflow'"
        ).fetchone()
    assert owner == ("airflow",)
    with pg.superuser("airflow") as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables").fetchall()}
    assert {"dag", "dag_run", "task_instance", "job"} <= tables


def test_recorded_credentials_log_in_and_a_wrong_password_is_refused(
    airflow: LocalAirflow,
) -> None:
    url = airflow.record["url"]
    with httpx.Client(base_url=url, timeout=10, verify=airflow.verify) as http:
        good = http.post(
            "/auth/token", json={"username": "admin", "password": airflow.record["password"]}
        )
        assert good.status_code == 201
        token = good.json()["access_token"]
        dags = http.get("/api/v2/dags", headers={"Authorization": f"Bearer {token}"})
        assert dags.status_code == 200
        assert {OK_DAG, FAIL_DAG} <= {d["dag_id"] for d in dags.json()["dags"]}

        bad = http.post("/auth/token", json={"username": "admin", "password": "wrong"})
        assert bad.status_code == 401
        assert http.get("/api/v2/dags").status_code == 401  # no token

    result = runner.invoke(
        app,
        ["orchestrate", "status"],
        env={**airflow.env, "STOCKBATCH_AIRFLOW__PASSWORD": "wrong"},
    )
    assert result.exit_code == 1
    assert "refused the login of 'admin'" in result.output
    assert "Traceback" not in result.output


# ----------------------------------------------------------------------------- orchestrate


def test_trigger_wait_succeeds_and_tasks_see_the_stockbatch_settings(
    airflow: LocalAirflow,
) -> None:
    # The task runners reach the Execution API over https: a run succeeds only if their
    # client verifies the server with the home's CA.
    result = airflow.cli(
        "orchestrate", "trigger", OK_DAG, "--conf", '{"symbols": ["AAPL"]}', "--wait"
    )
    assert result.exit_code == 0, result.output
    assert f"{OK_DAG}: unpaused" in result.output
    assert "echo: success" in result.output
    assert "succeeded in" in result.output

    with airflow.client() as client:
        run = client.dag_runs(OK_DAG, limit=1)[0]
        assert run["state"] == "success" and run["conf"] == {"symbols": ["AAPL"]}
        home_log = "\n".join(client.task_log(OK_DAG, run["dag_run_id"], "settings_home", 1))
        echo_log = "\n".join(client.task_log(OK_DAG, run["dag_run_id"], "echo", 1))
    # The environment of `services up` reaches the tasks: same home, every STOCKBATCH_*.
    assert f"STOCKBATCH_HOME={airflow.home}" in home_log
    assert f"marker {MARKER}" in echo_log
    assert "'symbols': ['AAPL']" in echo_log


def test_trigger_wait_fails_with_the_failed_tasks_log(airflow: LocalAirflow) -> None:
    result = airflow.cli("orchestrate", "trigger", FAIL_DAG, "--wait")
    assert result.exit_code == 1, result.output
    assert "first: success" in result.output
    assert "gate: failed" in result.output
    assert "log lines of gate (try 1)" in result.output
    assert f"RuntimeError: {FAILURE}" in result.output
    assert f"error: {FAIL_DAG}: run manual__" in result.output
    assert "Traceback" not in result.output


def test_trigger_with_a_logical_date(airflow: LocalAirflow) -> None:
    result = airflow.cli("orchestrate", "trigger", OK_DAG, "--logical-date", "2024-03-28")
    assert result.exit_code == 0, result.output
    with airflow.client() as client:
        runs = [r for r in client.dag_runs(OK_DAG) if r["logical_date"]]
    assert runs and runs[0]["logical_date"].startswith("2024-03-28T00:00:00")


def test_status_lists_recent_runs(airflow: LocalAirflow) -> None:
    result = airflow.cli("orchestrate", "status")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["dag", "run", "id"]
    ok = [line for line in lines if line.startswith(OK_DAG)]
    failed = [line for line in lines if line.startswith(FAIL_DAG)]
    done = [line for line in ok if " success " in line]  # (the logical-date run may still run)
    assert done and done[-1].rstrip().endswith(" s")  # start, end, duration
    assert failed and " failed " in failed[0]

    result = airflow.cli("orchestrate", "status", FAIL_DAG, "--json")
    runs = json.loads(result.output)
    assert [r["dag_id"] for r in runs] == [FAIL_DAG]


def test_clear_errors_without_traceback(airflow: LocalAirflow, tmp_path: Path) -> None:
    result = airflow.cli("orchestrate", "trigger", "no_such_dag")
    assert result.exit_code == 1
    assert "no DAG 'no_such_dag'" in result.output
    assert f"{FAIL_DAG}, {OK_DAG}" in result.output  # the DAGs that do exist

    result = airflow.cli("orchestrate", "trigger", OK_DAG, "--conf", "{not json")
    assert result.exit_code == 2
    assert "--conf is not valid JSON" in result.output
    result = airflow.cli("orchestrate", "trigger", OK_DAG, "--conf", "[1, 2]")
    assert result.exit_code == 2 and "JSON object" in result.output
    result = airflow.cli("orchestrate", "trigger", OK_DAG, "--logical-date", "yesterday")
    assert result.exit_code == 2 and "--logical-date" in result.output

    # A home where Airflow was never started, and an Airflow that does not answer.
    empty = {**airflow.env, "STOCKBATCH_HOME": str(tmp_path)}
    result = runner.invoke(app, ["orchestrate", "status"], env=empty)
    assert result.exit_code == 1
    assert "start it with `stockbatch services up airflow`" in result.output
    dead = {
        **empty,
        "STOCKBATCH_AIRFLOW__URL": f"http://127.0.0.1:{free_port()}",
        "STOCKBATCH_AIRFLOW__USERNAME": "admin",
        "STOCKBATCH_AIRFLOW__PASSWORD": "x",
    }
    result = runner.invoke(app, ["orchestrate", "trigger", OK_DAG, "--wait"], env=dead)
    assert result.exit_code == 1
    assert "does not answer" in result.output and "services up airflow" in result.output
    assert "Traceback" not in result.output


def test_metadata_db_choice_without_postgres(tmp_path: Path) -> None:
    """Cheap (nothing is started): SQLite fallback with a warning, or a clear refusal."""
    auto = AirflowService(tmp_path, metadata_db="auto", dags_folder=DAGS)
    kind, url, _ = auto._metadata({"db_password": "x"})
    assert kind == "sqlite" and url == f"sqlite:///{auto.sqlite_file}"
    assert len(auto.warnings) == 1
    assert "for trying only" in auto.warnings[0]
    assert "stockbatch services up postgresql" in auto.warnings[0]

    strict = AirflowService(tmp_path, metadata_db="postgresql", dags_folder=DAGS)
    with pytest.raises(ServiceError, match="stockbatch services up postgresql"):
        strict._metadata({"db_password": "x"})
    # Metadata that lived in PostgreSQL is never silently replaced by an empty SQLite.
    with pytest.raises(ServiceError, match="keeps its metadata in PostgreSQL"):
        auto._metadata({"db_password": "x", "metadata_db": "postgresql"})
    sqlite = AirflowService(tmp_path, metadata_db="sqlite", dags_folder=DAGS)
    assert sqlite._metadata({"db_password": "x"})[0] == "sqlite" and sqlite.warnings == []

    # Settings are the defaults of the service (STOCKBATCH_AIRFLOW__*).
    os.environ["STOCKBATCH_AIRFLOW__METADATA_DB"] = "sqlite"
    try:
        assert AirflowService(tmp_path).metadata_db == "sqlite"
        assert Settings().airflow.metadata_db == "sqlite"
    finally:
        del os.environ["STOCKBATCH_AIRFLOW__METADATA_DB"]


def test_down_stops_every_process(airflow: LocalAirflow) -> None:
    """Last: `services down` leaves no Airflow process (nor a child of one) behind."""
    supervisor = airflow.service.status().pid
    assert supervisor is not None
    components = airflow.record["components"]
    assert all(pid_alive(pid) for pid in components.values())
    assert len(_live_group_members(supervisor)) > len(components)  # + workers, log servers

    result = runner.invoke(services_app, ["down", "airflow", "--home", str(airflow.home)])
    assert result.exit_code == 0, result.output
    assert "airflow: stopped" in result.output
    assert _live_group_members(supervisor) == []
    assert not any(pid_alive(pid) for pid in components.values())
    assert _processes_with_airflow_home(airflow.service.dir) == []
    assert "airflow" not in recorded_endpoints(airflow.home)
    assert airflow.service.status().state == "stopped"


def test_sqlite_fallback_and_insecure_start_for_real_with_warnings(tmp_path: Path) -> None:
    """After the module's Airflow is down (one start for two things): a home without
    PostgreSQL gets SQLite and says so; ``--insecure`` serves plain HTTP and says so,
    keeps that mode while it runs, and a later secure start says the URL changed."""
    env = {**_env(tmp_path), "STOCKBATCH_AIRFLOW__METADATA_DB": "auto"}
    service = AirflowService(tmp_path, metadata_db="auto", dags_folder=DAGS)
    up = ["up", "airflow", "--home", str(tmp_path)]
    try:
        result = runner.invoke(services_app, [*up, "--insecure"], env=env)
        assert result.exit_code == 0, result.output
        assert "WARNING:" in result.output and "for trying only" in result.output
        assert "stockbatch services up postgresql" in result.output
        assert "WITHOUT TLS (--insecure)" in result.output
        rec = recorded_endpoints(tmp_path)["airflow"]
        assert rec["metadata_db"] == "sqlite"
        assert rec["url"].startswith("http://127.0.0.1:")
        assert rec["tls"] is False and rec["ca_file"] is None
        assert "NO TLS (--insecure)" in result.output
        health = httpx.get(f"{rec['url']}/api/v2/monitor/health", timeout=10)
        assert health.status_code == 200 and health.json()["scheduler"]["status"] == "healthy"
        assert "ssl_cert" not in service.config_file.read_text()
        assert service.sqlite_file.exists()
        assert service.status().running

        # HTTPS asked of the plain server while it runs: refused with what to do.
        result = runner.invoke(services_app, up, env=env)
        assert result.exit_code == 1
        assert "already runs" in result.output and "services down airflow" in result.output

        assert service.down()
        result = runner.invoke(services_app, up, env=env)
        assert result.exit_code == 0, result.output
        assert "now serves HTTPS: its URL is now https://127.0.0.1:" in result.output
        rec = recorded_endpoints(tmp_path)["airflow"]
        assert rec["url"].startswith("https://") and rec["tls"] is True
        verify = ssl.create_default_context(cafile=rec["ca_file"])
        health = httpx.get(f"{rec['url']}/api/v2/monitor/health", timeout=10, verify=verify)
        assert health.status_code == 200
    finally:
        service.down()
    assert service.status().state == "stopped"
