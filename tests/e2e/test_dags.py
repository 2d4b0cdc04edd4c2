"""The DAGs in ``dags/``: they parse fast with nothing heavy at import, and ``dag.test()``
runs them for real (Airflow's own in-process runner on a fresh metadata database,
the real pipeline stages on the demo sample):

- the daily DAG over two consecutive sessions, rows appended between them, gives the
  same lake as one ``stockbatch run`` over the same data; a second run of the same
  interval changes nothing; a holiday is skipped; the quality gate fails a bad run
  at once (no retry) with its counts in the manifest;
- the quarterly DAG snapshots the newest covered quarter, equal to
  ``stockbatch export quarterly`` for that quarter.

Each DAG run is a subprocess: Airflow reads its configuration (``AIRFLOW_HOME``) when
imported, and a task's settings come from the ``STOCKBATCH_*`` environment as they
do under the scheduler.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from support.airflow_dags import DAGS, airflow_env, dag_manifests, run_dag
from support.lake_compare import PROVENANCE_ONLY, assert_lakes_equal

_PARSE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
heavy = ("polars", "pyarrow", "pyspark", "confluent_kafka", "stockbatch.pipeline",
         "stockbatch.process", "stockbatch.warehouse")
print("RESULT " + json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dags": sorted(bag.dags),
    "stats": {s.file: s.duration.total_seconds() for s in bag.dagbag_stats},
    "heavy": sorted(m for m in heavy if m in sys.modules),
    "tasks": {d: [t.task_id for t in bag.dags[d].tasks] for d in bag.dags},
}))
"""


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An Airflow home with a migrated (SQLite) metadata database, the project's DAGs."""
    return airflow_env(tmp_path_factory.mktemp("airflow-home"))


def stockbatch(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stockbatch.cli", *args],
        env={**os.environ, "STOCKBATCH_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def gold_bytes(home: Path) -> dict[str, bytes]:
    gold = home / "lake" / "gold"
    return {str(p.relative_to(gold)): p.read_bytes() for p in sorted(gold.rglob("*.parquet"))}


# The demo's nasdaq files end on 2023-04-13 (three symbols) and 2023-04-14 (A only).
SESSION_1, SESSION_2 = "2023-04-13", "2023-04-14"
LAST_LINE_OF_A = "2023-04-14,"


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Path:
    """A copy of the demo sample, cut before SESSION_2 (its rows are appended later)."""
    folder = tmp_path_factory.mktemp("landing") / "kaggle"
    shutil.copytree(demo_data, folder)
    a_csv = folder / "nasdaq" / "stocks" / "A.csv"
    lines = a_csv.read_text().splitlines(keepends=True)
    assert lines[-1].startswith(LAST_LINE_OF_A)
    a_csv.write_text("".join(lines[:-1]))
    (folder.parent / "A-2023-04-14.line").write_text(lines[-1])
    return folder


def _settings(home: Path, **extra: str) -> dict[str, str]:
    return {"STOCKBATCH_HOME": str(home), "STOCKBATCH_SCHEDULE__RETRY_DELAY_S": "1", **extra}


# ----------------------------------------------------------------------------- parsing


def test_the_dags_folder_parses_fast_with_nothing_heavy_at_import(
    airflow: dict[str, str],
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PARSE, str(DAGS)],
        env=airflow,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    [line] = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    found = json.loads(line.removeprefix("RESULT "))
    assert found["errors"] == {}
    assert found["dags"] == ["stockbatch_daily", "stockbatch_quarterly"]
    assert found["heavy"] == [], "DAG files must not import heavy modules at parse time"
    assert set(found["stats"]) == {"stockbatch_daily.py", "stockbatch_quarterly.py"}
    assert all(seconds < 1.0 for seconds in found["stats"].values()), found["stats"]
    assert found["tasks"]["stockbatch_daily"] == [
        "is_session",
        "begin",
        "ingest",
        "collect",
        "process",
        "load_warehouse",
        "sync_search",
        "quality_gate",
        "publish",
    ]


# ----------------------------------------------------------------------------- daily


def test_two_sessions_equal_one_run_and_a_rerun_changes_nothing(
    airflow: dict[str, str], landing: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    conf = {"source": "kaggle", "path": str(landing)}
    first = run_dag(
        airflow, "stockbatch_daily", f"{SESSION_1}T22:00:00+00:00", conf, **_settings(home)
    )
    assert first["state"] == "success", first["log"][-4000:]
    assert all(state == "success" for state, _ in first["tasks"].values()), first["tasks"]

    # The next session's rows arrive; the next interval takes them.
    a_csv = landing / "nasdaq" / "stocks" / "A.csv"
    a_csv.write_text(a_csv.read_text() + (landing.parent / "A-2023-04-14.line").read_text())
    second = run_dag(
        airflow, "stockbatch_daily", f"{SESSION_2}T22:00:00+00:00", conf, **_settings(home)
    )
    assert second["state"] == "success", second["log"][-4000:]

    docs = dag_manifests(home)
    assert [d["status"] for d in docs] == ["succeeded", "succeeded"]
    assert [d["params"]["session"] for d in docs] == [SESSION_1, SESSION_2]
    for doc in docs:  # one manifest per DAG run, every stage in it, linked to Airflow
        assert {"ingest", "process", "load"} <= set(doc), sorted(doc)
        assert doc["params"]["dag_id"] == "stockbatch_daily"
        assert doc["params"]["airflow_run_id"].startswith("manual__")
        assert doc["params"]["gate"]["rows_in"] == doc["counts"]["rows_in"]
    assert docs[1]["ingest"]["units_ingested"] == 1  # only A.csv changed
    assert docs[1]["load"]["rows_changed"] > 0

    # The same lake as one `stockbatch run` over all of it.
    clean = tmp_path / "clean"
    one = stockbatch(
        clean, "run", "--source", "kaggle", "--path", str(landing), "--as-of", SESSION_2, "-q"
    )
    assert one.returncode == 0, one.stdout + one.stderr
    assert_lakes_equal(home / "lake", clean / "lake", ignore=PROVENANCE_ONLY)

    # The same interval again: nothing changes.
    before = gold_bytes(home)
    again = run_dag(
        airflow, "stockbatch_daily", f"{SESSION_2}T22:00:00+00:00", conf, **_settings(home)
    )
    assert again["state"] == "success", again["log"][-4000:]
    assert gold_bytes(home) == before
    last = dag_manifests(home)[-1]
    assert last["status"] == "succeeded"
    assert last["ingest"]["units_ingested"] == 0 and last["process"]["skipped"]
    assert last["load"]["rows_changed"] == 0


def test_a_holiday_is_skipped(airflow: dict[str, str], landing: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    conf = {"source": "kaggle", "path": str(landing)}
    # 2023-04-07 was Good Friday: a weekday, not an XNYS session.
    run = run_dag(airflow, "stockbatch_daily", "2023-04-07T22:00:00+00:00", conf, **_settings(home))
    assert run["state"] == "success", run["log"][-4000:]
    assert run["tasks"]["is_session"][0] == "success"
    assert {s for t, (s, _) in run["tasks"].items() if t != "is_session"} == {"skipped"}
    assert dag_manifests(home) == []


def test_the_quality_gate_fails_a_bad_run_without_retrying(
    airflow: dict[str, str], landing: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    conf = {"source": "kaggle", "path": str(landing)}
    strict = _settings(
        home, STOCKBATCH_SCHEDULE__MAX_QUARANTINE_RATE="0", STOCKBATCH_SCHEDULE__RETRIES="2"
    )
    run = run_dag(airflow, "stockbatch_daily", f"{SESSION_1}T22:00:00+00:00", conf, **strict)
    assert run["state"] == "failed"
    assert run["tasks"]["quality_gate"] == ["failed", 1]  # failed at once: no retry
    assert run["tasks"]["publish"][0] == "upstream_failed"
    assert "quality gate: quarantine rate" in run["log"]
    [doc] = dag_manifests(home)
    assert doc["status"] == "failed"
    assert doc["error"].startswith("quality gate: quarantine rate")
    assert doc["params"]["gate"]["rows_quarantined"] == doc["counts"]["rows_quarantined"] > 0


# ----------------------------------------------------------------------------- quarterly


def test_the_quarterly_dag_snapshots_the_covered_quarter(
    airflow: dict[str, str], demo_data: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    conf = {"source": "kaggle", "path": str(demo_data)}
    daily = run_dag(
        airflow, "stockbatch_daily", f"{SESSION_2}T22:00:00+00:00", conf, **_settings(home)
    )
    assert daily["state"] == "success", daily["log"][-4000:]
    run = run_dag(
        airflow, "stockbatch_quarterly", f"{SESSION_2}T23:00:00+00:00", {}, **_settings(home)
    )
    assert run["state"] == "success", run["log"][-4000:]
    assert run["tasks"]["snapshot"][0] == "success"
    # The data reach 2023-04-14: 2023Q1 is the newest quarter whose last session is covered.
    folder = home / "exports" / "quarterly" / "2023Q1"
    latest = json.loads((folder / "latest.json").read_text())
    snap = pl.read_parquet(folder / f"{latest['version']}.parquet")
    out = tmp_path / "export.parquet"
    done = stockbatch(home, "export", "quarterly", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    expected = pl.read_parquet(out).filter(pl.col("quarter") == "2023Q1").sort("symbol")
    assert snap.sort("symbol").equals(expected)
    doc = dag_manifests(home)[-1]
    assert doc["command"] == "dag:stockbatch_quarterly" and doc["status"] == "succeeded"
    assert doc["params"]["snapshot"]["version"] == latest["version"]
    # Recorded in the warehouse's pipeline_runs too, like every DAG run.
    from stockbatch.settings import Settings
    from stockbatch.warehouse import db, queries

    engine = db.engine_for(db.resolve_urls(Settings(home=home)).reader)
    try:
        row = queries.run(engine, doc["run_id"])
    finally:
        engine.dispose()
    assert row is not None and row["status"] == "succeeded"

    # Again with the same data: the same version, no new file.
    files = sorted(p.name for p in folder.iterdir())
    again = run_dag(
        airflow, "stockbatch_quarterly", f"{SESSION_2}T23:30:00+00:00", {}, **_settings(home)
    )
    assert again["state"] == "success", again["log"][-4000:]
    assert sorted(p.name for p in folder.iterdir()) == files
    assert dag_manifests(home)[-1]["params"]["snapshot"]["new"] is False
