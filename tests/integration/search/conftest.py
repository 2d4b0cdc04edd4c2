"""The search tests run on both engines: ``search_node`` is parametrised over a real
OpenSearch 2.19 node and a real Elasticsearch 8.19 node, one of each per session
(``opensearch_node`` / ``elasticsearch_node`` of tests/integration/conftest.py:
single nodes on 127.0.0.1, provisioned from Maven Central on first use under a
fresh temporary ``STOCKBATCH_HOME``, stopped at the end of the session whatever
happened). A machine without Java, a JDK or Maven fails the fixture with what to
install: these tests never skip. ``backend`` is stockbatch's interface to that node.
``demo_gold`` is the gold layer of the demo data, made by the real pipeline
(``stockbatch run``) in another temporary home.

Tests that stop or restart ``search_node.service`` must leave it running
(``search_node.ensure_running()``) for the tests after them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from integration.search.search_support import Gold, SearchNode
from stockbatch.lake import gold as gold_layer
from stockbatch.search import SearchBackend
from stockbatch.settings import Settings

ENGINES = ["opensearch", "elasticsearch"]


@pytest.fixture(scope="session", params=ENGINES)
def search_node(request: pytest.FixtureRequest) -> SearchNode:
    """The session's node of each engine in turn (tests are grouped by engine)."""
    node: SearchNode = request.getfixturevalue(f"{request.param}_node")
    return node


@pytest.fixture(scope="session")
def backend(search_node: SearchNode) -> SearchBackend:
    """stockbatch's interface to ``search_node``."""
    return search_node.backend()


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
