"""The local PostgreSQL service: up, status, restart (keeps data and port), down, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import sqlalchemy as sa

from stockbatch.services import get_service, recorded_endpoints
from stockbatch.services.postgresql import LOADER, OWNER, READER, PostgresService
from stockbatch.warehouse import db

from .conftest import Postgres

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


def test_up_records_three_role_urls_and_status_hides_them(pg: Postgres) -> None:
    record = recorded_endpoints(pg.home)["postgresql"]
    port = pg.service.status().endpoint["port"]
    assert record["host"] == "127.0.0.1" and record["port"] == port
    assert record["database"] == "stockbatch"
    for role, user in (("owner", OWNER), ("loader", LOADER), ("reader", READER)):
        url = sa.make_url(record[f"{role}_url"])
        assert (url.drivername, url.username, url.port) == ("postgresql+psycopg", user, port)
        assert url.password  # generated
    assert len({record[f"{r}_url"] for r in ("owner", "loader", "reader")}) == 3
    status = pg.service.status()
    assert status.running and status.pid
    assert "password" not in json.dumps(status.to_dict()) and "_url" not in str(status.endpoint)
    # The registry builds the same service; a second up() keeps the running server.
    again = get_service("postgresql", pg.home).up()
    assert again.pid == status.pid


def test_listens_on_loopback_only_with_passwords(pg: Postgres) -> None:
    with pg.superuser() as conn:
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ("
                "'listen_addresses', 'fsync', 'synchronous_commit', 'full_page_writes', "
                "'password_encryption', 'unix_socket_directories')"
            ).fetchall()
        )
        hba = conn.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules").fetchall()
    assert settings["listen_addresses"] == "127.0.0.1"
    # Durability is never traded for load speed on the system of record.
    assert (settings["fsync"], settings["synchronous_commit"], settings["full_page_writes"]) == (
        "on",
        "on",
        "on",
    )
    assert settings["password_encryption"] == "scram-sha-256"
    assert settings["unix_socket_directories"] == str(pg.service.socket_dir)
    assert hba == [("scram-sha-256",)]
    wrong = sa.make_url(pg.service.url("loader")).set(password="wrong")
    with pytest.raises(db.WarehouseUnavailable, match="password authentication failed"):
        db.engine_for(wrong.render_as_string(hide_password=False))


def test_restart_keeps_data_port_and_passwords(pg: Postgres, warehouse: db.WarehouseUrls) -> None:
    engine = db.engine_for(warehouse.loader)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO instruments (symbol, name) VALUES ('KEEP', 'kept')"))
    engine.dispose()
    before = pg.service.status()
    after = pg.service.restart()
    assert after.running and after.pid != before.pid
    assert after.endpoint["port"] == before.endpoint["port"]
    engine = db.engine_for(warehouse.reader)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT name FROM instruments")).scalar_one() == "kept"
    engine.dispose()


def test_down_forgets_the_endpoint_and_up_brings_it_back(pg: Postgres) -> None:
    port = pg.service.status().endpoint["port"]
    try:
        assert pg.service.down() is True
        assert pg.service.status().state == "stopped"
        assert "postgresql" not in recorded_endpoints(pg.home)
        assert pg.service.down() is False  # already stopped: nothing to do
        # Another object for the same home: port and passwords come from state.json.
        status = PostgresService(pg.home).up()
        assert status.running and status.endpoint["port"] == port
        assert recorded_endpoints(pg.home)["postgresql"]["port"] == port
    finally:
        pg.ensure_running()


def test_cli_status_lists_postgresql(pg: Postgres) -> None:
    cmd = [sys.executable, "-m", "stockbatch.cli.services", "status", "postgresql"]
    done = subprocess.run(
        [*cmd, "--home", str(pg.home)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "postgresql: running at postgresql://127.0.0.1:" in done.stdout
    done = subprocess.run(
        [*cmd, "--home", str(pg.home), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert json.loads(done.stdout)["postgresql"]["state"] == "running"
    assert "password" not in done.stdout.lower()
