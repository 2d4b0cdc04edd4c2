"""The API's instrument search on each real search node (OpenSearch, Elasticsearch): the
node answers when it is configured and loaded (fuzzy names included), the warehouse's SQL
search answers in the same shape when the node is unreachable or its index is missing,
and /readyz says so."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from integration.search.search_support import Gold, SearchNode
from stockbatch.api import accounts
from stockbatch.api.app import create_app
from stockbatch.api.context import auth_engine
from stockbatch.search import SearchBackend, sync_search
from stockbatch.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.search]

PREFIX = "sbapi"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, demo_gold: Gold, backend: SearchBackend) -> Path:
    """A copy of the demo home (its warehouse gets a user), its gold in the node."""
    copy = tmp_path_factory.mktemp("api-search") / "home"
    shutil.copytree(demo_gold.settings.home, copy)
    sync_search(
        backend,
        instruments=demo_gold.instruments,
        quarterly=demo_gold.quarterly,
        daily_files=demo_gold.daily_files,
        run_id="api-search",
        checksum=demo_gold.checksums,
        prefix=PREFIX,
    )
    return copy


@pytest.fixture(scope="module")
def token(home: Path) -> str:
    engine = auth_engine(Settings(home=home))
    try:
        accounts.create_user(engine, "searcher", "viewer", None)
        return accounts.create_token(engine, "searcher", None)[1]
    finally:
        engine.dispose()


def _node_fields(node: SearchNode) -> dict[str, Any]:
    """The search settings reaching ``node``: a secured node's also carry the user,
    password and CA (``search_fields``), an open node's only its kind and URL."""
    fields = getattr(node, "search_fields", None)
    return dict(fields()) if fields else {"kind": node.kind, "url": node.url}


def _client(home: Path, **search: Any) -> Iterator[TestClient]:
    base = Settings(home=home)
    settings = base.model_copy(update={"search": base.search.model_copy(update=search)})
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def on_node(home: Path, search_node: SearchNode) -> Iterator[TestClient]:
    yield from _client(home, **_node_fields(search_node), index_prefix=PREFIX)


@pytest.fixture
def sql_only(home: Path) -> Iterator[TestClient]:
    yield from _client(home)


def _search(client: TestClient, token: str, q: str) -> dict[str, Any]:
    answer = client.get(
        "/api/v1/instruments",
        params={"q": q, "limit": 5},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_the_node_answers_with_the_sql_answers_shape(
    on_node: TestClient, sql_only: TestClient, token: str, search_node: SearchNode
) -> None:
    node = _search(on_node, token, "aapl")
    sql = _search(sql_only, token, "aapl")
    assert (node["search"], sql["search"]) == (search_node.kind, "sql")
    assert node["items"][0] == sql["items"][0]  # the exact symbol first, same fields
    assert node["items"][0]["symbol"] == "AAPL"
    assert {tuple(sorted(i)) for i in node["items"]} == {tuple(sorted(i)) for i in sql["items"]}
    # What only the node does: a typo in a company name.
    assert "AAPL" in [i["symbol"] for i in _search(on_node, token, "Appel")["items"]]
    assert _search(sql_only, token, "Appel")["items"] == []


def _closed_port() -> int:
    # A port nothing listens on: bound, then released.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_an_unreachable_node_falls_back_to_sql(
    home: Path, sql_only: TestClient, token: str, search_node: SearchNode
) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}"
    for client in _client(home, kind=search_node.kind, url=dead, index_prefix=PREFIX):
        for q in ("aapl", "ap", "Apple"):  # the second and third ask within the retry pause
            assert _search(client, token, q) == _search(sql_only, token, q)
        ready = client.get("/readyz").json()
        assert ready["search"]["state"] == "unavailable", ready
        assert ready["search"]["kind"] == search_node.kind, ready


def test_a_missing_index_falls_back_to_sql(
    home: Path, sql_only: TestClient, token: str, search_node: SearchNode
) -> None:
    for client in _client(home, **_node_fields(search_node), index_prefix="sbnone"):
        assert _search(client, token, "aapl") == _search(sql_only, token, "aapl")
