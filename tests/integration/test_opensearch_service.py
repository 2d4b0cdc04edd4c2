"""The local OpenSearch node: lifecycle, recorded endpoint, health (restarts and a
node down, for both engines: tests/integration/search/test_search_nodes.py)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from integration.search.search_support import OpenSearchNode
from stockbatch.cli.services import app as services_app
from stockbatch.search import health
from stockbatch.services import recorded_endpoints
from stockbatch.services.endpoints import effective_search_url
from stockbatch.services.opensearch import OPENSEARCH_VERSION, OpenSearchService
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
    info = opensearch_node.backend().request("GET", "/")
    assert info["version"]["number"] == OPENSEARCH_VERSION
    assert health(opensearch_node.backend())["status"] in ("green", "yellow")
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
