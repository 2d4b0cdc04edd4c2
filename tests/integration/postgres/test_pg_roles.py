"""Least privilege: the owner migrates, the loader writes rows only, the reader only reads."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from stockbatch.warehouse import db, loader, queries

from .conftest import Gold

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

DDL = [
    "CREATE TABLE evil (a int)",
    "ALTER TABLE daily_bars ADD COLUMN evil int",
    "ALTER TABLE daily_bars DROP CONSTRAINT ck_daily_bars_high_not_below_low",
    "DROP TABLE daily_bars",
    "TRUNCATE daily_bars",
    "CREATE INDEX evil_ix ON daily_bars (close)",
    "UPDATE alembic_version SET version_num = '0001'",
]


def _refused(engine: sa.Engine, statement: str) -> str:
    """Run ``statement`` in a transaction that is rolled back; the error text if refused."""
    with engine.connect() as conn:
        try:
            conn.exec_driver_sql(statement)
        except sa.exc.ProgrammingError as exc:
            return str(exc.orig).splitlines()[0]
        finally:
            conn.rollback()
    return ""


@pytest.mark.parametrize("role", ["loader", "reader"])
def test_loader_and_reader_cannot_change_the_schema(warehouse: db.WarehouseUrls, role: str) -> None:
    engine = db.engine_for(getattr(warehouse, role))
    try:
        for statement in DDL:
            error = _refused(engine, statement)
            assert "permission denied" in error or "must be owner" in error, (statement, error)
    finally:
        engine.dispose()


def test_reader_can_only_read(warehouse: db.WarehouseUrls, gold: Gold) -> None:
    loader.load_table(
        db.engine_for(warehouse.loader), "instruments", [gold.instruments], key=("symbol",)
    )
    reader = db.engine_for(warehouse.reader)
    try:
        assert queries.instruments(reader).num_rows == gold.instruments.num_rows
        for statement in (
            "INSERT INTO instruments (symbol) VALUES ('NOPE')",
            "UPDATE instruments SET name = 'x'",
            "DELETE FROM instruments",
            "CREATE TEMPORARY TABLE scratch (a int)",
        ):
            assert "permission denied" in _refused(reader, statement), statement
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            loader.load_table(reader, "instruments", [gold.instruments], key=("symbol",))
    finally:
        reader.dispose()


def test_loader_loads_every_table_of_a_run(warehouse: db.WarehouseUrls, gold: Gold) -> None:
    engine = db.engine_for(warehouse.loader)
    try:
        with loader.run_transaction(engine) as tx:
            tx.load_table("instruments", [gold.instruments], key=("symbol",))
            tx.load_table("daily_bars", [gold.bars], key=("symbol", "trade_date"))
            tx.load_table("daily_features", [gold.features], key=("symbol", "trade_date"))
            tx.load_table("quarterly_features", [gold.quarterly], key=("symbol", "quarter"))
            tx.replace_quarantine([gold.quarantine])
            tx.record_run({"run_id": "r1", "status": "ok", "counts": {"rows_in": 1}})
            assert tx.audit("test", "load", {"run_id": "r1"}) > 0  # needs the id sequence
        counts = queries.table_counts(engine)
    finally:
        engine.dispose()
    assert counts["daily_bars"] == gold.daily.num_rows
    assert counts["quarantine"] == gold.quarantine.num_rows
    assert counts["pipeline_runs"] == counts["audit_log"] == 1


def test_migrate_as_owner_grants_new_tables(warehouse: db.WarehouseUrls) -> None:
    # A table the owner adds later (as a future migration would) is usable by both roles.
    owner = db.engine_for(warehouse.owner)
    with owner.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE later (a int)")
        db.grant_roles(conn)
    owner.dispose()
    loader_engine = db.engine_for(warehouse.loader)
    with loader_engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO later VALUES (1)")
    loader_engine.dispose()
    reader = db.engine_for(warehouse.reader)
    with reader.connect() as conn:
        assert conn.exec_driver_sql("SELECT a FROM later").scalar_one() == 1
    reader.dispose()
