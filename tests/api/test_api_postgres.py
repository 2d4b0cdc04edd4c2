"""The API on PostgreSQL gives the answers it gives on SQLite.

The demo sample goes through ``stockbatch run --warehouse postgresql`` into a database
of the session's server (``pg``, with the owner / loader / reader roles of
``PostgresService.create_database``), users and tokens through the CLI as on SQLite.
The app reads data through the READER role; its auth engine (users, tokens, audit) is
``api.auth_url`` or by default the LOADER role (``api.context.auth_engine``), because
the reader may not read the account tables. Each answer is compared with the SQLite
app of ``conftest.demo`` (the same sample, the same as-of date).
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from integration.conftest import Postgres
from stockbatch.api import accounts
from stockbatch.api.app import create_app
from stockbatch.settings import Settings, WarehouseSettings
from stockbatch.warehouse import access, db
from stockbatch.warehouse.db import SECRET_TABLES

from .conftest import AS_OF, PASSWORDS, ROLES, Demo, bearer, client_for, login, sb

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

RUN_FIELDS_THAT_DIFFER = {"run_id", "started_at", "finished_at", "duration_s"}
"""Two runs of the same input differ only in when they ran (their id is a timestamp)."""


@dataclass
class PgDemo:
    home: Path
    urls: db.WarehouseUrls
    app: FastAPI
    tokens: dict[str, str]
    run_id: str


@pytest.fixture(scope="module")
def pg_demo(
    pg: Postgres, demo_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PgDemo]:
    """The demo run into a fresh PostgreSQL database; users and tokens via the CLI."""
    pg.ensure_running()
    name = f"api_{uuid.uuid4().hex[:10]}"
    made = pg.service.create_database(name)
    urls = db.WarehouseUrls(owner=made["owner"], loader=made["loader"], reader=made["reader"])
    env = {
        "STOCKBATCH_WAREHOUSE__KIND": "postgresql",
        "STOCKBATCH_WAREHOUSE__URL": urls.loader,
        "STOCKBATCH_WAREHOUSE__OWNER_URL": urls.owner,
        "STOCKBATCH_WAREHOUSE__READER_URL": urls.reader,
    }
    home = tmp_path_factory.mktemp("api-pg")
    sb(home, "run", "--source", "kaggle", "--path", str(demo_data), "--as-of", AS_OF, "-q", **env)
    manifests = sorted((home / "lake" / "runs").glob("*.json"))
    assert len(manifests) == 1, manifests
    tokens = {}
    for role in ROLES:
        sb(home, "users", "add", role, "--role", role, "--password-stdin",
           stdin=PASSWORDS[role], **env)  # fmt: skip
        tokens[role] = sb(home, "tokens", "create", role, **env).strip().splitlines()[-1]
        assert tokens[role].startswith(accounts.TOKEN_PREFIX)
    settings = Settings(
        home=home,
        warehouse=WarehouseSettings(
            kind="postgresql", url=urls.loader, owner_url=urls.owner, reader_url=urls.reader
        ),
    )
    application = create_app(settings)
    yield PgDemo(home, urls, application, tokens, manifests[0].stem)
    application.state.ctx.close()
    pg.ensure_running()
    pg.service.drop_database(name)


@pytest.fixture(scope="module")
def clients(app: FastAPI, pg_demo: PgDemo) -> tuple[TestClient, TestClient]:
    return client_for(app), client_for(pg_demo.app)


def _both(
    clients: tuple[TestClient, TestClient],
    demo: Demo,
    pg_demo: PgDemo,
    path: str,
    role: str = "analyst",
    **params: Any,
) -> tuple[Any, Any]:
    """The same request to the SQLite app and the PostgreSQL app, each with its own token
    of ``role``: the two responses, which must have the same status."""
    lite = clients[0].get(path, params=params, headers=bearer(demo.tokens[role]))
    post = clients[1].get(path, params=params, headers=bearer(pg_demo.tokens[role]))
    assert lite.status_code == post.status_code, (path, params, lite.text[:300], post.text[:300])
    return lite, post


def _same_json(
    clients: tuple[TestClient, TestClient],
    demo: Demo,
    pg_demo: PgDemo,
    path: str,
    role: str = "analyst",
    **params: Any,
) -> Any:
    lite, post = _both(clients, demo, pg_demo, path, role, **params)
    assert lite.status_code == 200, lite.text[:300]
    assert lite.json() == post.json(), (path, params)
    return lite.json()


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _run_ids(value: Any, pg_run: str, lite_run: str) -> Any:
    """``value`` with the PostgreSQL run's id written as the SQLite run's."""
    if isinstance(value, dict):
        return {k: _run_ids(v, pg_run, lite_run) for k, v in value.items()}
    if isinstance(value, list):
        return [_run_ids(v, pg_run, lite_run) for v in value]
    return lite_run if value == pg_run else value


@pytest.mark.parametrize("q", [None, "a", "AAP", "inc", "corp", "%", "zzzz"])
def test_instruments_and_search(
    clients: tuple[TestClient, TestClient], demo: Demo, pg_demo: PgDemo, q: str | None
) -> None:
    params: dict[str, Any] = {"limit": 1000} if q is None else {"q": q, "limit": 50}
    body = _same_json(clients, demo, pg_demo, "/api/v1/instruments", "viewer", **params)
    if q in (None, "a", "AAP"):
        assert body["items"]
    paged = _same_json(clients, demo, pg_demo, "/api/v1/instruments", "viewer", limit=4)
    second = _same_json(
        clients, demo, pg_demo, "/api/v1/instruments", "viewer", limit=4,
        cursor=paged["next_cursor"],
    )  # fmt: skip
    assert second["items"] and second["items"][0]["symbol"] > paged["items"][-1]["symbol"]


def test_one_instrument_and_the_quarters(
    clients: tuple[TestClient, TestClient], demo: Demo, pg_demo: PgDemo
) -> None:
    for symbol in ("AAPL", "aapl", "ACN"):
        body = _same_json(clients, demo, pg_demo, f"/api/v1/instruments/{symbol}", "viewer")
        assert body["bars"] > 100 and body["quarters"] > 4
    _same_json(clients, demo, pg_demo, "/api/v1/quarters", "viewer")
    for bad in ("NOSUCHSYM", quote("'; DROP TABLE instruments; --", safe="")):
        lite, post = _both(clients, demo, pg_demo, f"/api/v1/instruments/{bad}", "viewer")
        assert lite.status_code in (400, 404) and lite.json() == post.json()


@pytest.mark.parametrize(
    "params",
    [
        {"symbols": "AAPL", "limit": 50_000},
        {"symbols": "AAPL,ACN", "start": "2015-01-01", "end": "2015-12-31"},
        {"symbols": "ACN,AAPL", "columns": "close,rsi_14,macd", "limit": 700},
        {"start": "2017-06-01", "limit": 3_000},
    ],
)
def test_daily_json(
    clients: tuple[TestClient, TestClient], demo: Demo, pg_demo: PgDemo, params: dict[str, Any]
) -> None:
    body = _same_json(clients, demo, pg_demo, "/api/v1/daily", **params)
    assert body["items"]
    if body["next_cursor"]:
        _same_json(clients, demo, pg_demo, "/api/v1/daily", **params, cursor=body["next_cursor"])


def _lineage_without_run(content: bytes) -> tuple[Any, dict[bytes, bytes]]:
    table = pq.read_table(io.BytesIO(content))
    md = dict(table.schema.metadata or {})
    # The process run's id is the one field of the lineage that differs: another run.
    assert md.pop(b"stockbatch.process_run_id")
    return table.replace_schema_metadata(None), md


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/daily", {"symbols": "AAPL,ACN"}),
        ("/api/v1/daily", {"symbols": "AAPL", "start": "2016-01-01", "columns": "close"}),
        ("/api/v1/quarterly", {}),
        ("/api/v1/quarterly", {"as_of": "2016-08-01"}),
    ],
)
def test_parquet_downloads(
    clients: tuple[TestClient, TestClient],
    demo: Demo,
    pg_demo: PgDemo,
    path: str,
    params: dict[str, Any],
) -> None:
    lite, post = _both(clients, demo, pg_demo, path, format="parquet", **params)
    assert lite.status_code == 200
    lite_table, lite_md = _lineage_without_run(lite.content)
    post_table, post_md = _lineage_without_run(post.content)
    assert lite_table.num_rows > 10
    assert lite_table.schema == post_table.schema
    assert lite_table.equals(post_table)
    assert lite_md == post_md


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 50_000},
        {"as_of": "2015-05-15", "limit": 50_000},
        {"as_of": "2017-11-20", "symbols": "AAPL,ACN", "from": "2016Q1"},
        {"symbols": "AAPL", "to": "2016Q2", "limit": 3},
    ],
)
def test_quarterly_json(
    clients: tuple[TestClient, TestClient], demo: Demo, pg_demo: PgDemo, params: dict[str, Any]
) -> None:
    body = _same_json(clients, demo, pg_demo, "/api/v1/quarterly", **params)
    assert body["items"]
    if "as_of" in params:
        nulls = [i for i in body["items"] if i["label_next_q_return"] is None]
        assert nulls, "a point-in-time table has unknown labels"


def test_runs_and_quality(
    clients: tuple[TestClient, TestClient], demo: Demo, pg_demo: PgDemo
) -> None:
    lite, post = (
        r.json() for r in _both(clients, demo, pg_demo, "/api/v1/runs", "viewer", limit=500)
    )
    assert [r["run_id"] for r in lite["items"]] == [demo.run_id]
    assert [r["run_id"] for r in post["items"]] == [pg_demo.run_id]
    for a, b in zip(lite["items"], post["items"], strict=True):
        for k in RUN_FIELDS_THAT_DIFFER:
            assert a.pop(k) is not None and b.pop(k) is not None, k
        assert a == b and a["rows_clean"] > 10_000

    lite_one, post_one = (
        r.json()
        for r in (
            clients[0].get(f"/api/v1/runs/{demo.run_id}", headers=bearer(demo.tokens["viewer"])),
            clients[1].get(
                f"/api/v1/runs/{pg_demo.run_id}", headers=bearer(pg_demo.tokens["viewer"])
            ),
        )
    )
    assert lite_one["manifest"]["counts"] == post_one["manifest"]["counts"]
    assert lite_one["quality"] == post_one["quality"] and lite_one["quality"]

    lite_q, post_q = (r.json() for r in _both(clients, demo, pg_demo, "/api/v1/quality", "viewer"))
    assert _run_ids(post_q, pg_demo.run_id, demo.run_id) == lite_q
    assert lite_q["run_id"] == demo.run_id and lite_q["reasons"]
    lite_h, post_h = (
        r.json() for r in _both(clients, demo, pg_demo, "/api/v1/quality/history", "viewer")
    )
    for h in (*lite_h["runs"], *post_h["runs"]):
        assert h.pop("started_at")
    assert _run_ids(post_h, pg_demo.run_id, demo.run_id) == lite_h


@pytest.mark.parametrize(
    "params",
    [{}, {"limit": 5}, {"reason": "weekend_date"}, {"symbol": "EVSTC", "limit": 3}],
)
def test_quarantine_as_admin(
    clients: tuple[TestClient, TestClient], demo: Demo, pg_demo: PgDemo, params: dict[str, Any]
) -> None:
    lite, post = (
        r.json() for r in _both(clients, demo, pg_demo, "/api/v1/quarantine", "admin", **params)
    )
    assert lite["items"]
    # Rows carry the id of the run that refused them: the only difference.
    assert _run_ids(post, pg_demo.run_id, demo.run_id) == lite
    if lite["next_cursor"]:
        more = _both(
            clients, demo, pg_demo, "/api/v1/quarantine", "admin", **params,
            cursor=lite["next_cursor"],
        )  # fmt: skip
        assert _run_ids(more[1].json(), pg_demo.run_id, demo.run_id) == more[0].json()


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/runs/%00", {}),
        ("/api/v1/runs/'%3B%20DROP%20TABLE%20pipeline_runs%3B%20--", {}),
        ("/api/v1/audit", {"actor": "x\x00y"}),
        ("/api/v1/audit", {"actor": "'; DROP TABLE api_users; --"}),
        ("/api/v1/quality", {"run_id": "x\x00"}),
        ("/api/v1/quarantine", {"symbol": "A\x00"}),
        ("/api/v1/daily", {"symbols": "AAPL", "start": "0001-01-01", "end": "9999-12-31"}),
        ("/api/v1/quarterly", {"as_of": "0001-01-01"}),
        ("/api/v1/instruments", {"q": "\x00%_'\"\\"}),
        ("/api/v1/runs", {"cursor": _cursor(["\x00"])}),
        ("/api/v1/instruments", {"cursor": _cursor(["A\x00"])}),
        ("/api/v1/daily", {"symbols": "AAPL", "cursor": _cursor(["AAPL\x00", "2015-01-02"])}),
        ("/api/v1/quarterly", {"cursor": _cursor(["\x00", "2015Q1"])}),
    ],
)
def test_odd_input_answers_the_same_and_never_500(
    clients: tuple[TestClient, TestClient],
    demo: Demo,
    pg_demo: PgDemo,
    path: str,
    params: dict[str, Any],
) -> None:
    """Text PostgreSQL refuses (a NUL byte) or binds literally (quotes) must not be a
    server error there either."""
    lite, post = _both(clients, demo, pg_demo, path, "admin", **params)
    assert lite.status_code < 500 and post.status_code < 500, post.text[:300]
    if path != "/api/v1/audit":  # the audit logs differ: other calls were made
        assert lite.json() == post.json()
    # The call is in PostgreSQL's audit log (a NUL is written as \x00 there).
    newest = access.audit_rows(pg_demo.app.state.ctx.auth, limit=1)[0]
    assert newest["actor"] == "admin" and newest["detail"]["status"] == post.status_code
    assert newest["detail"]["path"] == unquote(path).replace("\x00", "\\x00")


def test_a_login_name_with_a_nul_is_a_wrong_login(pg_demo: PgDemo) -> None:
    wrong = login(client_for(pg_demo.app), "analyst\x00", PASSWORDS["analyst"])
    assert wrong.status_code == 401 and "Wrong user name or password." in wrong.text


def test_reader_cannot_read_the_account_tables(pg_demo: PgDemo) -> None:
    assert {"api_users", "api_tokens"} <= set(SECRET_TABLES)
    reader = sa.create_engine(pg_demo.urls.reader)
    loader = sa.create_engine(pg_demo.urls.loader)
    try:
        for table in SECRET_TABLES:
            with reader.connect() as conn, pytest.raises(sa.exc.ProgrammingError) as err:
                conn.execute(sa.text(f"SELECT count(*) FROM {table}"))
            assert "permission denied" in str(err.value.orig), err.value
            with loader.connect() as conn:  # the auth store's role can
                assert conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one() >= 0
        with reader.connect() as conn:  # while the data is readable
            assert conn.execute(sa.text("SELECT count(*) FROM daily_bars")).scalar_one() > 10_000
    finally:
        reader.dispose()
        loader.dispose()


def test_the_app_reads_as_reader_and_authenticates_as_loader(pg_demo: PgDemo) -> None:
    ctx = pg_demo.app.state.ctx
    assert ctx.reader.url.username == sa.make_url(pg_demo.urls.reader).username
    assert ctx.auth.url.username == sa.make_url(pg_demo.urls.loader).username
    assert ctx.reader.url.username != ctx.auth.url.username
    client = client_for(pg_demo.app)
    # Tokens work (the audit of this call is written through the auth engine) ...
    for role in ROLES:
        me = client.get("/api/v1/me", headers=bearer(pg_demo.tokens[role]))
        assert me.json() == {"name": role, "role": role, "via": "token"}
    assert (
        client.get("/api/v1/me", headers=bearer(pg_demo.tokens["viewer"] + "x")).status_code == 401
    )
    users = client.get("/api/v1/users", headers=bearer(pg_demo.tokens["admin"]))
    assert sorted(u["name"] for u in users.json()) == sorted(ROLES)
    audit = client.get(
        "/api/v1/audit", params={"actor": "viewer"}, headers=bearer(pg_demo.tokens["admin"])
    )
    assert any(e["action"] == "GET /api/v1/me" for e in audit.json()["items"])
    # ... and so does the dashboard's login with a password.
    browser = client_for(pg_demo.app)
    done = login(browser, "analyst", PASSWORDS["analyst"])
    assert done.status_code == 303, done.text[:300]
    assert browser.get("/api/v1/me").json() == {
        "name": "analyst",
        "role": "analyst",
        "via": "session",
    }
    wrong = login(client_for(pg_demo.app), "analyst", "wrong-password-123")
    assert wrong.status_code == 401 and "Wrong user name or password." in wrong.text
