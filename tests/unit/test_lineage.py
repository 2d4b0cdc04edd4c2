"""OpenLineage events of real runs on the demo data: the file transport, a real HTTP
endpoint (http.server in a thread), an endpoint that is down, a failing stage."""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from stockbatch import lineage, schema
from stockbatch.cli import app

runner = CliRunner()
AS_OF = "2023-06-30"
PASSWORD = "Pw-never-in-lineage-7f3a"
API_KEY = "key-never-in-lineage-91c2"


def sb(home: Path, *args: str, **env: str) -> tuple[int, str]:
    """The CLI in-process on ``home`` with ``env`` on top (exit code, output)."""
    res = runner.invoke(app, list(args), env={"STOCKBATCH_HOME": str(home), **env})
    return res.exit_code, res.output


def demo_run(home: Path, demo_data: Path, **env: str) -> tuple[int, str]:
    return sb(home, "run", "--source", "kaggle", "--path", str(demo_data), "--as-of", AS_OF, **env)


def manifest(home: Path) -> dict[str, Any]:
    (path,) = sorted((home / "lake" / "runs").glob("*.json"))[-1:]
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def events(home: Path, run_id: str) -> list[dict[str, Any]]:
    path = home / "lineage" / f"{run_id}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def of(evs: list[dict[str, Any]], job: str, state: str) -> dict[str, Any]:
    (ev,) = [e for e in evs if e["job"]["name"] == job and e["eventType"] == state]
    return ev


def fields(s: pa.Schema) -> list[tuple[str, str]]:
    return [(f.name, str(f.type)) for f in s]


def facet_fields(ds: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f["name"], f["type"]) for f in ds["facets"]["schema"]["fields"]]


def rows(ds: dict[str, Any], kind: str = "output") -> int | None:
    facets = ds.get(f"{kind}Facets", {})
    value = facets.get(f"{kind}Statistics", {}).get("rowCount")
    return None if value is None else int(value)


# ----------------------------------------------------------------------------- file transport


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> tuple[Path, dict[str, Any]]:
    home = tmp_path_factory.mktemp("lineage")
    code, output = demo_run(home, demo_data)
    assert code == 0, output
    return home, manifest(home)


def test_every_stage_starts_and_completes(demo: tuple[Path, dict[str, Any]]) -> None:
    home, doc = demo
    evs = events(home, doc["run_id"])
    seq = [(e["job"]["name"], e["eventType"]) for e in evs]
    assert seq[0] == ("stockbatch.run", "START") and seq[-1] == ("stockbatch.run", "COMPLETE")
    for stage in ("ingest", "process", "load"):
        job = f"stockbatch.{stage}"
        assert seq.index((job, "START")) < seq.index((job, "COMPLETE"))
        ev = of(evs, job, "COMPLETE")
        assert ev["run"]["runId"] == lineage.run_uuid(doc["run_id"], stage)
        assert ev["run"]["facets"]["parent"]["run"]["runId"] == lineage.run_uuid(doc["run_id"])
        assert ev["run"]["facets"]["parent"]["job"]["name"] == "stockbatch.run"
        assert ev["run"]["facets"]["stockbatch"]["runId"] == doc["run_id"]
        assert ev["job"]["namespace"] == "stockbatch"
    done = of(evs, "stockbatch.run", "COMPLETE")
    assert done["run"]["runId"] == lineage.run_uuid(doc["run_id"])
    assert done["run"]["facets"]["stockbatch"]["status"] == doc["status"] == "succeeded"
    assert not [e for e in evs if e["eventType"] == "FAIL"]


def test_datasets_carry_the_canonical_schemas(demo: tuple[Path, dict[str, Any]]) -> None:
    home, doc = demo
    evs = events(home, doc["run_id"])
    lake = f"file://{home / 'lake'}"
    process = of(evs, "stockbatch.process", "COMPLETE")
    assert [(d["namespace"], d["name"]) for d in process["inputs"]] == [(lake, "bronze/bars")]
    assert facet_fields(process["inputs"][0]) == fields(schema.BRONZE_BARS)
    expected = {
        "silver/bars": schema.SILVER_BARS,
        "silver/quarantine": schema.QUARANTINE,
        "gold/daily_features": schema.DAILY_FEATURES,
        "gold/quarterly_features": schema.QUARTERLY_FEATURES,
    }
    outs = {d["name"]: d for d in process["outputs"]}
    assert list(outs) == list(expected)
    for name, s in expected.items():
        assert outs[name]["namespace"] == lake
        assert facet_fields(outs[name]) == fields(s)
    ingest = of(evs, "stockbatch.ingest", "COMPLETE")
    assert {d["namespace"] for d in ingest["inputs"]} == {"source://kaggle"}
    assert ingest["outputs"][0]["name"] == "bronze/bars"
    load = of(evs, "stockbatch.load", "COMPLETE")
    assert {d["name"] for d in load["inputs"]} >= {"gold/daily_features", "gold/quarterly_features"}
    warehouse = f"sqlite:///{(home / 'warehouse.db').resolve()}"
    assert {d["namespace"] for d in load["outputs"]} == {warehouse}


def test_row_counts_are_the_manifests(demo: tuple[Path, dict[str, Any]]) -> None:
    home, doc = demo
    evs = events(home, doc["run_id"])
    ingest = {d["name"]: d for d in of(evs, "stockbatch.ingest", "COMPLETE")["outputs"]}
    assert rows(ingest["bronze/bars"]) == doc["ingest"]["rows"]
    inputs = of(evs, "stockbatch.ingest", "COMPLETE")["inputs"]
    assert sum(rows(d, "input") or 0 for d in inputs) == doc["ingest"]["rows"]
    process = of(evs, "stockbatch.process", "COMPLETE")
    outs = {d["name"]: rows(d) for d in process["outputs"]}
    counts, p = doc["counts"], doc["process"]
    assert rows(process["inputs"][0], "input") == counts["rows_in"]
    assert outs == {
        "silver/bars": counts["rows_clean"],
        "silver/quarantine": counts["rows_quarantined"],
        "gold/daily_features": p["daily_rows"],
        "gold/quarterly_features": p["quarterly_rows"],
    }
    load = {d["name"]: rows(d) for d in of(evs, "stockbatch.load", "COMPLETE")["outputs"]}
    tables = doc["load"]["tables"]
    assert load == {name: t["inserted"] + t["updated"] for name, t in tables.items()}


def test_a_rerun_that_skips_process_reports_no_rows(
    demo: tuple[Path, dict[str, Any]], demo_data: Path
) -> None:
    home, _ = demo
    code, output = demo_run(home, demo_data)
    assert code == 0, output
    doc = manifest(home)
    assert doc["process"]["skipped"]
    process = of(events(home, doc["run_id"]), "stockbatch.process", "COMPLETE")
    assert all(rows(d) is None for d in process["outputs"])


# ----------------------------------------------------------------------------- DAG tasks


def test_dag_tasks_emit_the_stages_under_the_dag_run(tmp_path: Path, demo_data: Path) -> None:
    # The DAG's task functions (no Airflow needed): one stockbatch run, a task each.
    from stockbatch.orchestrate import tasks
    from stockbatch.settings import Settings

    settings = Settings(home=tmp_path)
    session = dt.date(2023, 6, 30)
    run_id = tasks.begin(settings, "daily", "manual__1", {})
    conf = tasks.DailyConf.of(settings, {"source": "kaggle", "path": str(demo_data)})
    tasks.ingest(settings, run_id, "daily", conf, session)
    tasks.process(settings, run_id, "daily", session)
    tasks.load_warehouse(settings, run_id, "daily")
    tasks.quality_gate(settings, run_id, "daily", session)
    evs = events(tmp_path, run_id)
    seq = [(e["job"]["name"], e["eventType"]) for e in evs]
    dag = "stockbatch.dag.daily"
    assert seq == [
        (dag, "START"),
        *[
            (f"stockbatch.{s}", t)
            for s in ("ingest", "process", "load")
            for t in ("START", "COMPLETE")
        ],
        (dag, "COMPLETE"),
    ]
    parents = {e["run"]["facets"]["parent"]["run"]["runId"] for e in evs if e["job"]["name"] != dag}
    assert parents == {lineage.run_uuid(run_id)}
    doc = json.loads((tmp_path / "lake" / "runs" / f"{run_id}.json").read_text())
    process = {d["name"]: rows(d) for d in of(evs, "stockbatch.process", "COMPLETE")["outputs"]}
    assert process["gold/daily_features"] == doc["process"]["daily_rows"]


# ----------------------------------------------------------------------------- failures, secrets


def test_a_failing_stage_emits_fail_and_no_secret(tmp_path: Path, demo_data: Path) -> None:
    # A PostgreSQL warehouse nobody listens on: ingest and process succeed, load fails.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql+psycopg://loader:{PASSWORD}@127.0.0.1:{port}/wh?password={PASSWORD}"
    code, output = demo_run(
        tmp_path,
        demo_data,
        STOCKBATCH_WAREHOUSE__KIND="postgresql",
        STOCKBATCH_WAREHOUSE__URL=url,
        STOCKBATCH_LINEAGE__API_KEY=API_KEY,
    )
    assert code == 1, output
    doc = manifest(tmp_path)
    evs = events(tmp_path, doc["run_id"])
    seq = [(e["job"]["name"], e["eventType"]) for e in evs]
    assert ("stockbatch.process", "COMPLETE") in seq
    assert seq[-3:] == [
        ("stockbatch.load", "START"),
        ("stockbatch.load", "FAIL"),
        ("stockbatch.run", "FAIL"),
    ]
    for job in ("stockbatch.load", "stockbatch.run"):
        message = of(evs, job, "FAIL")["run"]["facets"]["errorMessage"]["message"]
        assert message and "127.0.0.1" in message
    text = (tmp_path / "lineage" / f"{doc['run_id']}.jsonl").read_text()
    assert PASSWORD not in text and API_KEY not in text
    assert PASSWORD not in text.replace("\\", "")


def test_without_credentials() -> None:
    url = f"postgresql+psycopg://u:{PASSWORD}@db:5432/wh?sslmode=require&password={PASSWORD}"
    clean = lineage.without_credentials(url)
    assert PASSWORD not in clean and "u:" not in clean
    assert clean.startswith("postgresql+psycopg://db:5432/wh?sslmode=require")


# ----------------------------------------------------------------------------- HTTP transport


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict[str, str], dict[str, Any]]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, dict(self.headers), json.loads(body)))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[tuple[str, list[tuple[str, dict[str, str], dict[str, Any]]]]]:
    """A real OpenLineage-style endpoint on loopback that keeps what it receives."""
    received: ClassVar[list[tuple[str, dict[str, str], dict[str, Any]]]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def test_http_endpoint_receives_the_same_events(
    tmp_path: Path,
    demo_data: Path,
    demo: tuple[Path, dict[str, Any]],
    endpoint: tuple[str, list[tuple[str, dict[str, str], dict[str, Any]]]],
) -> None:
    url, received = endpoint
    env = {
        "STOCKBATCH_LINEAGE__TRANSPORT": "http",
        "STOCKBATCH_LINEAGE__URL": url,
        "STOCKBATCH_LINEAGE__API_KEY": API_KEY,
    }
    code, output = demo_run(tmp_path, demo_data, **env)
    assert code == 0, output
    doc = manifest(tmp_path)
    got = [e for path, _, e in received]
    assert {path for path, _, _ in received} == {"/api/v1/lineage"}
    assert {h.get("Authorization") for _, h, _ in received} == {f"Bearer {API_KEY}"}
    home, first = demo
    seq = [(e["job"]["name"], e["eventType"]) for e in events(home, first["run_id"])]
    assert [(e["job"]["name"], e["eventType"]) for e in got] == seq
    assert {e["run"]["facets"]["stockbatch"]["runId"] for e in got} == {doc["run_id"]}
    assert not (tmp_path / "lineage").exists()  # nothing fell back to the file


def test_an_endpoint_with_a_path_is_used_as_is(
    tmp_path: Path,
    demo_data: Path,
    endpoint: tuple[str, list[tuple[str, dict[str, str], dict[str, Any]]]],
) -> None:
    url, received = endpoint
    env = {"STOCKBATCH_LINEAGE__TRANSPORT": "http", "STOCKBATCH_LINEAGE__URL": f"{url}/ol/events"}
    code, output = sb(tmp_path, "ingest", "--source", "kaggle", "--path", str(demo_data), **env)
    assert code == 0, output
    assert [(p, e["job"]["name"], e["eventType"]) for p, _, e in received] == [
        ("/ol/events", "stockbatch.ingest", "START"),
        ("/ol/events", "stockbatch.ingest", "COMPLETE"),
    ]


@pytest.mark.parametrize("down", ["refused", "silent"])
def test_an_unreachable_endpoint_does_not_fail_the_run(
    tmp_path: Path, demo_data: Path, down: str, caplog: pytest.LogCaptureFixture
) -> None:
    # refused: nothing listens; silent: a socket that accepts and never answers (a timeout).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        if down == "silent":
            sock.listen(8)
        port = sock.getsockname()[1]
        if down == "refused":
            sock.close()
        env = {
            "STOCKBATCH_LINEAGE__TRANSPORT": "http",
            "STOCKBATCH_LINEAGE__URL": f"http://127.0.0.1:{port}",
        }
        t0 = time.perf_counter()
        code, output = sb(tmp_path, "ingest", "--source", "kaggle", "--path", str(demo_data), **env)
        took = time.perf_counter() - t0
    assert code == 0, output
    doc = manifest(tmp_path)
    assert doc["status"] == "succeeded"
    # One warning, then the events of this process went to the file.
    warned = [r for r in caplog.records if r.name == "stockbatch.lineage"]
    assert len(warned) == 1 and f"127.0.0.1:{port}" in warned[0].getMessage()
    states = [(e["job"]["name"], e["eventType"]) for e in events(tmp_path, doc["run_id"])]
    assert states == [("stockbatch.ingest", "START"), ("stockbatch.ingest", "COMPLETE")]
    assert took < 60  # bounded: one request timeout at most, no retries


# ----------------------------------------------------------------------------- transport none


def test_transport_none_emits_nothing_and_never_imports_the_client(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from stockbatch import runs\n"
        "from stockbatch.settings import Settings\n"
        f"s = Settings(home={str(tmp_path)!r}, lineage={{'transport': 'none'}})\n"
        "with runs.recording(s, 'ingest'):\n"
        "    pass\n"
        "assert not [m for m in sys.modules if m.startswith('openlineage')], 'imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "lineage").exists()


# ----------------------------------------------------------------------------- Airflow's provider


def test_airflow_provider_config_follows_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stockbatch.services.airflow import AirflowService

    def section(**env: str) -> dict[str, Any]:
        for key in ("TRANSPORT", "URL", "API_KEY"):
            monkeypatch.delenv(f"STOCKBATCH_LINEAGE__{key}", raising=False)
        for key, value in env.items():
            monkeypatch.setenv(f"STOCKBATCH_LINEAGE__{key}", value)
        svc = AirflowService(tmp_path, 8080, metadata_db="sqlite", dags_folder=tmp_path)
        return svc._openlineage()

    file = section()
    assert json.loads(file["transport"]) == {
        "type": "file",
        "log_file_path": str(tmp_path / "lineage" / "airflow.jsonl"),
        "append": True,
    }
    assert file["namespace"] == "stockbatch"
    http = json.loads(
        section(TRANSPORT="http", URL="https://ol.example:8443/api/v1/lineage", API_KEY=API_KEY)[
            "transport"
        ]
    )
    assert (http["type"], http["url"], http["endpoint"]) == (
        "http",
        "https://ol.example:8443/",
        "api/v1/lineage",
    )
    assert http["auth"] == {"type": "api_key", "apiKey": API_KEY}  # airflow.cfg is 0600
    assert section(TRANSPORT="none") == {"disabled": "True"}
