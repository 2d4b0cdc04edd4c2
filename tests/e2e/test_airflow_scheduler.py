"""The daily DAG end to end on the real scheduler: ``stockbatch services up airflow`` on
the project's ``dags/``, runs triggered and followed with ``stockbatch orchestrate``.

One stack for the module, always stopped at the end: in the Airflow home, a PostgreSQL
holding Airflow's metadata and an OpenSearch node (the search index); the warehouse in
a second PostgreSQL (its own server, so stopping it leaves Airflow's metadata alone).
The settings reach the tasks as in production: the ``STOCKBATCH_*`` environment of
``services up`` (warehouse URLs, search kind, retries 1 with a 1 s delay).

The tests run in file order over one landing folder (a copy of the demo sample cut
after SESSIONS[0]), each appending the next session's lines and triggering that
session, so each starts from the state the previous one left:

1. a SIGKILL of the ``process`` task's process mid-write: retried, the lake equals a
   clean ``stockbatch run``, no ``.tmp-*`` file left;
2. ``trigger --wait`` succeeds (manifest linked to the Airflow run, rows in the
   warehouse); the same interval again changes nothing;
3. the warehouse's PostgreSQL down: load retried, the run fails naming the database;
   PostgreSQL back, the failed tasks cleared, the run completes, and the warehouse
   equals a clean run's (nothing lost, nothing twice);
4. OpenSearch down during the search sync: the run succeeds, its manifest is
   ``partial`` with the index stale; the node back, the next run catches up.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import polars as pl
import psycopg
import pytest
from typer.testing import CliRunner, Result

from stockbatch.cli import app
from stockbatch.cli.services import app as services_app
from stockbatch.orchestrate.client import AirflowClient
from stockbatch.services import ServiceError, recorded_endpoints
from stockbatch.services.airflow import AirflowService
from stockbatch.services.base import LocalService
from stockbatch.services.opensearch import OpenSearchService
from stockbatch.services.postgresql import PostgresService
from support.lake_compare import PROVENANCE_ONLY, assert_lakes_equal

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.opensearch]

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
DAG = "stockbatch_daily"
# The demo's nasdaq files (A, AON, DBO; CPAAW has one line) run to 2023-04-13 (A to
# 2023-04-14: a run of that session would fail the quality gate on the missing bars).
SESSIONS = ("2023-04-10", "2023-04-11", "2023-04-12", "2023-04-13")
NASDAQ = ("nasdaq/stocks/A.csv", "nasdaq/stocks/AON.csv", "nasdaq/stocks/CPAAW.csv")
NASDAQ_ETF = "nasdaq/etfs/DBO.csv"
DATA_TABLES = ("instruments", "daily_bars", "daily_features", "quarterly_features", "quarantine")
WAREHOUSE_DB = "wh_airflow"

runner = CliRunner()


@dataclass
class Stack:
    """The module's running services, its landing folder and the tasks' environment."""

    home: Path
    env: dict[str, str]
    landing: Path
    held_back: dict[str, dict[str, str]]
    """session -> {file: its lines of that session}, appended by :meth:`arrive`."""
    airflow: AirflowService
    meta_pg: PostgresService
    wh_pg: PostgresService
    search: OpenSearchService
    wh_urls: dict[str, str]

    def cli(self, *args: str) -> Result:
        return runner.invoke(app, list(args), env=self.env, catch_exceptions=False)

    def client(self) -> AirflowClient:
        rec = recorded_endpoints(self.home)["airflow"]
        return AirflowClient(rec["url"], rec["username"], rec["password"], ca_file=rec["ca_file"])

    def arrive(self, session: str) -> None:
        """The session's lines land (appended to their files)."""
        for rel, lines in self.held_back[session].items():
            with open(self.landing / rel, "a") as f:
                f.write(lines)

    def trigger(self, session: str, *extra: str, at: str = "22:00:00") -> Result:
        conf = json.dumps({"source": "kaggle", "path": str(self.landing)})
        return self.cli(
            "orchestrate",
            "trigger",
            DAG,
            "--conf",
            conf,
            "--logical-date",
            f"{session}T{at}+00:00",
            *extra,
        )


def _landing(folder: Path, demo_data: Path) -> dict[str, dict[str, str]]:
    """Copy the demo sample to ``folder``, holding back the nasdaq lines after SESSIONS[0]."""
    shutil.copytree(demo_data, folder)
    held: dict[str, dict[str, str]] = {s: {} for s in SESSIONS[1:]}
    for rel in (*NASDAQ, NASDAQ_ETF):
        lines = (folder / rel).read_text().splitlines(keepends=True)
        keep = [ln for ln in lines if not ln.startswith(SESSIONS[1:])]
        for session in SESSIONS[1:]:
            later = "".join(ln for ln in lines if ln.startswith(session))
            if later:
                held[session][rel] = later
        (folder / rel).write_text("".join(keep))
    assert all(held.values()), held
    return held


def _down(service: LocalService[Any]) -> None:
    with contextlib.suppress(ServiceError):
        service.down()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("airflow-e2e")
    home, wh_home = root / "home", root / "warehouse-home"
    landing = root / "landing" / "kaggle"
    held = _landing(landing, demo_data)
    meta_pg, wh_pg = PostgresService(home), PostgresService(wh_home)
    search = OpenSearchService(home)
    airflow = AirflowService(home, metadata_db="postgresql", dags_folder=DAGS)
    with contextlib.ExitStack() as stop:
        # Stopped in reverse order: Airflow first (it needs its metadata database).
        for service, what in (
            (meta_pg, "PostgreSQL (Airflow metadata)"),
            (wh_pg, "PostgreSQL (warehouse)"),
            (search, "OpenSearch node"),
        ):
            stop.callback(_down, service)
            try:
                service.up()
            except ServiceError as exc:
                pytest.fail(f"could not start the local {what}: {exc}", pytrace=False)
        urls = wh_pg.create_database(WAREHOUSE_DB)
        env = {
            "STOCKBATCH_HOME": str(home),
            "STOCKBATCH_PROGRESS": "false",
            "STOCKBATCH_AIRFLOW__DAGS_FOLDER": str(DAGS),
            "STOCKBATCH_AIRFLOW__METADATA_DB": "postgresql",
            "STOCKBATCH_WAREHOUSE__KIND": "postgresql",
            "STOCKBATCH_WAREHOUSE__URL": urls["loader"],
            "STOCKBATCH_WAREHOUSE__OWNER_URL": urls["owner"],
            "STOCKBATCH_WAREHOUSE__READER_URL": urls["reader"],
            "STOCKBATCH_SEARCH__KIND": "opensearch",  # the node recorded in this home
            "STOCKBATCH_SEARCH__TIMEOUT_S": "5",
            "STOCKBATCH_SCHEDULE__RETRIES": "1",
            "STOCKBATCH_SCHEDULE__RETRY_DELAY_S": "1",
            # No path: the scheduler's own run of the latest interval fails fast (below).
            "STOCKBATCH_SCHEDULE__SOURCE": "kaggle",
        }
        stop.callback(_down, airflow)
        result = runner.invoke(services_app, ["up", "airflow", "--home", str(home)], env=env)
        if result.exit_code != 0:
            pytest.fail(f"services up airflow failed:\n{result.output}", pytrace=False)
        running = Stack(home, env, landing, held, airflow, meta_pg, wh_pg, search, urls)
        with running.client() as client:
            wait_for(f"{DAG} to be parsed", lambda: DAG in client.dag_ids(), timeout=90, poll=1)
            # Unpaused, the DAG gets a run of its latest interval from the scheduler
            # (catchup=False still runs the newest one). It would ingest today's data and,
            # with max_active_runs=1, hold the tests' runs back: let it end first (the
            # source has no folder, so its ingest fails at once, touching nothing).
            client.unpause(DAG)
            scheduled = wait_for(
                "the scheduled run",
                lambda: [r for r in client.dag_runs(DAG) if r["run_type"] == "scheduled"],
                timeout=60,
                poll=1,
            )[0]
            done = client.follow(DAG, scheduled["dag_run_id"], lambda _ti: None, timeout=120)
            assert done["state"] in ("failed", "success"), done
        yield running


# ----------------------------------------------------------------------------- helpers


def manifests(home: Path) -> list[dict[str, Any]]:
    """The daily DAG's run manifests, oldest first."""
    docs = [json.loads(p.read_text()) for p in sorted((home / "lake" / "runs").glob("*.json"))]
    return [d for d in docs if d.get("command") == f"dag:{DAG}"]


def manifest_of(home: Path, airflow_run_id: str) -> dict[str, Any]:
    [doc] = [d for d in manifests(home) if d["params"].get("airflow_run_id") == airflow_run_id]
    return doc


def triggered_run_id(result: Result) -> str:
    """The Airflow run id ``orchestrate trigger`` printed."""
    for line in result.output.splitlines():
        if f"{DAG}: triggered run " in line:
            return line.split("triggered run ", 1)[1].split(" ", 1)[0]
    raise AssertionError(f"no run id in:\n{result.output}")


def gold_bytes(home: Path) -> dict[str, bytes]:
    gold = home / "lake" / "gold"
    return {str(p.relative_to(gold)): p.read_bytes() for p in sorted(gold.rglob("*.parquet"))}


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url.replace("+psycopg", "", 1), connect_timeout=10)


def warehouse_facts(url: str) -> dict[str, Any]:
    """Row counts of the data tables and a checksum of every daily_bars value."""
    with connect(url) as conn:
        facts: dict[str, Any] = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
            for t in DATA_TABLES
        }
        rows = conn.execute(
            "SELECT symbol, trade_date, open, high, low, close, adj_close, volume, source "
            "FROM daily_bars ORDER BY symbol, trade_date"
        ).fetchall()
    facts["daily_bars_sha256"] = hashlib.sha256(repr(rows).encode()).hexdigest()
    return facts


def stockbatch(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess, in a clean home of its own (no Airflow settings)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("STOCKBATCH_")}
    done = subprocess.run(
        [sys.executable, "-m", "stockbatch.cli", *args],
        env={**base, "STOCKBATCH_HOME": str(home), "STOCKBATCH_PROGRESS": "false", **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def wait_for(what: str, check: Callable[[], Any], timeout: float, poll: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


def task_state(client: AirflowClient, run_id: str, task_id: str) -> dict[str, Any] | None:
    for ti in client.task_instances(DAG, run_id):
        if ti["task_id"] == task_id:
            return ti
    return None


def task_process(ti_id: str) -> int | None:
    """The pid of the process running task instance ``ti_id`` (Airflow's task runner
    titles itself ``airflow worker -- <ti id>``)."""
    title = f"airflow worker -- {ti_id}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "cmdline").read_bytes().startswith(title):
                return int(entry.name)
    return None


def writing_in(pid: int, lake: Path) -> str | None:
    """A ``.tmp-*`` file under ``lake`` that ``pid`` holds open (a write in progress)."""
    fds = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        for fd in fds.iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith(str(lake)) and "/.tmp-" in target:
                    return target
    return None


# ----------------------------------------------------------------------------- 1. SIGKILL


def test_a_task_killed_mid_write_is_retried_and_leaves_no_half_written_state(
    stack: Stack, tmp_path: Path
) -> None:
    """SIGKILL of the ``process`` task's process while it writes the lake (a fresh lake:
    the full rebuild, the longest write): Airflow retries it, the run completes, and the
    lake equals a clean ``stockbatch run`` of the same data, with no temporary file left."""
    session = SESSIONS[0]
    lake = stack.home / "lake"
    result = stack.trigger(session)
    assert result.exit_code == 0, result.output
    run_id = triggered_run_id(result)
    killed_at = None
    with stack.client() as client:
        ti = wait_for(
            "process to start",
            lambda: (t := task_state(client, run_id, "process")) and t["state"] == "running" and t,
            timeout=120,
        )
        pid = wait_for("its process", lambda: task_process(ti["id"]), timeout=10, poll=0.01)
        # Kill it as soon as it holds a temporary lake file open (a write in progress).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and killed_at is None:
            killed_at = writing_in(pid, lake)
            if killed_at is None:
                time.sleep(0.002)
        assert killed_at, "the process task never wrote into the lake"
        os.kill(pid, signal.SIGKILL)
        final = client.follow(DAG, run_id, lambda _ti: None, poll=0.5, timeout=240)
        tis = {t["task_id"]: t for t in client.task_instances(DAG, run_id)}
    assert final["state"] == "success", (final, tis)
    assert tis["process"]["state"] == "success" and tis["process"]["try_number"] == 2, tis
    assert all(t["state"] == "success" for t in tis.values()), tis

    doc = manifest_of(stack.home, run_id)
    assert doc["status"] == "succeeded", doc
    assert list(lake.rglob(".tmp-*")) == [], f"killed while writing {killed_at}"
    clean = tmp_path / "clean"
    stockbatch(clean, "run", "--source", "kaggle", "--path", str(stack.landing), "--as-of", session)
    assert_lakes_equal(lake, clean / "lake", ignore=PROVENANCE_ONLY)


# ----------------------------------------------------------------------------- 2. trigger


def test_trigger_wait_succeeds_and_the_same_interval_again_changes_nothing(stack: Stack) -> None:
    session = SESSIONS[1]
    stack.arrive(session)
    result = stack.trigger(session, "--wait", "--timeout", "300")
    assert result.exit_code == 0, result.output
    assert "succeeded in" in result.output
    for task in ("ingest", "process", "load_warehouse", "sync_search", "quality_gate"):
        assert f"{task}: success" in result.output, result.output
    run_id = triggered_run_id(result)

    doc = manifest_of(stack.home, run_id)
    assert doc["status"] == "succeeded", doc
    assert doc["params"]["dag_id"] == DAG and doc["params"]["session"] == session
    assert doc["ingest"]["units_ingested"] == len(stack.held_back[session])  # files that grew
    assert doc["load"]["rows_changed"] > 0
    gold_rows = pl.scan_parquet(str(stack.home / "lake" / "gold" / "daily_features")).select(
        pl.len()
    )
    assert warehouse_facts(stack.wh_urls["owner"])["daily_bars"] == gold_rows.collect().item()
    with connect(stack.wh_urls["owner"]) as conn:
        newest = conn.execute(
            "SELECT max(trade_date)::text FROM daily_bars WHERE symbol = 'A'"
        ).fetchone()
        recorded = conn.execute(
            "SELECT status FROM pipeline_runs WHERE run_id = %s", [doc["run_id"]]
        ).fetchone()
    assert newest == (session,)
    assert recorded == ("succeeded",)

    # Airflow 3.3 keeps one run per logical date: the same one again is refused.
    same = stack.trigger(session)
    assert same.exit_code == 1
    assert "already has a run for that logical date" in same.output

    # The same interval again (a logical date one second later: the data interval is
    # the last complete one before it, the same): exit 0, nothing changes.
    before_gold, before_wh = gold_bytes(stack.home), warehouse_facts(stack.wh_urls["owner"])
    again = stack.trigger(session, "--wait", "--timeout", "300", at="22:00:01")
    assert again.exit_code == 0, again.output
    second = triggered_run_id(again)
    with stack.client() as client:
        first_run, second_run = (client.dag_run(DAG, r) for r in (run_id, second))
    for key in ("data_interval_start", "data_interval_end"):
        assert first_run[key] == second_run[key], (first_run, second_run)
    assert gold_bytes(stack.home) == before_gold
    assert warehouse_facts(stack.wh_urls["owner"]) == before_wh
    doc = manifest_of(stack.home, second)
    assert doc["status"] == "succeeded", doc
    assert doc["params"]["session"] == session
    assert doc["ingest"]["units_ingested"] == 0
    assert doc["process"]["skipped"]
    assert doc["load"]["rows_changed"] == 0


# ----------------------------------------------------------------------------- 3. PostgreSQL


def test_warehouse_down_fails_the_run_and_clearing_it_after_completes_it(
    stack: Stack,
) -> None:
    session = SESSIONS[2]
    stack.arrive(session)
    stack.wh_pg.down()
    try:
        result = stack.trigger(session, "--wait", "--timeout", "300")
        assert result.exit_code == 1, result.output
        out = result.output
        assert "ingest: success" in out and "process: success" in out
        assert "load_warehouse: up_for_retry" in out
        assert "load_warehouse: failed (try 2)" in out
        assert "log lines of load_warehouse (try 2)" in out
        port = urlsplit(stack.wh_urls["loader"]).port
        log = out.split("log lines of load_warehouse", 1)[1]
        assert f"127.0.0.1:{port}" in log or f"port {port}" in log, log
        assert "Connection refused" in log or "connection" in log.lower(), log
        assert f"{DAG}: run " in out and "failed after" in out
        run_id = triggered_run_id(result)
        doc = manifest_of(stack.home, run_id)
        assert doc["status"] == "failed"
    finally:
        stack.wh_pg.up()

    with stack.client() as client:
        cleared = client.clear(DAG, run_id, ["load_warehouse"])
        assert {t["task_id"] for t in cleared} >= {"load_warehouse", "publish"}, cleared
        final = client.follow(DAG, run_id, lambda _ti: None, poll=0.5, timeout=240)
        tis = {t["task_id"]: t for t in client.task_instances(DAG, run_id)}
    assert final["state"] == "success", (final, tis)
    assert all(t["state"] == "success" for t in tis.values()), tis
    doc = manifest_of(stack.home, run_id)
    assert doc["status"] == "succeeded", doc

    # Nothing lost, nothing twice: the same warehouse as a clean run over the same data.
    clean_urls = stack.wh_pg.create_database("wh_clean")
    stockbatch(
        stack.home.parent / "clean-pg",
        "run",
        "--source",
        "kaggle",
        "--path",
        str(stack.landing),
        "--as-of",
        session,
        STOCKBATCH_WAREHOUSE__KIND="postgresql",
        STOCKBATCH_WAREHOUSE__URL=clean_urls["loader"],
        STOCKBATCH_WAREHOUSE__OWNER_URL=clean_urls["owner"],
        STOCKBATCH_WAREHOUSE__READER_URL=clean_urls["reader"],
    )
    assert warehouse_facts(stack.wh_urls["owner"]) == warehouse_facts(clean_urls["owner"])


# ----------------------------------------------------------------------------- 4. OpenSearch


def test_search_down_leaves_the_run_partial_and_the_next_run_catches_up(stack: Stack) -> None:
    session = SESSIONS[3]
    stack.arrive(session)
    stack.search.down()
    try:
        result = stack.trigger(session, "--wait", "--timeout", "300")
        assert result.exit_code == 0, result.output
        assert "sync_search: success" in result.output
        doc = manifest_of(stack.home, triggered_run_id(result))
        assert doc["status"] == "partial", doc
        assert doc["load"]["search"]["stale"], doc["load"]
        assert doc["load"]["rows_changed"] > 0  # the warehouse got the session anyway
    finally:
        stack.search.up()

    # The next run (the same interval again) catches the index up; the warehouse is done.
    again = stack.trigger(session, "--wait", "--timeout", "300", at="22:00:01")
    assert again.exit_code == 0, again.output
    doc = manifest_of(stack.home, triggered_run_id(again))
    assert doc["status"] == "succeeded", doc
    assert not doc["load"]["search"].get("stale"), doc["load"]
    assert doc["load"]["rows_changed"] == 0
