"""Who may call what, on the real application.

The authorization matrix enumerates ``app.routes``: every route must have a decision
in :data:`ROUTES` (a new route without one fails the test), and each is called with
no credentials, a viewer's, an analyst's and an admin's token, a revoked token, an
expired token and a disabled user's token (and with dashboard sessions of the three
roles). Then the dashboard login (CSRF, lockout, cookie flags) and the audit log
(every call and login recorded; no password or token anywhere in it).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute, Mount, Route

from stockbatch.api import accounts
from stockbatch.api.app import SESSION_COOKIE, create_app
from stockbatch.api.security import access_of
from stockbatch.warehouse import access, models

from .conftest import BAD, PASSWORDS, ROLES, Demo, bearer, client_for, csrf_of, login, utcnow

RANK = {role: i for i, role in enumerate(ROLES)}


@dataclass(frozen=True)
class Rule:
    """The decision for one route: the lowest role (None: public), whether it is a
    dashboard page (redirects to the login instead of a JSON 401), how to call it, and
    its normal answer to an authorized call."""

    role: str | None
    page: bool = False
    path: str | None = None
    """The URL to call when the route has path parameters (``{run_id}`` is filled in)."""
    query: dict[str, Any] = field(default_factory=dict)
    ok: int = 200


ROUTES: dict[tuple[str, str], Rule] = {
    # Probes: public (liveness and readiness carry no data); metrics: admin by default.
    ("GET", "/healthz"): Rule(None),
    ("GET", "/readyz"): Rule(None),
    ("GET", "/metrics"): Rule("admin"),
    # Data: viewer for one symbol (several or all: analyst, see test_bulk_needs_analyst).
    ("GET", "/api/v1/instruments"): Rule("viewer", query={"q": "AA"}),
    ("GET", "/api/v1/instruments/{symbol}"): Rule("viewer", path="/api/v1/instruments/AAPL"),
    ("GET", "/api/v1/daily"): Rule("viewer", query={"symbols": "AAPL", "limit": 5}),
    ("GET", "/api/v1/quarterly"): Rule("viewer", query={"symbols": "AAPL"}),
    ("GET", "/api/v1/quarters"): Rule("viewer"),
    # Operations.
    ("GET", "/api/v1/runs"): Rule("viewer"),
    ("GET", "/api/v1/runs/{run_id}"): Rule("viewer", path="/api/v1/runs/{run_id}"),
    ("GET", "/api/v1/quality"): Rule("viewer"),
    ("GET", "/api/v1/quality/history"): Rule("viewer"),
    ("GET", "/api/v1/catalog"): Rule("viewer"),
    ("GET", "/api/v1/me"): Rule("viewer"),
    ("GET", "/api/v1/openapi.json"): Rule("viewer"),
    # Admin: refused rows, the audit log, users and tokens.
    ("GET", "/api/v1/quarantine"): Rule("admin", query={"limit": 5}),
    ("GET", "/api/v1/audit"): Rule("admin", query={"limit": 5}),
    ("GET", "/api/v1/users"): Rule("admin"),
    ("GET", "/api/v1/tokens"): Rule("admin"),
    # The dashboard. Its assets and the login are public; a form posted without its CSRF
    # field is refused (400) whoever sends it.
    ("GET", "/static"): Rule(None, page=True, path="/static/app.css"),
    ("GET", "/vendor/plotly.min.js"): Rule(None, page=True),
    ("GET", "/login"): Rule(None, page=True),
    ("POST", "/login"): Rule(None, page=True, ok=400),
    ("POST", "/logout"): Rule("viewer", page=True, ok=400),
    ("GET", "/"): Rule("viewer", page=True),
    ("GET", "/search"): Rule("viewer", page=True, query={"q": "app"}),
    ("GET", "/symbols/{symbol}"): Rule("viewer", page=True, path="/symbols/AAPL"),
    ("GET", "/quarterly"): Rule("analyst", page=True),  # every symbol of a quarter: bulk
    ("GET", "/quality"): Rule("viewer", page=True),
    ("GET", "/quality/quarantine"): Rule("admin", page=True),
    ("GET", "/runs"): Rule("viewer", page=True),
    ("GET", "/runs/{run_id}"): Rule("viewer", page=True, path="/runs/{run_id}"),
    ("GET", "/catalog"): Rule("viewer", page=True),
    ("GET", "/admin"): Rule("admin", page=True),
}
"""Every route of the app and its decision. Add a route to the app: add it here."""


def _keys(route: BaseRoute) -> list[tuple[str, str]]:
    if isinstance(route, Mount):
        return [("GET", route.path)]
    if isinstance(route, Route):  # APIRoute and plain Starlette routes
        return [(m, route.path) for m in sorted(route.methods or ()) if m != "HEAD"]
    return [("?", getattr(route, "path", repr(route)))]  # a websocket or unknown kind: decide


def app_routes(app: FastAPI) -> dict[tuple[str, str], BaseRoute]:
    """Every (method, path) the application answers, from ``app.routes``."""
    return {key: route for route in app.routes for key in _keys(route)}


def test_every_route_has_a_decision(app: FastAPI) -> None:
    routes = app_routes(app)
    missing = sorted(set(routes) - set(ROUTES))
    assert not missing, f"routes without an authorization decision in ROUTES: {missing}"
    stale = sorted(set(ROUTES) - set(routes))
    assert not stale, f"ROUTES lists routes the app no longer has: {stale}"
    for key, route in routes.items():
        rule = ROUTES[key]
        if isinstance(route, APIRoute):
            declared = access_of(route)
            assert declared is not None, f"{key} declares no Access"
            assert declared.role == rule.role, f"{key}: declares {declared.role}, not {rule.role}"
            assert declared.page == (rule.page and rule.role is not None), key
        else:
            assert isinstance(route, Mount) and rule.role is None, f"{key} is not an APIRoute"


# ----------------------------------------------------------------------------- the matrix


def _call(client: TestClient, key: tuple[str, str], rule: Rule, run_id: str, **kw: Any) -> Any:
    method, path = key
    url = (rule.path or path).replace("{run_id}", run_id)
    return client.request(method, url, params=rule.query, follow_redirects=False, **kw)


def _expected(rule: Rule, who: str) -> int:
    """The status a caller gets: ``who`` is a role, ``none`` or one of :data:`BAD`."""
    if rule.role is None:
        return rule.ok
    if who == "none":
        return 303 if rule.page else 401
    if who in BAD:
        return 401
    return rule.ok if RANK[who] >= RANK[rule.role] else 403


def _check(key: tuple[str, str], rule: Rule, who: str, response: Any) -> str | None:
    """What is wrong with ``response`` (None: right)."""
    want = _expected(rule, who)
    got = response.status_code
    if got != want:
        return f"{key} as {who}: {got}, expected {want}: {response.text[:200]}"
    kind = response.headers.get("content-type", "")
    if want == 303:
        if not response.headers.get("location", "").startswith("/login?next="):
            return f"{key} as {who}: redirects to {response.headers.get('location')}"
    elif want == 401 or (want == 403 and not rule.page):
        if not kind.startswith("application/json") or not response.json().get("error"):
            return f"{key} as {who}: {want} without a JSON error: {kind} {response.text[:100]}"
        if want == 401 and response.headers.get("www-authenticate") != "Bearer":
            return f"{key} as {who}: 401 without WWW-Authenticate: Bearer"
    elif want == 403 and not kind.startswith("text/html"):
        return f"{key} as {who}: a page's 403 is not an HTML page: {kind}"
    return None


@pytest.mark.parametrize("who", ["none", *ROLES, *BAD])
def test_authorization_matrix(app: FastAPI, demo: Demo, who: str) -> None:
    client = client_for(app)
    headers = {} if who == "none" else bearer(demo.tokens[who])
    problems = []
    for key in app_routes(app):
        rule = ROUTES[key]  # test_every_route_has_a_decision names a missing one
        response = _call(client, key, rule, demo.run_id, headers=headers)
        problems.append(_check(key, rule, who, response))
    assert not [p for p in problems if p], "\n".join(p for p in problems if p)


@pytest.mark.parametrize("role", ROLES)
def test_authorization_matrix_with_a_session(app: FastAPI, demo: Demo, role: str) -> None:
    """The dashboard's session cookie carries the same rights as the user's token (pages
    call the API with it); a page answers a role too low with a 403 page."""
    client = client_for(app)
    assert login(client, role, PASSWORDS[role]).status_code == 303
    problems = []
    for key in app_routes(app):
        if key == ("POST", "/logout"):
            continue  # would end the session; logout has its own test
        rule = ROUTES[key]
        problems.append(_check(key, rule, role, _call(client, key, rule, demo.run_id)))
    assert not [p for p in problems if p], "\n".join(p for p in problems if p)


def test_metrics_public_by_setting(demo: Demo) -> None:
    app = create_app(demo.settings(metrics_public=True))
    try:
        client = client_for(app)
        response = client.get("/metrics")
        assert response.status_code == 200, response.text
        assert "stockbatch_http_requests_total" in response.text
        assert "stockbatch_last_run_timestamp_seconds" in response.text
        # A public route still refuses nothing to a bad token: it is not looked at.
        assert client.get("/metrics", headers=bearer(demo.tokens["revoked"])).status_code == 200
    finally:
        app.state.ctx.close()


def test_malformed_authorization_headers(client: TestClient, demo: Demo) -> None:
    for header in (
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "bearer sbk_not-a-real-token",
        "Bearer " + demo.tokens["viewer"] + "x",
        "Bearer " + demo.tokens["viewer"][4:],  # without the prefix
        "Bearer sbk_" + "a" * 5000,
        "Token " + demo.tokens["admin"],
    ):
        response = client.get("/api/v1/me", headers={"Authorization": header})
        assert response.status_code == 401, (header[:40], response.text)
        assert response.json()["error"], header[:40]
    # The right token with a lower-case scheme is accepted (schemes are case-insensitive).
    ok = client.get("/api/v1/me", headers={"Authorization": "bearer " + demo.tokens["viewer"]})
    assert ok.status_code == 200 and ok.json()["name"] == "viewer"


# ----------------------------------------------------------------------------- bulk


@pytest.mark.parametrize("path", ["/api/v1/daily", "/api/v1/quarterly"])
def test_one_symbol_is_viewer_several_or_all_is_analyst(
    client: TestClient, demo: Demo, path: str
) -> None:
    viewer, analyst = bearer(demo.tokens["viewer"]), bearer(demo.tokens["analyst"])
    one = [{"symbols": "AAPL"}, {"symbols": "aapl"}, {"symbols": "AAPL,AAPL"}]
    bulk = [{"symbols": "AAPL,ACN"}, {}, {"symbols": "A,AAPL,ACN,ADM"}]
    for params in one:
        for fmt in ("json", "csv", "parquet"):
            q = {**params, "format": fmt, **({"limit": 5} if fmt == "json" else {})}
            got = client.get(path, params=q, headers=viewer)
            assert got.status_code == 200, (params, fmt, got.text[:200])
    for params in bulk:
        for fmt in ("json", "csv", "parquet"):
            q = {**params, "format": fmt, **({"limit": 5} if fmt == "json" else {})}
            refused = client.get(path, params=q, headers=viewer)
            assert refused.status_code == 403, (params, fmt, refused.text[:200])
            assert "analyst" in refused.json()["error"]
            assert client.get(path, params=q, headers=analyst).status_code == 200, (params, fmt)


# ----------------------------------------------------------------------------- login


def test_login_with_a_session_cookie(client: TestClient) -> None:
    response = login(client, "analyst", PASSWORDS["analyst"], next_="/api/v1/me")
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/api/v1/me"
    me = client.get("/api/v1/me").json()
    assert me == {"name": "analyst", "role": "analyst", "via": "session"}
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    # Logging out needs the form's CSRF token too; afterwards the session is gone.
    assert client.post("/logout", data={}, follow_redirects=False).status_code == 400
    assert client.get("/api/v1/me").status_code == 200
    out = client.post("/logout", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert client.get("/api/v1/me").status_code == 401
    assert client.get("/", follow_redirects=False).status_code == 303


def test_login_never_redirects_off_site(client: TestClient) -> None:
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:x"):
        response = login(client, "viewer", PASSWORDS["viewer"], next_=target)
        assert response.status_code == 303
        assert response.headers["location"] == "/", target


def test_login_refuses_a_form_without_its_csrf_token(app: FastAPI) -> None:
    client = client_for(app)
    form = client.get("/login")
    good = csrf_of(form.text)
    base = {"username": "viewer", "password": PASSWORDS["viewer"], "next": "/"}
    for data in (base, {**base, "csrf": ""}, {**base, "csrf": good + "x"}, {**base, "csrf": "a"}):
        response = client.post("/login", data=data, follow_redirects=False)
        assert response.status_code == 400, data.get("csrf")
        assert "expired" in response.text
        assert client.get("/api/v1/me").status_code == 401
    # A token from another session does not do either (it is bound to its session).
    other = client_for(app)
    stolen = csrf_of(other.get("/login").text)
    response = client.post("/login", data={**base, "csrf": stolen}, follow_redirects=False)
    assert response.status_code == 400
    # A form without any session at all.
    fresh = client_for(app)
    assert fresh.post("/login", data={**base, "csrf": good}).status_code == 400
    # The right one works.
    ok = client.post("/login", data={**base, "csrf": good}, follow_redirects=False)
    assert ok.status_code == 303
    assert client.get("/api/v1/me").json()["via"] == "session"


def test_wrong_passwords_are_slowed_and_not_told_apart(client: TestClient) -> None:
    answers = []
    for user, password in (("viewer", "wrong-password-123"), ("nobody-here", "whatever-12345")):
        started = time.perf_counter()
        response = login(client, user, password)
        answers.append((response.status_code, "Wrong user name or password." in response.text))
        assert time.perf_counter() - started >= 0.5  # slowed down
        assert password not in response.text
    assert answers == [(401, True), (401, True)]  # an unknown user looks the same
    assert client.get("/api/v1/me").status_code == 401


def _user_row(app: FastAPI, name: str) -> dict[str, Any]:
    row = access.user(app.state.ctx.auth, name)
    assert row is not None
    return row


def test_lockout_after_repeated_failures_then_unlocked_after_the_lock_time(demo: Demo) -> None:
    # The third failure in a row locks "lock" for 9 s (the answer to that failure is
    # itself slowed by 4 s; the lock must outlast it to be seen).
    app = create_app(demo.settings(login_lock_after=3, login_lock_minutes=0.15))
    try:
        client = client_for(app)
        for n in (1, 2):
            assert login(client, "lock", "not-the-password").status_code == 401
            row = _user_row(app, "lock")
            assert row["failed_logins"] == n and row["locked_until"] is None
        assert login(client, "lock", "not-the-password").status_code == 401
        locked_until = _user_row(app, "lock")["locked_until"]
        assert locked_until is not None and locked_until > utcnow()
        # Locked: even the right password is refused, and the page says so.
        refused = login(client, "lock", PASSWORDS["lock"])
        assert refused.status_code == 401 and "locked" in refused.text
        assert client.get("/api/v1/me").status_code == 401
        # Once the lock time is over, the right password works.
        time.sleep(max(0.0, (locked_until - utcnow()).total_seconds()) + 0.1)
        assert login(client, "lock", PASSWORDS["lock"]).status_code == 303
        assert client.get("/api/v1/me").json()["name"] == "lock"
        row = _user_row(app, "lock")
        assert row["failed_logins"] == 0 and row["locked_until"] is None
    finally:
        app.state.ctx.close()


def test_a_disabled_user_loses_sessions_and_tokens_at_once(app: FastAPI) -> None:
    auth = app.state.ctx.auth
    accounts.create_user(auth, "sam", "admin", "sam-pass-Qr83$lm")
    _, token = accounts.create_token(auth, "sam", None)
    client = client_for(app)
    assert login(client, "sam", "sam-pass-Qr83$lm").status_code == 303
    assert client.get("/").status_code == 200
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 200
    assert access.set_enabled(auth, "sam", False)
    page = client.get("/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    assert client.get("/api/v1/me").status_code == 401
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 401
    # And cannot log in again.
    assert login(client_for(app), "sam", "sam-pass-Qr83$lm").status_code == 401


def _session_cookies(response: httpx.Response) -> list[str]:
    return [
        c for c in response.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE + "=")
    ]


@pytest.mark.parametrize("tls", [False, True])
def test_session_cookie_flags(demo: Demo, tls: bool) -> None:
    app = create_app(demo.settings(tls=tls))
    try:
        # Over TLS the client must speak https, or it would not send a Secure cookie back.
        client = TestClient(app, base_url="https://testserver" if tls else "http://testserver")
        form = client.get("/login")
        data = {"username": "viewer", "password": PASSWORDS["viewer"], "csrf": csrf_of(form.text)}
        done = client.post("/login", data=data, follow_redirects=False)
        assert done.status_code == 303
        cookies = _session_cookies(form) + _session_cookies(done)
        assert len(cookies) == 2, cookies
        for cookie in cookies:
            flags = {part.strip().lower().split("=")[0] for part in cookie.split(";")[1:]}
            attrs = {part.strip().lower() for part in cookie.split(";")[1:]}
            assert "httponly" in flags, cookie
            assert "samesite=strict" in attrs, cookie
            assert ("secure" in flags) is tls, cookie
    finally:
        app.state.ctx.close()


# ----------------------------------------------------------------------------- audit


def _audit(app: FastAPI, after_id: int) -> list[dict[str, Any]]:
    """Audit entries written after ``after_id``, oldest first, read from the table itself."""
    t = models.audit_log
    with app.state.ctx.auth.connect() as conn:
        rows = conn.execute(sa.select(t).where(t.c.id > after_id).order_by(t.c.id)).all()
    return [dict(r._mapping) for r in rows]


def _last_audit_id(app: FastAPI) -> int:
    with app.state.ctx.auth.connect() as conn:
        return int(conn.execute(sa.select(sa.func.max(models.audit_log.c.id))).scalar() or 0)


@pytest.fixture
def audit_mark(app: FastAPI) -> Iterator[int]:
    yield _last_audit_id(app)


def test_every_call_and_login_is_audited(app: FastAPI, demo: Demo, audit_mark: int) -> None:
    client = client_for(app)
    viewer, analyst = bearer(demo.tokens["viewer"]), bearer(demo.tokens["analyst"])
    calls = [
        ("viewer", viewer, "/api/v1/daily", {"symbols": "AAPL", "limit": "3"}, 200, 3),
        ("analyst", analyst, "/api/v1/quarterly", {"format": "csv"}, 200, None),
        ("viewer", viewer, "/api/v1/quarantine", {"limit": "2"}, 403, None),
        ("anonymous", {}, "/api/v1/runs", {}, 401, None),
        ("anonymous", bearer(demo.tokens["revoked"]), "/api/v1/runs", {}, 401, None),
        ("viewer", viewer, "/api/v1/daily", {"symbols": "AAPL", "start": "2020-02-30"}, 422, None),
        ("viewer", viewer, "/api/v1/instruments/ZZZZ", {}, 404, None),
        ("viewer", viewer, "/api/v1/instruments/AAPL", {}, 200, 1),
    ]
    for _, headers, path, params, status, _ in calls:
        assert client.get(path, params=params, headers=headers).status_code == status, path
    n_quarterly = len(client.get("/api/v1/quarters", headers=viewer).json()["quarters"])
    assert login(client_for(app), "analyst", PASSWORDS["analyst"]).status_code == 303
    assert login(client_for(app), "analyst", "a-wrong-password").status_code == 401

    entries = _audit(app, audit_mark)
    api_entries = [e for e in entries if e["action"].startswith("GET /api/v1/")]
    assert len(api_entries) == len(calls) + 1  # and the /quarters call
    for (actor, _, path, params, status, rows), entry in zip(calls, api_entries, strict=False):
        detail = entry["detail"]
        assert entry["actor"] == actor, (path, entry)
        assert entry["action"].startswith("GET /api/v1/"), entry
        assert detail["path"] == path and detail["status"] == status, (path, detail)
        assert detail["params"] == params, (path, detail)
        if rows is not None:
            assert detail["rows"] == rows, (path, detail)
        assert detail["ms"] >= 0 and entry["at"] is not None
    csv_entry = api_entries[1]["detail"]
    assert csv_entry["rows"] > 100  # a streamed download counts its rows
    assert api_entries[-1]["detail"]["rows"] == n_quarterly
    assert api_entries[6]["action"] == "GET /api/v1/instruments/{symbol}"
    assert api_entries[6]["detail"]["path_params"] == {"symbol": "ZZZZ"}
    logins = [e for e in entries if e["action"] == "login"]
    assert [(e["actor"], e["detail"]["ok"]) for e in logins] == [
        ("analyst", True),
        ("analyst", False),
    ]
    assert logins[1]["detail"]["reason"] == "wrong password"

    # The same entries through the API (admin), newest first.
    listed = client.get("/api/v1/audit", params={"limit": 50}, headers=bearer(demo.tokens["admin"]))
    assert listed.status_code == 200
    by_id = {e["id"]: e for e in listed.json()["items"]}
    for entry in entries:
        got = by_id[entry["id"]]
        assert (got["actor"], got["action"], got["detail"]) == (
            entry["actor"],
            entry["action"],
            entry["detail"],
        )


def test_no_password_or_token_in_the_audit_log_or_answers(app: FastAPI, demo: Demo) -> None:
    client = client_for(app)
    admin = bearer(demo.tokens["admin"])
    secret_token, password = demo.tokens["analyst"], PASSWORDS["analyst"]
    # Every way a client might misplace a secret: in the query, the path, the form.
    answers = [
        client.get("/api/v1/me", params={"token": secret_token}),
        client.get("/api/v1/me", params={"access_token": secret_token}),
        client.get("/api/v1/me", params={"password": password}, headers=admin),
        client.get("/api/v1/instruments", params={"q": secret_token}, headers=admin),
        client.get("/api/v1/instruments", params={"api_key": secret_token}, headers=admin),
        client.get(f"/api/v1/instruments/{secret_token}", headers=admin),
        client.get(f"/api/v1/runs/{secret_token}", headers=admin),
        client.get("/api/v1/daily", params={"symbols": secret_token}, headers=admin),
        client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret_token}x"}),
        client.get("/api/v1/me", headers={"Authorization": f"Basic {secret_token}"}),
        login(client_for(app), "analyst", password + "-wrong"),
        login(client_for(app), "nobody", password),
        login(client_for(app), "analyst", password),
    ]
    answers.append(client.get("/api/v1/audit", params={"limit": 5000}, headers=admin))
    answers.append(client.get("/api/v1/users", headers=admin))
    answers.append(client.get("/api/v1/tokens", headers=admin))
    with app.state.ctx.auth.connect() as conn:
        stored = [
            json.dumps([str(v) for v in row])
            for row in conn.execute(sa.select(models.audit_log)).all()
        ]
    # The misplaced ones are recorded, masked.
    assert any("/api/v1/instruments/sbk_***" in row for row in stored)
    texts = [a.text for a in answers] + stored
    leaks = []
    for secret in demo.secrets:
        # The secret itself, its base64, or a good part of it in any case, never appears.
        b64 = base64.b64encode(secret.encode()).decode().rstrip("=")
        for text in texts:
            if secret in text or b64 in text or secret[4:16].upper() in text.upper():
                leaks.append(text[:300])
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)
