"""The Spark engine on a real Spark standalone cluster (``stockbatch services up spark``).

1. Parity: the demo data (data/demo) is ingested once and the home copied; one
   copy is processed by the Polars engine, the other by ``stockbatch process --full --engine spark``
   in a subprocess whose home only has the session cluster *recorded* in its
   services.json (no master setting: the record must be found). The silver and
   gold of both must match as in tests/e2e/test_spark_lake_parity.py (silver
   exactly, features within 1e-8), and the application must have run its tasks in
   one executor on each of the two workers (the master's and workers' JSON, and
   the executors' own logs in the workers' folders).
2. Lifecycle through the CLI on a second, one-worker cluster: up, status, refusal
   to resize a running cluster, idempotent up, down (no process left behind).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from e2e.test_spark_lake_parity import assert_lakes
from integration.conftest import SparkCluster
from stockbatch import runs
from stockbatch.cli import app
from stockbatch.cli.services import app as services_app
from stockbatch.services.endpoints import record_endpoint, recorded_endpoints
from stockbatch.services.system import pid_alive
from stockbatch.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.spark]

AS_OF = "2023-06-30"


def _json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url.rstrip('/')}/json/", timeout=10) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


def _stockbatch(home: Path, *args: str) -> None:
    """One stockbatch command in this process (Polars engine) on ``home``."""
    env = {"STOCKBATCH_HOME": str(home), "STOCKBATCH_PROCESS__ENGINE": "polars"}
    argv = [*args, "--as-of", AS_OF, "-q"]
    result = CliRunner().invoke(app, argv, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output


def _last_counts(home: Path) -> dict[str, Any]:
    manifests = [m for m in runs.iter_manifests(Settings(home=home)) if "counts" in m]
    return dict(manifests[-1]["counts"])


def test_spark_engine_on_the_cluster_matches_polars(
    spark_cluster: SparkCluster, demo_data: Path, tmp_path: Path
) -> None:
    polars_home, spark_home = tmp_path / "polars", tmp_path / "spark"
    _stockbatch(polars_home, "ingest", "--source", "kaggle", "--path", str(demo_data))
    # One ingest for both: the rows carry its run id, which silver's quarantine keeps.
    shutil.copytree(polars_home, spark_home)
    _stockbatch(polars_home, "process", "--full")

    # The Spark run's home knows the cluster only from its services.json, as after
    # `stockbatch services up spark` in that home.
    record = recorded_endpoints(spark_cluster.home)["spark"]
    assert record["master_url"] == spark_cluster.master_url
    record_endpoint(spark_home, "spark", record)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STOCKBATCH_PROCESS__", "SPARK_", "PYSPARK_"))
    }
    env["STOCKBATCH_HOME"] = str(spark_home)
    before = {a["id"] for a in _json(spark_cluster.web_ui)["completedapps"]}
    t0 = time.monotonic()
    command = ["process", "--full", "--engine", "spark", "--as-of", AS_OF, "-q"]
    done = subprocess.run(
        [sys.executable, "-m", "stockbatch.cli", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    elapsed = time.monotonic() - t0
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-5000:]}"
    print(f"process --full --engine spark on the cluster: {elapsed:.1f} s")

    # One new application, finished, that had both workers' cores.
    master = _json(spark_cluster.web_ui)
    apps = [a for a in master["completedapps"] if a["id"] not in before]
    assert len(apps) == 1, apps
    application = apps[0]
    assert application["name"] == "stockbatch"
    assert application["cores"] == 2, application
    # Each worker ran one executor of it, and that executor ran tasks.
    workers = [w for w in master["workers"] if w["state"] == "ALIVE"]
    assert len(workers) == 2
    for worker in workers:
        state = _json(worker["webuiaddress"])
        executors = [
            e
            for e in state["executors"] + state["finishedexecutors"]
            if e["appid"] == application["id"]
        ]
        assert len(executors) == 1, (worker["id"], executors)
    stderr_files = sorted(
        spark_cluster.service.work_dir.glob(f"worker-*/{application['id']}/*/stderr")
    )
    assert len(stderr_files) == 2, stderr_files
    for log in stderr_files:
        assert "Finished task" in log.read_text(errors="replace"), log

    assert _last_counts(spark_home) == _last_counts(polars_home)
    assert_lakes(polars_home / "lake", spark_home / "lake")


def test_services_up_status_down_spark(tmp_path: Path) -> None:
    runner = CliRunner()
    home = str(tmp_path / "home")
    up = ["up", "spark", "--home", home, "--workers", "1", "--worker-memory", "512m"]
    try:
        t0 = time.monotonic()
        result = runner.invoke(services_app, up)
        assert result.exit_code == 0, result.output
        print(f"services up spark (1 worker): {time.monotonic() - t0:.1f} s")
        assert "spark: running at spark://127.0.0.1:" in result.output

        record = recorded_endpoints(Path(home))["spark"]
        assert record["workers"] == 1 and record["worker_memory"] == "512m"
        assert record["app_conf"]["spark.executor.memory"] == "512m"
        assert record["app_conf"]["spark.cores.max"] == "1"
        master = _json(record["web_ui"])
        assert master["status"] == "ALIVE" and master["aliveworkers"] == 1
        assert master["url"] == record["master_url"]

        result = runner.invoke(services_app, ["status", "spark", "--home", home, "--json"])
        assert result.exit_code == 0, result.output
        status = json.loads(result.stdout)["spark"]
        assert status["state"] == "running"
        assert status["pid"] == record["pid"]

        # A running cluster is not resized behind the user's back ...
        result = runner.invoke(services_app, [*up[:-4], "--workers", "2"])
        assert result.exit_code == 1
        assert "services down spark" in result.output
        # ... and `up` with the same (or no) options keeps it.
        result = runner.invoke(services_app, ["up", "spark", "--home", home])
        assert result.exit_code == 0, result.output
        assert recorded_endpoints(Path(home))["spark"]["pid"] == record["pid"]

        components = json.loads((Path(home) / "services/spark/components.json").read_text())
        assert set(components) == {"master", "worker-1"}
    finally:
        result = runner.invoke(services_app, ["down", "spark", "--home", home])
    assert result.exit_code == 0, result.output
    assert "spark: stopped" in result.output
    assert not any(pid_alive(p) for p in [record["pid"], *components.values()])
    assert "spark" not in recorded_endpoints(Path(home))
    result = runner.invoke(services_app, ["status", "spark", "--home", home])
    assert result.exit_code == 0 and "spark: stopped" in result.output
