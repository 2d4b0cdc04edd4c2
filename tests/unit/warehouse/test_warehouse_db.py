"""Engine settings and Alembic migrations of the warehouse."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import stockbatch
from stockbatch.warehouse import db, models

HEAD = "0004"  # the newest migration

TABLES = {
    "instruments",
    "daily_bars",
    "daily_features",
    "quarterly_features",
    "quarantine",
    "pipeline_runs",
    "data_quality",
    "audit_log",
}


def test_migrate_creates_folder_and_is_idempotent(url: str, tmp_path: Path) -> None:
    assert not (tmp_path / "wh").exists()
    db.migrate(url)
    assert (tmp_path / "wh" / "warehouse.db").is_file()
    engine = db.engine_for(url)
    try:
        assert db.current_revision(engine) == HEAD
        before = sa.inspect(engine).get_table_names()
        db.migrate(url)  # second run: nothing to do, nothing fails
        assert db.current_revision(engine) == HEAD
        assert sa.inspect(engine).get_table_names() == before
        assert set(before) >= TABLES
    finally:
        engine.dispose()


def test_sqlite_pragmas(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_models_and_migrations_agree(engine: sa.Engine) -> None:
    # What autogenerate would emit against the migrated database: must be nothing.
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, models.metadata)
    assert diff == []


def test_keyed_tables_have_the_contract_keys_and_indexes(engine: sa.Engine) -> None:
    insp = sa.inspect(engine)
    assert insp.get_pk_constraint("daily_bars")["constrained_columns"] == ["symbol", "trade_date"]
    assert insp.get_pk_constraint("daily_features")["constrained_columns"] == [
        "symbol",
        "trade_date",
    ]
    assert insp.get_pk_constraint("quarterly_features")["constrained_columns"] == [
        "symbol",
        "quarter",
    ]
    assert insp.get_pk_constraint("data_quality")["constrained_columns"] == ["run_id", "metric"]
    assert [ix["column_names"] for ix in insp.get_indexes("quarterly_features")] == [["quarter"]]
    for name, key in models.UPSERT_KEYS.items():
        assert insp.get_pk_constraint(name)["constrained_columns"] == list(key)


def test_downgrade_then_upgrade(url: str) -> None:
    db.migrate(url)
    engine = db.engine_for(url)
    try:
        with engine.begin() as conn:
            cfg = db.alembic_config(url)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert set(sa.inspect(engine).get_table_names()) == {"alembic_version"}
        db.migrate(url)
        assert set(sa.inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def test_packaged_alembic_files_exist() -> None:
    assert db.ALEMBIC_INI.is_file()
    assert (db.MIGRATIONS_DIR / "env.py").is_file()
    assert (db.MIGRATIONS_DIR / "script.py.mako").is_file()
    assert (db.MIGRATIONS_DIR / "versions" / "0001_initial.py").is_file()
    assert (db.MIGRATIONS_DIR / "versions" / "0002_search_indexes.py").is_file()


def test_alembic_cli_with_the_packaged_ini(url: str, tmp_path: Path) -> None:
    # The command line path of env.py (its own engine, -x url=...), in a subprocess so its
    # logging configuration stays out of this process.
    src = str(Path(stockbatch.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    base = [sys.executable, "-m", "alembic", "-c", str(db.ALEMBIC_INI), "-x", f"url={url}"]
    subprocess.run([*base, "upgrade", "head"], check=True, env=env, cwd=tmp_path)
    engine = db.engine_for(url)
    try:
        assert db.current_revision(engine) == HEAD
        assert set(sa.inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def test_v1_warehouse_with_bars_upgrades_to_a_nullable_open(url: str) -> None:
    # Contract v2 (0003): a v1 warehouse keeps its rows; a null open is stored, a zero or
    # negative open is still refused by the CHECK constraint.
    db.migrate(url, "0002")
    engine = db.engine_for(url)
    bar = {"symbol": "A", "high": 2.0, "low": 1.0, "close": 1.5, "volume": 10.0, "source": "s"}
    try:
        with engine.begin() as conn:
            conn.execute(
                models.daily_bars.insert(),
                [{**bar, "trade_date": dt.date(2020, 1, 2), "open": 1.2}],
            )
        db.migrate(url)
        with engine.begin() as conn:
            conn.execute(
                models.daily_bars.insert(),
                [{**bar, "trade_date": dt.date(2020, 1, 3), "open": None}],
            )
            rows = conn.execute(sa.select(models.daily_bars.c.open).order_by("trade_date")).all()
        assert [r.open for r in rows] == [1.2, None]
        for bad in (0.0, -1.0):
            try:
                with engine.begin() as conn:
                    conn.execute(
                        models.daily_bars.insert(),
                        [{**bar, "trade_date": dt.date(2020, 1, 6), "open": bad}],
                    )
            except sa.exc.IntegrityError:
                continue
            raise AssertionError(f"open={bad} was stored")
    finally:
        engine.dispose()
