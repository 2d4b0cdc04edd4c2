"""The local Elasticsearch node (`stockbatch services up elasticsearch`): one real node
per module, started through the CLI, as an unprivileged user when the tests run as
root; health, an index with a mapping searched over plain HTTP, status, down."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from stockbatch.cli.services import app as services_app
from stockbatch.services import recorded_endpoints
from stockbatch.services.elasticsearch import ELASTICSEARCH_VERSION, ElasticsearchService
from stockbatch.services.system import pid_alive, process_cmdline
from support.services import remove_server_home, server_home

pytestmark = [pytest.mark.integration]


def _node_pids(service: ElasticsearchService) -> list[int]:
    """Every process of this node: the CLI launcher and the server JVM it started."""
    config = str(service.config_dir)
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cmd = " ".join(process_cmdline(int(entry.name)))
            if "org.elasticsearch" in cmd and (config in cmd or f"{service.dir}/" in cmd):
                pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def es_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A home where `services up elasticsearch` ran (always `down` at the end)."""
    home = server_home(tmp_path_factory, "es-home")
    started = time.monotonic()
    res = CliRunner().invoke(services_app, ["up", "elasticsearch", "--home", str(home)])
    try:
        if res.exit_code != 0:
            pytest.fail(f"services up elasticsearch failed:\n{res.output}", pytrace=False)
        print(f"elasticsearch up in {time.monotonic() - started:.1f} s")
        yield home
    finally:
        ElasticsearchService(home).down()
        remove_server_home(home)


@pytest.fixture(scope="module")
def url(es_home: Path) -> str:
    return str(recorded_endpoints(es_home)["elasticsearch"]["url"])


def test_up_records_a_healthy_loopback_node(es_home: Path, url: str) -> None:
    assert url.startswith("http://127.0.0.1:")
    health = httpx.get(f"{url}/_cluster/health", timeout=10).json()
    assert health["status"] in ("green", "yellow"), health
    # `GET /` (the rest-root module) is not in the minimal distribution: ask the node.
    nodes = httpx.get(f"{url}/_nodes/_local", timeout=10).json()["nodes"]
    assert [n["version"] for n in nodes.values()] == [ELASTICSEARCH_VERSION]
    record = recorded_endpoints(es_home)["elasticsearch"]
    assert record["version"] == ELASTICSEARCH_VERSION
    assert pid_alive(record["pid"])
    service = ElasticsearchService(es_home)
    assert str(service.data_dir).startswith(str(es_home / "services" / "elasticsearch"))
    yml = (service.config_dir / "elasticsearch.yml").read_text()
    assert "discovery.type: single-node" in yml and "network.host: 127.0.0.1" in yml


def test_node_runs_unprivileged(es_home: Path) -> None:
    """Elasticsearch refuses root: as root the node runs as PostgreSQL's service user."""
    service = ElasticsearchService(es_home)
    pids = _node_pids(service)
    assert len(pids) == 2, pids  # the CLI launcher and the server JVM
    uids = {
        int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0]) for pid in pids
    }
    assert 0 not in uids
    if os.geteuid() != 0:
        assert uids == {os.geteuid()}


def test_index_with_a_mapping_and_search_it(url: str) -> None:
    index = "stockbatch-es-check"
    mapping = {
        "settings": {"number_of_shards": 1, "number_of_replicas": 0},
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "symbol": {"type": "keyword"},
                "name": {"type": "text"},
                "close": {"type": "double"},
            },
        },
    }
    with httpx.Client(base_url=url, timeout=30) as http:
        created = http.put(f"/{index}", json=mapping)
        assert created.status_code == 200, created.text
        docs = [
            {"symbol": "AAPL", "name": "Apple Inc.", "close": 190.5},
            {"symbol": "MSFT", "name": "Microsoft Corporation", "close": 410.0},
            {"symbol": "AMZN", "name": "Amazon.com Inc.", "close": 180.25},
        ]
        lines = "".join(json.dumps({"index": {}}) + "\n" + json.dumps(d) + "\n" for d in docs)
        bulk = http.post(
            f"/{index}/_bulk",
            params={"refresh": "true"},
            content=lines,
            headers={"content-type": "application/x-ndjson"},
        )
        assert bulk.status_code == 200 and not bulk.json()["errors"], bulk.text
        # A strict mapping refuses unknown fields.
        bad = http.post(f"/{index}/_doc", json={"symbol": "X", "oops": 1})
        assert bad.status_code == 400
        found = http.post(
            f"/{index}/_search",
            json={
                "query": {"match": {"name": "microsoft"}},
                "aggs": {"avg_close": {"avg": {"field": "close"}}},
            },
        ).json()
        hits = found["hits"]["hits"]
        assert [h["_source"]["symbol"] for h in hits] == ["MSFT"]
        terms = http.post(
            f"/{index}/_search",
            json={"size": 0, "aggs": {"by_symbol": {"terms": {"field": "symbol"}}}},
        ).json()
        keys = sorted(b["key"] for b in terms["aggregations"]["by_symbol"]["buckets"])
        assert keys == ["AAPL", "AMZN", "MSFT"]
        assert http.delete(f"/{index}").status_code == 200


def test_services_status_shows_it_running(es_home: Path, url: str) -> None:
    res = CliRunner().invoke(
        services_app, ["status", "elasticsearch", "--home", str(es_home), "--json"]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)["elasticsearch"]
    assert doc["state"] == "running", doc
    assert doc["endpoint"]["url"] == url


def test_services_down_leaves_no_process(es_home: Path, url: str) -> None:
    """Last in the module: `services down` stops the launcher and the server JVM."""
    service = ElasticsearchService(es_home)
    assert _node_pids(service)
    res = CliRunner().invoke(services_app, ["down", "elasticsearch", "--home", str(es_home)])
    assert res.exit_code == 0, res.output
    deadline = time.monotonic() + 10
    while _node_pids(service) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _node_pids(service) == []
    assert "elasticsearch" not in recorded_endpoints(es_home)
    assert not service.status().running
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/_cluster/health", timeout=2)
