"""``GET /api/v1/catalog`` and the ``/catalog`` page on the demo home (the real app,
SQLite warehouse, tokens and passwords made with the CLI: tests/api/conftest.py)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from .conftest import PASSWORDS, Demo, bearer, login, sb


@pytest.fixture(scope="module")
def cli_catalog(demo: Demo) -> dict[str, object]:
    """``stockbatch catalog --json`` on the same home."""
    doc: dict[str, object] = json.loads(sb(demo.home, "catalog", "--json"))
    return doc


def test_viewer_reads_the_catalog(
    client: TestClient, demo: Demo, cli_catalog: dict[str, object]
) -> None:
    answer = client.get("/api/v1/catalog", headers=bearer(demo.tokens["viewer"]))
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    cli = {d["name"]: d for d in cli_catalog["datasets"]}  # type: ignore[attr-defined]
    assert [d["name"] for d in doc["datasets"]] == list(cli)
    assert doc["count"] == len(cli)
    for d in doc["datasets"]:
        if d["kind"] in ("lake", "warehouse") and d["name"] != "warehouse.audit_log":
            # The audit log grows with every request; the data does not.
            assert d["rows"] == cli[d["name"]]["rows"], d["name"]
        assert d["last_run"] == cli[d["name"]]["last_run"], d["name"]
        assert all(c["description"] for c in d["columns"]), d["name"]
    gold = next(d for d in doc["datasets"] if d["name"] == "gold.daily_features")
    assert gold["last_run"] == demo.run_id and gold["status"] == "ok"
    assert gold["checksum"]["covers"]


def test_one_dataset_and_an_unknown_one(client: TestClient, demo: Demo) -> None:
    headers = bearer(demo.tokens["viewer"])
    one = client.get("/api/v1/catalog", params={"dataset": "warehouse.daily_bars"}, headers=headers)
    assert one.status_code == 200, one.text
    assert [d["name"] for d in one.json()["datasets"]] == ["warehouse.daily_bars"]
    assert client.get("/api/v1/catalog?dataset=nope", headers=headers).status_code == 404
    assert client.get("/api/v1/catalog?dataset=a%20b", headers=headers).status_code == 422


@pytest.mark.parametrize("token", [None, "revoked", "expired", "disabled"])
def test_the_catalog_needs_a_valid_token(client: TestClient, demo: Demo, token: str | None) -> None:
    headers = bearer(demo.tokens[token]) if token else {}
    answer = client.get("/api/v1/catalog", headers=headers)
    assert answer.status_code == 401, answer.text
    assert "datasets" not in answer.text


def test_the_page_renders_for_a_viewer(client: TestClient, demo: Demo) -> None:
    anonymous = client.get("/catalog", follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")
    assert login(client, "viewer", PASSWORDS["viewer"]).status_code == 303
    page = client.get("/catalog")
    assert page.status_code == 200, page.text
    html = page.text
    assert '<a href="/catalog" aria-current="page">Catalog</a>' in html
    for name in ("bronze.bars", "gold.quarterly_features", "warehouse.pipeline_runs"):
        assert f'id="ds-{name.replace(".", "-")}"' in html, name
    assert f'href="/runs/{demo.run_id}"' in html
    assert "[price]" in html  # a column description with its unit
    assert '<script src="/static/catalog.js"></script>' in html
    assert client.get("/static/catalog.js").status_code == 200
