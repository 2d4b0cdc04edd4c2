"""The API's tests run the real application (``create_app``) on real warehouses.

``demo`` is the demo sample run once through ``stockbatch run`` into a temporary home
(SQLite), with users and credentials of every kind the authorization matrix needs:
a viewer, an analyst and an admin with tokens and passwords, a revoked token, an
expired token and a disabled user's token. Users, tokens, revocation and disabling
go through the CLI an operator uses (``stockbatch users`` / ``stockbatch tokens``).

``app`` is ``create_app(Settings(home=demo.home))``, called in-process with
FastAPI's ``TestClient`` (the real ASGI app, middleware, SQLite and argon2: no mock).

PostgreSQL: ``pg`` is the session's server of ``tests/integration/conftest.py`` (the
same fixture function, imported: fixtures of a conftest are only visible below its
folder). Only ``test_api_postgres.py`` asks for it.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from integration.conftest import Postgres, pg  # noqa: F401  (the session's PostgreSQL)
from stockbatch.api import accounts
from stockbatch.api.app import create_app
from stockbatch.api.context import auth_engine
from stockbatch.cli import app as cli_app
from stockbatch.settings import Settings

AS_OF = "2023-06-30"
ROLES = ("viewer", "analyst", "admin")
BAD = ("revoked", "expired", "disabled")
"""Credentials that must be refused (401) wherever authentication is required."""

PASSWORDS = {
    "viewer": "viewer-pass-Xq93!kz",
    "analyst": "analyst-pass-Lm27?pa",
    "admin": "admin-pass-Hv55#rt",
    "dora": "dora-pass-Ze41&yb",  # disabled after her token is made
    "lock": "lock-pass-Wn62^cs",  # the lockout test's own user
}

_runner = CliRunner()


def sb(home: Path, *args: str, stdin: str | None = None, **env: str) -> str:
    """Run a ``stockbatch`` command in-process on ``home``; fail the test unless it exits 0.
    Returns standard output."""
    result = _runner.invoke(
        cli_app, list(args), input=stdin, env={"STOCKBATCH_HOME": str(home), **env}
    )
    if result.exit_code != 0:
        raise AssertionError(
            f"stockbatch {' '.join(args)} exited {result.exit_code}:\n{result.output}"
            + (f"\n{result.exception!r}" if result.exception else "")
        )
    return result.stdout


def cli_token(home: Path, user: str, *extra: str) -> tuple[int, str]:
    """``stockbatch tokens create USER``: (token id, the token printed on stdout)."""
    result = _runner.invoke(
        cli_app, ["tokens", "create", user, *extra], env={"STOCKBATCH_HOME": str(home)}
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith(accounts.TOKEN_PREFIX), result.stdout
    found = re.search(r"token (\d+) for", result.stderr)
    assert found, result.stderr
    return int(found[1]), token


@dataclass
class Demo:
    """The demo home: the warehouse, the run, and every credential of the matrix."""

    home: Path
    run_id: str
    tokens: dict[str, str] = field(default_factory=dict)
    """``viewer``, ``analyst``, ``admin`` and the refused ``revoked``, ``expired``,
    ``disabled``."""

    def settings(self, **api: Any) -> Settings:
        """Settings of this home (``api``: ``ApiSettings`` fields to change)."""
        s = Settings(home=self.home)
        return s.model_copy(update={"api": s.api.model_copy(update=api)}) if api else s

    @property
    def secrets(self) -> list[str]:
        """Every password and token handed out: none may appear in any log or answer."""
        return [*PASSWORDS.values(), *self.tokens.values()]


def _demo_users(home: Path, demo: Demo) -> None:
    """The matrix's users, through the CLI, plus the lockout test's user."""
    roles = {"viewer": "viewer", "analyst": "analyst", "admin": "admin", "dora": "admin"}
    for user in (*roles, "lock"):
        role = roles.get(user, "viewer")
        sb(home, "users", "add", user, "--role", role, "--password-stdin", stdin=PASSWORDS[user])
    for role in ROLES:
        demo.tokens[role] = cli_token(home, role)[1]
    revoked_id, demo.tokens["revoked"] = cli_token(home, "admin")
    sb(home, "tokens", "revoke", str(revoked_id))
    # An admin's token valid for about 0.1 s: refused once that has passed, as any expired one.
    demo.tokens["expired"] = cli_token(home, "admin", "--expires-days", "0.000001")[1]
    demo.tokens["disabled"] = cli_token(home, "dora")[1]
    sb(home, "users", "disable", "dora")
    # The refused tokens are refused for the reason the matrix names, nothing else.
    engine = auth_engine(Settings(home=home))
    try:
        deadline = time.monotonic() + 5
        while accounts.from_token(engine, demo.tokens["expired"]) != "the token expired":
            assert time.monotonic() < deadline, "the short-lived token never expired"
            time.sleep(0.05)
        assert accounts.from_token(engine, demo.tokens["revoked"]) == "the token was revoked"
        assert accounts.from_token(engine, demo.tokens["disabled"]) == "the account is disabled"
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Demo:
    """The demo sample through ``stockbatch run`` into a fresh home, with users and tokens."""
    home = tmp_path_factory.mktemp("api-demo")
    sb(home, "run", "--source", "kaggle", "--path", str(demo_data), "--as-of", AS_OF, "-q")
    manifests = sorted((home / "lake" / "runs").glob("*.json"))
    assert len(manifests) == 1, manifests
    d = Demo(home=home, run_id=manifests[0].stem)
    _demo_users(home, d)
    return d


@pytest.fixture(scope="session")
def app(demo: Demo) -> Iterator[FastAPI]:
    """The application on the demo home (SQLite), default settings."""
    application = create_app(demo.settings())
    yield application
    application.state.ctx.close()


def client_for(app: FastAPI) -> TestClient:
    """A client without cookies; server errors come back as 500 answers (the tests assert
    on them), not as exceptions."""
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    """A fresh client of ``app`` (no session cookie)."""
    return client_for(app)


def bearer(token: str) -> dict[str, str]:
    """The ``Authorization`` header of a token."""
    return {"Authorization": f"Bearer {token}"}


def csrf_of(html: str) -> str:
    """The CSRF token of a page's form."""
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field in the page"
    return found[1]


def login(client: TestClient, user: str, password: str, next_: str = "/") -> Any:
    """The dashboard's login as a browser does it: GET the form, POST it with its CSRF."""
    form = client.get("/login")
    assert form.status_code == 200, form.text
    return client.post(
        "/login",
        data={"username": user, "password": password, "csrf": csrf_of(form.text), "next": next_},
        follow_redirects=False,
    )


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
