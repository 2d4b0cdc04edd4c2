"""The Spark engine on a real Spark standalone cluster (``stockbatch services up spark``).

1. Parity: the demo data (data/demo) is ingested once and the home copied; one
   copy is processed by the Polars engine, the other by ``stockbatch process --full --engine spark``
   in a subprocess whose home only has the session cluster *recorded* in its
   services.json (no master setting: the record must be found). The silver and
   gold of both must match as in tests/e2e/test_spark_lake_parity.py (silver
   exactly, features within 1e-8), and the application must have run its tasks in
   one executor on each of the two workers (the master's and workers' JSON, and
   the executors' own logs in the workers' folders).
   The session cluster is secured (the default): shared-secret authentication and
   TLS on RPC, HTTPS web UIs; the application finds the secret file and the TLS
   settings in the record alone.
2. Security of that cluster: the record says TLS and names the CA; the master's UI
   answers HTTPS verified with the CA only (plain HTTP gets a redirect or nothing);
   an application without the secret is refused by the master; the secret is in no
   command line of the daemons or executors and in none of their logs.
3. Lifecycle through the CLI on a second, one-worker, ``--insecure`` cluster: up (with
   its warning), status, refusal to resize or to secure a running cluster, idempotent
   up, down (no process left behind).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
import textwrap
import time
import urllib.error
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
from stockbatch.services import tls
from stockbatch.services.endpoints import record_endpoint, recorded_endpoints
from stockbatch.services.system import pid_alive, process_cmdline
from stockbatch.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.spark]

AS_OF = "2023-06-30"


def _json(url: str, ca_file: Path | str | None = None) -> dict[str, Any]:
    """A web UI's ``/json/``; an https UI is verified against ``ca_file``."""
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    with urllib.request.urlopen(
        f"{url.rstrip('/')}/json/", timeout=10, context=context
    ) as response:
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
    assert record["tls"] is True and record["web_ui"].startswith("https://")
    ca = record["ca_file"]
    record_endpoint(spark_home, "spark", record)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STOCKBATCH_PROCESS__", "SPARK_", "PYSPARK_"))
    }
    env["STOCKBATCH_HOME"] = str(spark_home)
    before = {a["id"] for a in _json(spark_cluster.web_ui, ca)["completedapps"]}
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
    master = _json(spark_cluster.web_ui, ca)
    apps = [a for a in master["completedapps"] if a["id"] not in before]
    assert len(apps) == 1, apps
    application = apps[0]
    assert application["name"] == "stockbatch"
    assert application["cores"] == 2, application
    # Each worker ran one executor of it, and that executor ran tasks.
    workers = [w for w in master["workers"] if w["state"] == "ALIVE"]
    assert len(workers) == 2
    for worker in workers:
        assert worker["webuiaddress"].startswith("https://"), worker
        state = _json(worker["webuiaddress"], ca)
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


# An application in its own process (a failed driver leaves a JVM behind otherwise):
# the cluster's TLS settings, but no secret and no authentication.
_NO_SECRET_APP = textwrap.dedent(
    """
    import json, sys
    from stockbatch.process.spark_session import spark_session
    record = json.loads(sys.argv[1])
    conf = {k: v for k, v in record["app_conf"].items() if not k.startswith("spark.authenticate")}
    conf["spark.app.name"] = "no-secret"
    try:
        spark_session(master=record["master_url"], app_name="no-secret", conf=conf)
    except Exception as exc:
        print("REFUSED", type(exc).__name__)
        sys.exit(3)
    print("ACCEPTED")
    """
)


def _secret_free(path: Path, secret: str) -> bool:
    return secret not in path.read_text(errors="replace")


def test_the_secured_cluster_refuses_strangers_and_hides_its_secret(
    spark_cluster: SparkCluster,
) -> None:
    service = spark_cluster.service
    record = recorded_endpoints(spark_cluster.home)["spark"]
    ca = tls.ca_file(spark_cluster.home)
    assert record["tls"] is True and record["authenticate"] is True
    assert record["ca_file"] == str(ca)
    assert record["web_ui"] == service.web_ui and record["web_ui"].startswith("https://127.0.0.1:")
    # The record points at the secret FILE (0600); the secret itself is nowhere in it.
    secret_file = Path(record["secret_file"])
    assert secret_file.stat().st_mode & 0o077 == 0
    secret = secret_file.read_text().strip()
    assert len(secret) >= 32 and secret not in json.dumps(record)
    assert record["app_conf"]["spark.ssl.rpc.enabled"] == "true"

    # The master's UI: HTTPS verified with the CA; unverifiable without it; no plain HTTP.
    assert _json(record["web_ui"], ca)["status"] == "ALIVE"
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"{record['web_ui']}/json/", timeout=10)
    https_port = int(record["web_ui"].rsplit(":", 1)[1])
    with pytest.raises((OSError, http.client.HTTPException)):
        plain = http.client.HTTPConnection("127.0.0.1", https_port, timeout=10)
        plain.request("GET", "/json/")
        assert plain.getresponse().status != 200
    # Spark keeps an HTTP port, which only redirects to the HTTPS one (no state served).
    state = json.loads((service.dir / "state.json").read_text())
    redirect = http.client.HTTPConnection("127.0.0.1", state["webui_port"], timeout=10)
    redirect.request("GET", "/json/")
    response = redirect.getresponse()
    assert response.status in (301, 302, 307, 308)
    assert response.getheader("Location", "").startswith(f"https://127.0.0.1:{https_port}")
    assert b"workers" not in response.read()

    # An application without the secret is refused by the master.
    before = {a["id"] for a in _json(record["web_ui"], ca)["completedapps"]}
    master_log = service.component_log("master")
    refused_before = master_log.read_text(errors="replace").count("Expected SaslMessage")
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _NO_SECRET_APP, json.dumps(record)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    print(f"application without the secret refused in {time.monotonic() - t0:.1f} s")
    assert done.returncode == 3 and "REFUSED" in done.stdout, done.stdout + done.stderr[-3000:]
    assert "All masters are unresponsive" in done.stderr, done.stderr[-3000:]
    master = _json(record["web_ui"], ca)
    new = [a for a in master["activeapps"] + master["completedapps"] if a["id"] not in before]
    assert new == [], new
    # ... by its SASL handshake (the client offered none).
    refusals = service.component_log("master").read_text(errors="replace")
    assert refusals.count("Expected SaslMessage") > refused_before

    # The secret is on no command line (supervisor, master, workers, executors still up)
    # and in no log of the cluster (supervisor, daemons, executors' stdout/stderr).
    components = json.loads((service.dir / "components.json").read_text())
    pids = [record["pid"], *components.values()]
    for pid in pids:
        cmdline = process_cmdline(pid)
        assert cmdline and secret not in " ".join(cmdline), pid
    logs = [service.log_file, *(service.dir / "logs").glob("*.log")]
    logs += [p for p in service.work_dir.rglob("*") if p.is_file()]
    assert len(logs) >= 4
    leaked = [str(p) for p in logs if not _secret_free(p, secret)]
    assert leaked == []


def test_services_up_status_down_spark_insecure(tmp_path: Path) -> None:
    runner = CliRunner()
    home = str(tmp_path / "home")
    up = ["up", "spark", "--home", home, "--insecure", "--workers", "1", "--worker-memory", "512m"]
    try:
        t0 = time.monotonic()
        result = runner.invoke(services_app, up)
        assert result.exit_code == 0, result.output
        print(f"services up spark --insecure (1 worker): {time.monotonic() - t0:.1f} s")
        assert "spark: running at spark://127.0.0.1:" in result.output
        assert "WITHOUT authentication or TLS" in " ".join(result.output.split())

        record = recorded_endpoints(Path(home))["spark"]
        assert record["tls"] is False and record["ca_file"] is None
        assert record["web_ui"].startswith("http://")
        assert not any(k.startswith(("spark.ssl", "spark.auth")) for k in record["app_conf"])
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

        # A running cluster is not resized behind the user's back, nor secured ...
        result = runner.invoke(services_app, [*up[:-4], "--workers", "2"])
        assert result.exit_code == 1
        assert "services down spark" in result.output
        result = runner.invoke(services_app, ["up", "spark", "--home", home])
        assert result.exit_code == 1
        assert "without TLS (--insecure)" in " ".join(result.output.split())
        # ... and `up` with the same options keeps it.
        result = runner.invoke(services_app, ["up", "spark", "--home", home, "--insecure"])
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
