"""A real OpenSearch node for the search tests, started once per session.

``opensearch_node`` is an OpenSearch 2.19 single node on 127.0.0.1, provisioned
from Maven Central on first use (see deploy/services/README.md) under a fresh
temporary ``STOCKBATCH_HOME``; it is stopped at the end of the session, whatever
happened. A machine without Java, a JDK or Maven fails the fixture with what to
install: these tests never skip. ``demo_gold`` is the gold layer of the demo data,
made by the real pipeline (``stockbatch run``) in another temporary home.

Tests that stop or restart ``opensearch_node.service`` must leave it running
(``opensearch_node.ensure_running()``) for the tests after them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from opensearchpy import OpenSearch
from typer.testing import CliRunner

from integration.opensearch.os_support import Gold, OpenSearchNode
from stockbatch.lake import gold as gold_layer
from stockbatch.settings import Settings


@pytest.fixture(scope="session")
def os_client(opensearch_node: OpenSearchNode) -> OpenSearch:
    """A client of the session's node."""
    return opensearch_node.client()


@pytest.fixture(scope="session")
def demo_gold(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Gold:
    """Gold of the demo sample, made by `stockbatch run` (in-process CLI)."""
    from stockbatch.cli import app

    home = tmp_path_factory.mktemp("search-gold")
    args = ["run", "--source", "kaggle", "--path", str(demo_data), "--as-of", "2023-06-30", "-q"]
    res = CliRunner().invoke(app, args, env={"STOCKBATCH_HOME": str(home)})
    assert res.exit_code == 0, res.output
    settings = Settings(home=home)
    return Gold(
        settings=settings,
        instruments=gold_layer.instruments_table(settings),
        quarterly=gold_layer.read_quarterly(settings),
        daily_files=gold_layer.daily_files(settings),
        checksums=gold_layer.gold_checksums(settings),
    )
