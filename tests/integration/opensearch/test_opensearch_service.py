"""The local OpenSearch node: lifecycle, recorded endpoint, health, and what clients
see when it is down."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from integration.opensearch.os_support import OpenSearchNode
from stockbatch.cli.services import app as services_app
from stockbatch.search import SearchUnavailable, connect, health, search_instruments
from stockbatch.services import recorded_endpoints
from stockbatch.services.endpoints import effective_search_url
from stockbatch.services.opensearch import OPENSEARCH_VERSION, OpenSearchService, probe_opensearch
from stockbatch.settings import SearchSettings, Settings

pytestmark = [pytest.mark.integration, pytest.mark.opensearch]


def test_up_records_a_healthy_loopback_node(opensearch_node: OpenSearchNode) -> None:
    status = opensearch_node.service.status()
    assert status.running, status
    assert status.endpoint["url"] == opensearch_node.url
    assert opensearch_node.url.startswith("http://127.0.0.1:")
    record = recorded_endpoints(opensearch_node.home)["opensearch"]
    assert record["url"] == opensearch_node.url
    assert record["version"] == OPENSEARCH_VERSION
    assert record["pid"] == status.pid
    info = opensearch_node.client().info()
    assert info["version"]["number"] == OPENSEARCH_VERSION
    assert health(opensearch_node.client())["status"] in ("green", "yellow")
    yml = (opensearch_node.service.config_dir / "opensearch.yml").read_text()
    assert "network.host: 127.0.0.1" in yml and "discovery.type: single-node" in yml


def test_up_again_keeps_the_running_node(opensearch_node: OpenSearchNode) -> None:
    pid = opensearch_node.service.status().pid
    again = OpenSearchService(opensearch_node.home).up()
    assert again.pid == pid
    assert again.endpoint["url"] == opensearch_node.url


def test_services_status_cli_lists_it(opensearch_node: OpenSearchNode) -> None:
    res = CliRunner().invoke(
        services_app, ["status", "opensearch", "--home", str(opensearch_node.home), "--json"]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)["opensearch"]
    assert doc["state"] == "running" and doc["endpoint"]["url"] == opensearch_node.url


def test_explicit_url_wins_over_the_recorded_one(opensearch_node: OpenSearchNode) -> None:
    recorded = Settings(home=opensearch_node.home)
    assert effective_search_url(recorded) == opensearch_node.url
    explicit = Settings(home=opensearch_node.home, search=SearchSettings(url="http://127.0.0.1:1"))
    assert effective_search_url(explicit) == "http://127.0.0.1:1"
    assert effective_search_url(Settings(home=opensearch_node.home / "elsewhere")) is None


def test_restart_keeps_port_and_data(opensearch_node: OpenSearchNode) -> None:
    client = opensearch_node.client()
    client.indices.create(index="restart-check", body={"settings": {"number_of_replicas": 0}})
    client.index(index="restart-check", id="1", body={"v": "kept"}, refresh=True)
    url, pid = opensearch_node.url, opensearch_node.service.status().pid
    try:
        status = opensearch_node.service.restart()
        assert status.running and status.pid != pid
        assert opensearch_node.url == url
        again = opensearch_node.client()
        assert again.get(index="restart-check", id="1")["_source"] == {"v": "kept"}
    finally:
        opensearch_node.ensure_running()
        opensearch_node.client().indices.delete(index="restart-check", ignore_unavailable=True)


def test_node_down_is_search_unavailable_within_bounded_time(
    opensearch_node: OpenSearchNode,
) -> None:
    client = opensearch_node.client()
    url = opensearch_node.url
    try:
        assert opensearch_node.service.down() is True
        assert opensearch_node.service.status().state == "stopped"
        assert "opensearch" not in recorded_endpoints(opensearch_node.home)
        assert not probe_opensearch(url, timeout=1.0)

        started = time.monotonic()
        with pytest.raises(SearchUnavailable) as caught:
            connect(url, timeout=2.0)
        assert time.monotonic() - started < 6.0
        message = str(caught.value)
        assert "\n" not in message and url in message and "services up opensearch" in message

        # A client made while the node was up fails the same way, just as fast.
        started = time.monotonic()
        with pytest.raises(SearchUnavailable):
            search_instruments(client, "AAPL")
        assert time.monotonic() - started < 6.0
    finally:
        opensearch_node.ensure_running()
    assert opensearch_node.url == url
    assert recorded_endpoints(opensearch_node.home)["opensearch"]["url"] == url
