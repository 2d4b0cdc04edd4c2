"""PostgreSQL over verified TLS: the session server (``pg``) accepts TCP clients over TLS
only, verified against the home's CA; ``services up postgresql --insecure`` keeps a
plain listener and says so (one smoke test, on a server of its own)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs

import psycopg
import pytest
import sqlalchemy as sa

from stockbatch.services import recorded_endpoints, tls
from stockbatch.services.postgresql import INSECURE_WARNING, PostgresService
from stockbatch.warehouse import db
from support.services import remove_server_home, server_home

from .conftest import Postgres

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

SSL_IN_USE = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


def _libpq(url: str) -> str:
    """A SQLAlchemy psycopg URL as a libpq URI (the query is passed on unchanged)."""
    return url.replace("+psycopg", "", 1)


def test_recorded_urls_require_verified_tls(pg: Postgres) -> None:
    record = recorded_endpoints(pg.home)["postgresql"]
    ca = tls.ca_file(pg.home)
    assert record["tls"] is True and record["ca_file"] == str(ca)
    for role in ("owner", "loader", "reader"):
        query = sa.make_url(record[f"{role}_url"]).query
        assert query == {"sslmode": "verify-full", "sslrootcert": str(ca)}
    assert parse_qs(record["url"].split("?", 1)[1]) == {
        "sslmode": ["verify-full"],
        "sslrootcert": [str(ca)],
    }


def test_verify_full_with_the_ca_connects_over_tls(pg: Postgres) -> None:
    with psycopg.connect(_libpq(pg.service.url("loader")), connect_timeout=10) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute(SSL_IN_USE).fetchone() == (True,)
    # The warehouse's own engine (SQLAlchemy, psycopg dialect) on the recorded URL.
    engine = db.engine_for(recorded_endpoints(pg.home)["postgresql"]["reader_url"])
    with engine.connect() as conn:
        assert conn.execute(sa.text(SSL_IN_USE)).scalar_one() is True
    engine.dispose()


def test_a_client_without_tls_is_refused(pg: Postgres) -> None:
    plain = sa.make_url(pg.service.url("loader")).update_query_dict(
        {"sslmode": "disable"}, append=False
    )
    plain = plain.difference_update_query(["sslrootcert"])
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(_libpq(plain.render_as_string(hide_password=False)), connect_timeout=10)


def test_a_server_certificate_from_another_ca_fails_verification(
    pg: Postgres, tmp_path: Path
) -> None:
    other = tls.ensure_ca(tmp_path / "other-home")
    wrong = sa.make_url(pg.service.url("loader")).update_query_dict(
        {"sslrootcert": str(other.cert_file)}
    )
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(_libpq(wrong.render_as_string(hide_password=False)), connect_timeout=10)


def test_insecure_keeps_a_plain_listener_and_says_so(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """``services up postgresql --insecure`` (the CLI): a warning, a plain TCP listener,
    URLs without TLS; asking for TLS while it runs is refused."""
    home = server_home(tmp_path_factory, "pg-insecure")
    cli = [sys.executable, "-m", "stockbatch.cli.services"]
    env = {**os.environ, "COLUMNS": "200"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, *args, "--home", str(home)],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
            check=False,
        )

    try:
        done = run("up", "postgresql", "--insecure")
        assert done.returncode == 0, done.stdout + done.stderr
        assert INSECURE_WARNING.split(":")[0] in " ".join((done.stdout + done.stderr).split())
        assert "NO TLS" in done.stdout
        assert tls.ca_file(home).exists()  # the CA is made by any `services up`
        record = recorded_endpoints(home)["postgresql"]
        assert record["tls"] is False and "sslmode" not in record["loader_url"]
        with psycopg.connect(
            _libpq(record["loader_url"]) + "?sslmode=disable", connect_timeout=10
        ) as conn:
            assert conn.execute(SSL_IN_USE).fetchone() == (False,)
        again = run("up", "postgresql")
        assert again.returncode == 1 and "without TLS" in again.stderr
    finally:
        PostgresService(home).purge()
        remove_server_home(home)
