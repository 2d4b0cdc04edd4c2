"""No secret leaks: the whole pipeline on the secured services with known passwords,
then every file, log, manifest, run record, audit row, command output, error text and
process command line is scanned for them.

One home runs what `stockbatch services up postgresql kafka opensearch` starts (TLS
and generated passwords on each), and the commands a user types: an admin user with a
known password (stdin), a run through Kafka into PostgreSQL and OpenSearch, a bearer
token, dashboard logins (one refused, with a known wrong password), API calls, a
backup, and three commands that fail on a known wrong password (Kafka, the search node,
PostgreSQL). The secrets are those we chose plus every password the services generated
(read from services.json). Only the stores that must hold a secret may hold one, each
owner-only (0600): services.json, the CA's and the services' keys, and the services'
own credential files (listed in ``SECRET_STORES``, each with why).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from fastapi.testclient import TestClient

from stockbatch.api.app import create_app
from stockbatch.services import recorded_endpoints
from stockbatch.settings import Settings
from support.services import remove_server_home, server_home

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.opensearch]

STOCKBATCH = [sys.executable, "-m", "stockbatch.cli"]
SERVICES = ("postgresql", "kafka", "opensearch")
# Files that hold secrets by design, relative to the home (glob patterns), and why.
SECRET_STORES: dict[str, str] = {
    "services.json": "the endpoints with the generated passwords (0600)",
    "services/tls/*.key": "private keys of the CA and the services",
    "services/tls/*.p12": "PKCS#12 key stores (the Java services' keys)",
    "services/kafka/state.json": "the generated SCRAM users' passwords",
    "services/kafka/server.properties": "the broker's SCRAM login for inter-broker calls",
    "services/kafka/client.properties": "Kafka's Java tools' client login",
    "services/kafka/tls/keystore.pem": "the broker's key",
    "services/postgresql/state.json": "the generated role passwords",
    "services/postgresql/.pgpass": "libpq password file of the service's own psql calls",
    "services/opensearch/state.json": "the generated internal users' passwords",
    "services/opensearch/*.key": "the node's key",
}
# Shorter strings would match by chance (the scan would report noise, not leaks).
MIN_SECRET = 8


@dataclass
class Trace:
    """Everything a user and the services produced that must not hold a secret."""

    outputs: dict[str, str] = field(default_factory=dict)
    """command -> its stdout + stderr."""

    def run(
        self, what: str, args: list[str], env: dict[str, str], stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*STOCKBATCH, *args],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        self.outputs[what] = done.stdout + done.stderr
        return done


def _secrets_in(value: Any, found: set[str], key: str = "") -> None:
    """Every password-like value of a services.json record (also inside URLs)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _secrets_in(v, found, str(k))
    elif isinstance(value, list):
        for v in value:
            _secrets_in(v, found, key)
    elif isinstance(value, str):
        if re.search(r"password|secret|token", key, re.I):
            found.add(value)
        if "://" in value:
            with_password = urlsplit(value).password
            if with_password:
                found.add(with_password)


def _stored(home: Path, path: Path) -> str | None:
    """The SECRET_STORES pattern ``path`` matches, else None."""
    rel = path.relative_to(home).as_posix()
    return next((p for p in SECRET_STORES if fnmatch.fnmatch(rel, p)), None)


def _hits(text: bytes, secrets: dict[str, str]) -> list[str]:
    return [name for name, secret in secrets.items() if secret.encode() in text]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Iterator[Any]:
    """The module's home with PostgreSQL, Kafka and OpenSearch up (stopped and purged after)."""
    home = server_home(tmp_path_factory, "secrets-scan")
    env = {
        **os.environ,
        "STOCKBATCH_HOME": str(home),
        "STOCKBATCH_PROGRESS": "false",
        "STOCKBATCH_WAREHOUSE__KIND": "postgresql",
        "STOCKBATCH_SEARCH__KIND": "opensearch",
    }
    ours = (
        "STOCKBATCH_HOME",
        "STOCKBATCH_PROGRESS",
        "STOCKBATCH_WAREHOUSE__KIND",
        "STOCKBATCH_SEARCH__KIND",
    )
    for name in list(env):
        if name.startswith("STOCKBATCH_") and name not in ours:
            del env[name]  # the test's settings only (and STOCKBATCH_SHARED_DATA is not ours)
    trace = Trace()
    try:
        up = trace.run("services up", ["services", "up", *SERVICES], env)
        assert up.returncode == 0, up.stdout + up.stderr
        yield home, env, trace, demo_data
    finally:
        subprocess.run(
            [*STOCKBATCH, "services", "down", "--purge", *SERVICES],
            env=env,
            capture_output=True,
            timeout=300,
            check=False,
        )
        remove_server_home(home)


def test_no_known_secret_outside_its_store(stack: Any, tmp_path: Path) -> None:
    home, env, trace, demo_data = stack
    tag = uuid.uuid4().hex
    chosen = {
        "the admin user's password": f"user-pw-{tag}",
        "the session secret": f"session-secret-{tag}",
        "a wrong Kafka password": f"wrong-kafka-{tag}",
        "a wrong search password": f"wrong-search-{tag}",
        "a wrong PostgreSQL password": f"wrong-pg-{tag}",
        "a refused login's password": f"wrong-login-{tag}",
    }
    env = {**env, "STOCKBATCH_API__SESSION_SECRET": chosen["the session secret"]}
    landing = tmp_path / "kaggle"
    shutil.copytree(demo_data, landing)

    # What a user does: an admin, a run through every secured service, a token, a backup.
    added = trace.run(
        "users add",
        ["users", "add", "alice", "--role", "admin", "--password-stdin"],
        env,
        stdin=chosen["the admin user's password"] + "\n",
    )
    assert added.returncode == 0, added.stdout + added.stderr
    ran = trace.run("run", ["run", "--path", str(landing), "--transport", "kafka"], env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    made = trace.run("tokens create", ["tokens", "create", "alice"], env)
    assert made.returncode == 0, made.stdout + made.stderr
    tokens = re.findall(r"\b[A-Za-z0-9_\-]{32,}\b", made.stdout)
    assert tokens, f"no token in the output of `tokens create`:\n{made.stdout}"
    token = tokens[-1]
    # The token is shown once, by design, by the command that makes it: nowhere else.
    del trace.outputs["tokens create"]
    backup = tmp_path / "backup"
    saved = trace.run("backup create", ["backup", "create", "--out", str(backup)], env)
    assert saved.returncode == 0, saved.stdout + saved.stderr

    # The API: logins (one refused) and reads, as a browser and with the bearer token.
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            if k.startswith("STOCKBATCH_"):
                mp.setenv(k, v)
        with TestClient(create_app(Settings())) as client:
            for password in (
                chosen["a refused login's password"],
                chosen["the admin user's password"],
            ):
                form = client.get("/login")
                csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
                assert csrf, form.text
                client.post(
                    "/login",
                    data={"username": "alice", "password": password, "csrf": csrf[1], "next": "/"},
                    follow_redirects=False,
                )
            pages = [client.get(p) for p in ("/", "/quality", "/admin", "/search?q=A")]
            assert all(p.status_code == 200 for p in pages), [p.status_code for p in pages]
            client.cookies.clear()
            bearer = {"Authorization": f"Bearer {token}"}
            for route in ("/api/v1/runs", "/api/v1/catalog", "/api/v1/audit", "/api/v1/me"):
                got = client.get(route, headers=bearer)
                assert got.status_code == 200, (route, got.text)
                trace.outputs[f"GET {route}"] = got.text

    # Three failures on a wrong password: each a clear error, none repeating it.
    wrong_pg = urlsplit(recorded_endpoints(home)["postgresql"]["loader_url"])
    wrong_login = f"{wrong_pg.username}:{chosen['a wrong PostgreSQL password']}"
    wrong_url = wrong_pg._replace(
        netloc=f"{wrong_login}@{wrong_pg.hostname}:{wrong_pg.port}"
    ).geturl()
    failing = {
        "ingest (wrong Kafka password)": (
            ["ingest", "--path", str(landing), "--transport", "kafka", "--force"],
            {"STOCKBATCH_KAFKA__SASL_PASSWORD": chosen["a wrong Kafka password"]},
        ),
        "load (wrong search password)": (
            ["load", "--search-only"],
            {"STOCKBATCH_SEARCH__PASSWORD": chosen["a wrong search password"]},
        ),
        "load (wrong PostgreSQL password)": (
            ["load", "--force"],
            {"STOCKBATCH_WAREHOUSE__URL": wrong_url},
        ),
    }
    for what, (args, extra) in failing.items():
        failed = trace.run(what, args, {**env, **extra})
        assert failed.returncode != 0, f"{what} should fail:\n{failed.stdout}{failed.stderr}"
        assert "Traceback" not in failed.stderr, failed.stderr
    for what, args in (
        ("audit", ["audit", "--json"]),
        ("runs", ["runs"]),
        ("catalog", ["catalog"]),
    ):
        shown = trace.run(what, args, env)
        assert shown.returncode == 0, shown.stdout + shown.stderr

    # The secrets: the chosen ones, the token, and every generated password.
    generated: set[str] = set()
    _secrets_in(recorded_endpoints(home), generated)
    secrets = dict(chosen)
    secrets["the bearer token"] = token
    for i, value in enumerate(sorted(generated)):
        if len(value) >= MIN_SECRET:
            secrets[f"generated password #{i}"] = value
    assert len(secrets) >= len(chosen) + 1 + 4, f"too few generated passwords found: {generated}"

    leaks: list[str] = []
    stores: set[str] = set()
    for root in (home, backup):
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            try:
                data = path.read_bytes()
            except OSError:
                continue
            found = _hits(data, secrets)
            if not found:
                continue
            pattern = _stored(home, path) if root == home else None
            if pattern is None:
                leaks.append(f"{path}: {', '.join(found)}")
                continue
            stores.add(pattern)
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                leaks.append(f"{path}: a secret store readable by others ({oct(mode)})")
    for what, text in trace.outputs.items():
        leaks += [f"output of `{what}`: {name}" for name in _hits(text.encode(), secrets)]
    # The warehouse's run records and audit rows, every column as text.
    owner = recorded_endpoints(home)["postgresql"]["owner_url"].replace("+psycopg", "")
    with psycopg.connect(owner, connect_timeout=10) as conn:
        for table in ("pipeline_runs", "audit_log", "data_quality", "api_users", "api_tokens"):
            rows = conn.execute(f"SELECT t::text FROM {table} t").fetchall()
            assert table != "audit_log" or rows, "the API calls and logins left no audit row"
            text = "\n".join(r[0] for r in rows).encode()
            leaks += [f"table {table}: {name}" for name in _hits(text, secrets)]
    # Every process's command line (visible to any user with `ps`).
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        leaks += [f"command line of pid {proc.name}: {n}" for n in _hits(cmdline, secrets)]

    assert not leaks, "secrets outside their stores:\n" + "\n".join(leaks)
    assert "services.json" in stores, "the scan found no generated password at all"
    print(f"scanned for {len(secrets)} secrets; stores holding one: {sorted(stores)}")
