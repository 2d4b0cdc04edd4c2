"""The secured OpenSearch node's users on real data: ``stockbatch load`` reaches it with
nothing configured (the loader's credentials and the CA come from services.json),
the ``reader`` searches but cannot write, the ``loader`` manages the ``stockbatch*``
indices only (the node itself: tests/integration/test_opensearch_service.py)."""

from __future__ import annotations

import json
import shutil
import ssl
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from integration.search.search_support import Gold, OpenSearchNode
from stockbatch.search import connect_settings, search_instruments
from stockbatch.services import recorded_endpoints
from stockbatch.settings import SearchSettings, Settings

pytestmark = [pytest.mark.integration, pytest.mark.search, pytest.mark.opensearch]

INDEX = "stockbatch-security-check"


def _call(node: OpenSearchNode, user: str, method: str, path: str, body: Any = None) -> int:
    """HTTP status of one request to ``node`` as ``user`` (errors returned, not raised)."""
    creds = node.service.credentials(user)
    assert creds is not None and node.service.ca_file is not None
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{node.url}{path}", data=data, method=method)
    request.add_header("Authorization", "Basic " + b64encode(":".join(creds).encode()).decode())
    request.add_header("Content-Type", "application/json")
    context = ssl.create_default_context(cafile=str(node.service.ca_file))
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.fixture(scope="module")
def loaded(
    opensearch_node: OpenSearchNode, demo_gold: Gold, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A copy of the demo home whose services.json is the node's record; its gold loaded
    by ``stockbatch load --search-only`` under the default ``stockbatch`` prefix."""
    from stockbatch.cli import app

    opensearch_node.ensure_running()
    home = tmp_path_factory.mktemp("os-security") / "home"
    shutil.copytree(demo_gold.settings.home, home)
    shutil.copy2(opensearch_node.home / "services.json", home / "services.json")
    args = ["load", "--search-only", "--search", "opensearch", "--home", str(home), "-q"]
    res = CliRunner().invoke(app, args, env={"STOCKBATCH_HOME": str(home)})
    assert res.exit_code == 0, res.output
    return home


def test_load_uses_the_recorded_loader_with_tls(
    loaded: Path, opensearch_node: OpenSearchNode
) -> None:
    settings = Settings(home=loaded, search=SearchSettings(kind="opensearch"))
    backend = connect_settings(settings)
    record = recorded_endpoints(loaded)["opensearch"]
    assert record["username"] == "loader" and record["url"].startswith("https://")
    hits = search_instruments(backend, "aapl")
    assert hits and hits[0]["symbol"] == "AAPL"


def test_reader_searches_but_cannot_write_or_delete(
    loaded: Path, opensearch_node: OpenSearchNode
) -> None:
    reader = opensearch_node.backend(user="reader")
    assert search_instruments(reader, "aapl")[0]["symbol"] == "AAPL"
    assert _call(opensearch_node, "reader", "GET", "/stockbatch*/_search?size=1") == 200
    assert _call(opensearch_node, "reader", "GET", "/_cluster/health") == 200
    assert _call(opensearch_node, "admin", "PUT", f"/{INDEX}", {}) in (200, 400)
    assert _call(opensearch_node, "reader", "PUT", f"/{INDEX}/_doc/1", {"v": 1}) == 403
    assert _call(opensearch_node, "reader", "DELETE", f"/{INDEX}") == 403
    assert _call(opensearch_node, "reader", "PUT", "/stockbatch-reader-made", {}) == 403
    assert _call(opensearch_node, "admin", "DELETE", f"/{INDEX}") == 200


def test_loader_manages_stockbatch_indices_only(
    loaded: Path, opensearch_node: OpenSearchNode
) -> None:
    node = opensearch_node
    assert _call(node, "loader", "PUT", f"/{INDEX}", {}) == 200
    assert _call(node, "loader", "PUT", f"/{INDEX}/_doc/1?refresh=true", {"v": 1}) == 201
    assert _call(node, "loader", "GET", f"/{INDEX}/_doc/1") == 200
    assert _call(node, "loader", "DELETE", f"/{INDEX}") == 200
    # Other indices and the security configuration are out of its reach.
    assert _call(node, "admin", "PUT", "/other-project", {}) in (200, 400)
    try:
        assert _call(node, "loader", "DELETE", "/other-project") == 403
        assert _call(node, "loader", "PUT", "/other-project/_doc/1", {"v": 1}) == 403
        assert _call(node, "loader", "PUT", "/other-made-by-loader", {}) == 403
        assert _call(node, "loader", "GET", "/.opendistro_security/_search") == 403
        assert _call(node, "loader", "GET", "/_plugins/_security/api/internalusers") == 403
        assert _call(node, "admin", "GET", "/_plugins/_security/api/internalusers") == 200
    finally:
        _call(node, "admin", "DELETE", "/other-project")
