"""Backup and restore of a PostgreSQL warehouse (``pg_dump -Fc`` / ``pg_restore``) on the
session's real server: the round trip of tests/unit/protect/test_backup.py."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

from integration.conftest import Postgres
from stockbatch.warehouse import db
from unit.protect.protect_support import append_day, exports, landing_copy, ok, run, sb

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture
def databases(pg: Postgres) -> Iterator[list[dict[str, str]]]:
    """Three empty databases of their own (source, restore target, control), dropped after."""
    pg.ensure_running()
    names = [f"bk_{uuid.uuid4().hex[:10]}" for _ in range(3)]
    yield [pg.service.create_database(n) for n in names]
    pg.ensure_running()
    for n in names:
        pg.service.drop_database(n)


def _env(urls: dict[str, str]) -> dict[str, str]:
    return {
        "STOCKBATCH_WAREHOUSE__KIND": "postgresql",
        "STOCKBATCH_WAREHOUSE__URL": urls["loader"],
        "STOCKBATCH_WAREHOUSE__OWNER_URL": urls["owner"],
        "STOCKBATCH_WAREHOUSE__READER_URL": urls["reader"],
        "STOCKBATCH_PROGRESS": "false",
    }


def _count(url: str, table: str) -> int:
    engine = db.engine_for(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def test_postgresql_backup_restore_round_trip(
    databases: list[dict[str, str]], demo_data: Path, tmp_path: Path
) -> None:
    source, target, control = (_env(u) for u in databases)
    landing = landing_copy(demo_data, tmp_path)
    home, restored, twin = tmp_path / "home", tmp_path / "restored", tmp_path / "control"
    assert run(home, landing, source)["status"] == "succeeded"
    assert run(twin, landing, control)["status"] == "succeeded"
    ok(home, "export", "snapshot", "--quarter", "2023Q1", env=source)
    before = exports(home, tmp_path / "before", source)

    out = tmp_path / "bk"
    line = ok(home, "backup", "create", "--out", str(out), "-q", env=source)
    assert "postgresql warehouse dumped" in line
    manifest = json.loads((out / "manifest.json").read_text())
    wh = manifest["warehouse"]
    assert wh["kind"] == "postgresql" and wh["file"] == "warehouse/warehouse.pgdump"
    assert (out / wh["file"]).read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
    assert "pg_dump (PostgreSQL)" in wh["pg_dump"]
    # No password anywhere in the manifest (URLs are recorded masked).
    password = sa.make_url(databases[0]["owner"]).password
    assert password and password not in json.dumps(manifest) and "***" in wh["source"]
    assert "is intact" in ok(home, "backup", "verify", str(out), "-q")

    shutil.rmtree(home)
    line = ok(restored, "backup", "restore", str(out), "-q", env=target)
    assert "warehouse restored into postgresql" in line
    # The reader role reads the restored tables (its grants were given again).
    assert _count(databases[1]["reader"], "quarterly_features") == _count(
        databases[0]["owner"], "quarterly_features"
    )
    after = exports(restored, tmp_path / "after", target)
    assert after[0] == before[0]
    assert after[1].equals(before[1])
    assert "unchanged" in ok(restored, "export", "snapshot", "--quarter", "2023Q1", env=target)

    # The target now holds stockbatch tables: a second restore into it is refused.
    code, output = sb(tmp_path / "again", "backup", "restore", str(out), "-q", env=target)
    assert code == 1 and "is not empty" in output and "Traceback" not in output
    # A SQLite home cannot take the PostgreSQL dump.
    code, output = sb(tmp_path / "lite", "backup", "restore", str(out), "-q")
    assert code == 1 and "STOCKBATCH_WAREHOUSE__KIND=postgresql" in output

    # The next day continues in the restored home as in the control that never moved.
    append_day(landing, 0)
    got, want = run(restored, landing, target), run(twin, landing, control)
    assert got["status"] == want["status"] == "succeeded"
    for key in ("rows_landed", "rows_in", "rows_clean", "rows_changed_in_warehouse"):
        assert got[key] == want[key], key
    got_x = exports(restored, tmp_path / "g", target)
    want_x = exports(twin, tmp_path / "w", control)
    assert pl.read_parquet(got_x[0]).equals(pl.read_parquet(want_x[0]))
    assert got_x[1].equals(want_x[1])
