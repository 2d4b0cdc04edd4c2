"""``stockbatch orchestrate backfill`` on the real scheduler: the project's own Airflow
(``services up airflow``, metadata in the session's PostgreSQL) runs the project's
``dags/``; a backfill of ``stockbatch_daily`` over three sessions and a holiday of the
demo data gives one succeeded run manifest per session, skips the holiday, and leaves
the same lake as one ``stockbatch run`` over the range.

The tasks get their settings from the environment of ``services up``: the lake and the
warehouse of this module's temporary folder. The DAG's own schedule (which starts when
the backfill unpauses it) points at a folder that does not exist and has no retries, so
the scheduled run of the latest interval fails at once without touching the lake.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from integration.conftest import Postgres
from stockbatch.cli import app
from stockbatch.cli.services import app as services_app
from stockbatch.orchestrate.client import AirflowClient
from stockbatch.services import ServiceError, recorded_endpoints
from stockbatch.services.airflow import AirflowService
from support.lake_compare import PROVENANCE_ONLY, assert_lakes_equal

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAILY = "stockbatch_daily"
# Logical dates 2023-04-05..07 at 22:00 UTC: the sessions 2023-04-06, 2023-04-07 (Good
# Friday, not a session) and 2023-04-10 (Monday). The demo's nasdaq files reach 04-13.
FROM, TO = "2023-04-05", "2023-04-07"
SESSIONS = ["2023-04-06", "2023-04-10"]
HOLIDAY = "2023-04-07"

runner = CliRunner()


@dataclass
class BackfillAirflow:
    home: Path
    env: dict[str, str]
    lake: Path
    landing: Path

    def client(self) -> AirflowClient:
        rec = recorded_endpoints(self.home)["airflow"]
        return AirflowClient(rec["url"], rec["username"], rec["password"], ca_file=rec["ca_file"])


@pytest.fixture(scope="module")
def airflow(
    pg: Postgres, demo_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BackfillAirflow]:
    """``services up airflow`` with the project's DAGs (metadata in the session's
    PostgreSQL, so in its home); the tasks write this module's lake; always stopped."""
    work = tmp_path_factory.mktemp("backfill")
    landing = work / "kaggle"
    shutil.copytree(demo_data, landing)
    env = {
        "STOCKBATCH_HOME": str(pg.home),
        "STOCKBATCH_AIRFLOW__DAGS_FOLDER": str(DAGS),
        "STOCKBATCH_AIRFLOW__METADATA_DB": "postgresql",
        "STOCKBATCH_LAKE__PATH": str(work / "lake"),
        "STOCKBATCH_WAREHOUSE__URL": f"sqlite:///{work / 'warehouse.db'}",
        "STOCKBATCH_SCHEDULE__SOURCE": "kaggle",
        "STOCKBATCH_SCHEDULE__PATH": str(work / "no-such-folder"),
        "STOCKBATCH_SCHEDULE__RETRIES": "0",
    }
    service = AirflowService(pg.home, metadata_db="postgresql", dags_folder=DAGS)
    try:
        result = runner.invoke(services_app, ["up", "airflow", "--home", str(pg.home)], env=env)
        if result.exit_code != 0:
            pytest.fail(f"services up airflow failed:\n{result.output}", pytrace=False)
        running = BackfillAirflow(pg.home, env, work / "lake", landing)
        deadline = time.monotonic() + 90
        with running.client() as client:
            while DAILY not in client.dag_ids():
                assert time.monotonic() < deadline, f"{DAILY} not parsed: {client.dag_ids()}"
                time.sleep(1)
        yield running
    finally:
        with contextlib.suppress(ServiceError):
            service.down()


def _manifests(lake: Path) -> list[dict[str, Any]]:
    docs = [json.loads(p.read_text()) for p in sorted((lake / "runs").glob("*.json"))]
    return [
        d
        for d in docs
        if str(d.get("params", {}).get("airflow_run_id", "")).startswith("backfill__")
    ]


def test_a_backfill_of_three_sessions_and_a_holiday_equals_one_run(
    airflow: BackfillAirflow, tmp_path: Path
) -> None:
    conf = json.dumps({"source": "kaggle", "path": str(airflow.landing)})
    t0 = time.monotonic()
    result = runner.invoke(
        app,
        [
            "orchestrate",
            "backfill",
            DAILY,
            "--from",
            FROM,
            "--to",
            TO,
            "--conf",
            conf,
            "--wait",
            "--timeout",
            "900",
        ],
        env=airflow.env,
        catch_exceptions=False,
    )
    seconds = time.monotonic() - t0
    assert result.exit_code == 0, result.output
    assert "3 run(s), logical dates 2023-04-05 22:00, 2023-04-06 22:00, 2023-04-07 22:00" in (
        result.output
    )
    assert "3 run(s) succeeded" in result.output
    print(f"backfill of 3 runs: {seconds:.0f} s")

    # One succeeded manifest per session, in order, each linked to its backfill run.
    docs = _manifests(airflow.lake)
    assert [d["params"]["session"] for d in docs] == SESSIONS
    assert [d["status"] for d in docs] == ["succeeded", "succeeded"]
    for doc in docs:
        assert {"ingest", "process", "load"} <= set(doc), sorted(doc)
        assert doc["params"]["dag_id"] == DAILY

    # The holiday's run succeeded with every task after is_session skipped.
    with airflow.client() as client:
        runs = {
            r["data_interval_end"][:10]: r
            for r in client.dag_runs(DAILY, limit=50)
            if r["run_type"] == "backfill"
        }
        assert {runs[s]["state"] for s in [*SESSIONS, HOLIDAY]} == {"success"}
        tis = {
            t["task_id"]: t["state"]
            for t in client.task_instances(DAILY, runs[HOLIDAY]["dag_run_id"])
        }
    assert tis.pop("is_session") == "success"
    assert set(tis.values()) == {"skipped"}

    # The same lake as one `stockbatch run` over the range.
    clean = tmp_path / "clean"
    one = subprocess.run(
        [
            sys.executable,
            "-m",
            "stockbatch.cli",
            "run",
            "--source",
            "kaggle",
            "--path",
            str(airflow.landing),
            "--as-of",
            SESSIONS[-1],
            "-q",
        ],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("STOCKBATCH_")},
            "STOCKBATCH_HOME": str(clean),
        },
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert one.returncode == 0, one.stdout + one.stderr
    assert_lakes_equal(airflow.lake, clean / "lake", ignore=PROVENANCE_ONLY)

    # The same range again: every run exists, nothing to do.
    again = runner.invoke(
        app,
        ["orchestrate", "backfill", DAILY, "--from", FROM, "--to", TO, "--conf", conf],
        env=airflow.env,
        catch_exceptions=False,
    )
    assert again.exit_code == 0 and "nothing to backfill" in again.output, again.output


def test_bad_ranges_are_refused_in_one_line(airflow: BackfillAirflow) -> None:
    for args, code, words in (
        (["--from", "2023-04-07", "--to", "2023-04-05"], 2, "is after --to"),
        (["--from", "yesterday", "--to", "2023-04-05"], 2, "--from/--to"),
        (["--from", "2023-04-05", "--to", "2023-04-07", "--reprocess", "all"], 2, "--reprocess"),
    ):
        result = runner.invoke(
            app, ["orchestrate", "backfill", DAILY, *args], env=airflow.env, catch_exceptions=False
        )
        assert result.exit_code == code and words in result.output, result.output
        assert "Traceback" not in result.output
    unknown = runner.invoke(
        app,
        ["orchestrate", "backfill", "no_such_dag", "--from", FROM, "--to", TO],
        env=airflow.env,
        catch_exceptions=False,
    )
    assert unknown.exit_code == 1 and DAILY in unknown.output, unknown.output
