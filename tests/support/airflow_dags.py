"""Running the project's DAGs with ``dag.test()`` (Airflow's in-process runner) in a
subprocess: Airflow reads its configuration (``AIRFLOW_HOME``) when imported, and a
task's settings come from the ``STOCKBATCH_*`` environment as under the scheduler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"

_RUN_DAG = """
import datetime as dt, json, sys
from airflow.dag_processing.dagbag import DagBag
dag_id, logical, conf = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
dag = DagBag(dag_folder=sys.argv[4]).dags[dag_id]
run = dag.test(logical_date=dt.datetime.fromisoformat(logical), run_conf=conf)
tis = {ti.task_id: [str(ti.state), ti.try_number] for ti in run.get_task_instances()}
print("RESULT " + json.dumps({"state": str(run.state), "tasks": tis}))
"""


def airflow_env(home: Path) -> dict[str, str]:
    """The environment of an Airflow home with a migrated (SQLite) metadata database and
    the project's DAGs; no ``STOCKBATCH_*`` of the caller's leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "STOCKBATCH_"))}
    env |= {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "STOCKBATCH_SHARED_DATA": os.environ.get("STOCKBATCH_SHARED_DATA", ""),
    }
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return env


def run_dag(
    env: dict[str, str],
    dag_id: str,
    logical: str,
    conf: dict[str, Any] | None = None,
    **settings: str,
) -> dict[str, Any]:
    """``dag.test()`` of one DAG run; returns its ``state``, each task's ``[state, tries]``
    under ``tasks``, and the output under ``log``."""
    done = subprocess.run(
        [sys.executable, "-c", _RUN_DAG, dag_id, logical, json.dumps(conf or {}), str(DAGS)],
        env={**env, **settings},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"dag.test did not finish:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    result["log"] = done.stdout + done.stderr
    return result


def dag_manifests(home: Path) -> list[dict[str, Any]]:
    """The run manifests of DAG runs in ``home``, oldest first."""
    docs = [json.loads(p.read_text()) for p in sorted((home / "lake" / "runs").glob("*.json"))]
    return [d for d in docs if str(d.get("command", "")).startswith("dag:")]
