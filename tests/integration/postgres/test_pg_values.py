"""What goes in comes out verbatim; the database refuses impossible bars; both warehouses agree."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from stockbatch.warehouse import bulk, db, loader, models, queries

from .conftest import Gold

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

DAILY_KEY = ("symbol", "trade_date")

NASTY = [
    "O'REILLY",
    'SAY "HI"',
    "A;B",
    "'; DROP TABLE daily_bars; --",
    "Robert'); DROP TABLE instruments;--",
    "\\x00\\n%_*",
    "ÄÖÜ-股票-🚀",
    "tab\tnew\nline\r",
    "",
]
"""Symbols (all <= 64 characters, the column's width) shaped like attacks or encoding traps."""


def _nasty_instruments() -> pa.Table:
    names = [f'{s} — name «quoted» "x" ; -- /* */ {i}' for i, s in enumerate(NASTY)]
    names[0] = "Ω" * 500  # 500 characters, multi-byte
    names[1] = "x" * 499 + "'"
    return pa.table(
        {
            "symbol": NASTY,
            "name": names,
            "exchange": ["NYSE'--"] * len(NASTY),
            "is_etf": [True, False, None, True, False, None, True, False, None],
            "source": ["kaggle"] * len(NASTY),
        }
    )


@pytest.fixture(params=["postgresql", "sqlite"])
def any_warehouse(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[sa.Engine, sa.Engine]]:
    """(loader engine, reader engine) on PostgreSQL or on a SQLite file, both migrated."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'wh.db'}"
        db.migrate(url)
        engine = db.engine_for(url)
        yield engine, engine
        engine.dispose()
        return
    urls: db.WarehouseUrls = request.getfixturevalue("warehouse")
    load, read = db.engine_for(urls.loader), db.engine_for(urls.reader)
    yield load, read
    load.dispose()
    read.dispose()


def test_injection_shaped_and_unicode_values_round_trip(
    any_warehouse: tuple[sa.Engine, sa.Engine],
) -> None:
    load, read = any_warehouse
    table = _nasty_instruments()
    stats = loader.load_table(load, "instruments", [table], key=("symbol",))
    assert stats.inserted == len(NASTY)
    back = queries.instruments(read)
    assert back.equals(table.sort_by("symbol"))
    # Searching with the same strings is parameterised too: they match literally.
    for needle in ("'; DROP TABLE", "%_", "'--", "🚀"):
        found = queries.instruments(read, search=needle)
        expected = [
            s
            for s, n in zip(table["symbol"].to_pylist(), table["name"].to_pylist(), strict=True)
            if s.lower().startswith(needle.lower()) or needle.lower() in (n or "").lower()
        ]
        assert sorted(found["symbol"].to_pylist()) == sorted(expected), needle
    data_tables = set(models.metadata.tables) - set(models.SECRET_TABLES)
    assert set(queries.table_counts(read)) == data_tables  # nothing dropped
    # And a rerun of the same strings changes nothing.
    assert loader.load_table(load, "instruments", [table], key=("symbol",)).changed == 0


def _bar(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "symbol": "GUARD",
        "trade_date": dt.date(2024, 1, 2),
        "open": 10.0,
        "high": 11.0,
        "low": 9.0,
        "close": 10.5,
        "adj_close": 10.5,
        "volume": 100.0,
        "source": "kaggle",
    }
    row.update(overrides)
    return row


@pytest.mark.parametrize(
    ("bad", "constraint"),
    [
        ({"high": 8.0}, "ck_daily_bars_high_not_below_low"),
        ({"open": 0.0}, "ck_daily_bars_prices_positive"),
        ({"low": -1.0}, "ck_daily_bars_prices_positive"),
        ({"volume": -5.0}, "ck_daily_bars_volume_not_negative"),
    ],
)
def test_the_database_refuses_impossible_bars(
    any_warehouse: tuple[sa.Engine, sa.Engine], bad: dict[str, object], constraint: str
) -> None:
    load, _ = any_warehouse
    with pytest.raises(sa.exc.IntegrityError) as info, load.begin() as conn:
        conn.execute(models.daily_bars.insert().values(_bar(**bad)))
    if load.dialect.name == "postgresql":
        assert constraint in str(info.value)
    # Through the loader too: the whole load is refused, nothing is written.
    rows = [_bar(symbol="OK1"), _bar(symbol="BAD", **bad)]
    batch = pa.Table.from_pylist(rows).cast(
        pa.schema(
            [
                (k, pa.date32() if k == "trade_date" else v.type)
                for k, v in zip(rows[0], pa.Table.from_pylist(rows).columns, strict=True)
            ]
        )
    )
    with pytest.raises(sa.exc.IntegrityError):
        loader.load_table(load, "daily_bars", [batch], key=DAILY_KEY)
    assert queries.table_counts(load)["daily_bars"] == 0


def test_sqlite_and_postgresql_export_identical_tables(
    warehouse: db.WarehouseUrls, gold: Gold, tmp_path: Path
) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'wh.db'}"
    db.migrate(sqlite_url)
    lite = db.engine_for(sqlite_url)
    pg_load, pg_read = db.engine_for(warehouse.loader), db.engine_for(warehouse.reader)
    try:
        for engine in (lite, pg_load):
            with loader.run_transaction(engine) as tx:
                tx.load_table("instruments", [gold.instruments], key=("symbol",))
                tx.load_table("daily_bars", [gold.bars], key=DAILY_KEY)
                tx.load_table("daily_features", [gold.features], key=DAILY_KEY)
                tx.load_table("quarterly_features", [gold.quarterly], key=("symbol", "quarter"))
        some = gold.instruments["symbol"].to_pylist()[:3]
        quarter = gold.quarterly["quarter"][0].as_py()
        first_date = gold.daily["trade_date"][0].as_py()
        for what, read in {
            "quarterly": lambda e: queries.quarterly_table(e),
            "quarterly by quarter": lambda e: queries.quarterly_table(e, quarters=[quarter]),
            "daily": lambda e: pa.concat_tables(queries.daily_table(e)),
            "daily of 3 symbols": lambda e: pa.concat_tables(
                queries.daily_table(e, some, start=first_date)
            ),
            "instruments": lambda e: queries.instruments(e, search="a"),
        }.items():
            expected, got = read(lite), read(pg_read)
            assert got.num_rows > 0, what
            assert got.schema == expected.schema, what
            assert got.equals(expected), what
        # And both equal what was loaded (NaN stored as NULL on both).
        daily = pa.concat_tables(queries.daily_table(pg_read))
        assert daily["close"].equals(
            gold.daily.sort_by([("symbol", "ascending"), ("trade_date", "ascending")])["close"]
        )
        assert queries.last_dates(lite) == queries.last_dates(pg_read)
    finally:
        for engine in (lite, pg_load, pg_read):
            engine.dispose()


def test_migrations_on_postgresql(warehouse: db.WarehouseUrls) -> None:
    owner = db.engine_for(warehouse.owner)
    try:
        assert db.current_revision(owner) == "0004"
        with owner.connect() as conn:
            indexes = dict(
                conn.exec_driver_sql(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'instruments'"
                ).all()
            )
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), models.metadata
            )
        assert "gin (lower(name) gin_trgm_ops)" in indexes["ix_instruments_lower_name"]
        assert "text_pattern_ops" in indexes["ix_instruments_lower_symbol"]
        # models.py and the migrated schema agree, but for 0002's PostgreSQL-only expression
        # indexes, which live in the migration alone (SQLAlchemy cannot declare them per dialect
        # in a way SQLite's create_all and Alembic's comparison both honour).
        pg_only = {"ix_instruments_lower_name", "ix_instruments_lower_symbol"}
        assert [d for d in diff if not (d[0] == "remove_index" and d[1].name in pg_only)] == []
        with owner.begin() as conn:  # down to 0001 and back up, as the owner
            cfg = db.alembic_config(warehouse.owner)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0001")
        assert "ix_instruments_lower_name" not in {
            ix["name"] for ix in sa.inspect(owner).get_indexes("instruments")
        }
        db.migrate(warehouse.owner)
        assert db.current_revision(owner) == "0004"
    finally:
        owner.dispose()


def test_search_can_use_its_indexes(warehouse: db.WarehouseUrls) -> None:
    engine = db.engine_for(warehouse.loader)
    try:
        many = pa.table(
            {
                "symbol": [f"S{i:05d}" for i in range(20_000)],
                "name": [f"Company number {i} holdings" for i in range(20_000)],
            }
        )
        loader.load_table(engine, "instruments", [many], key=("symbol",))
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE instruments")
            # The planner may still prefer a scan of so small a table; forbidding scans shows
            # that the indexes match the predicates queries.instruments() sends (%% is the
            # driver's escape of %).
            conn.exec_driver_sql("SET enable_seqscan = off")
            plans = {
                index: "\n".join(
                    conn.exec_driver_sql(f"EXPLAIN SELECT symbol FROM instruments WHERE {where}")
                    .scalars()
                    .all()
                )
                for index, where in {
                    "ix_instruments_lower_name": "lower(name) LIKE '%%ber 1234%%' ESCAPE '\\'",
                    "ix_instruments_lower_symbol": "lower(symbol) LIKE 's0123%%' ESCAPE '\\'",
                }.items()
            }
            conn.rollback()
        for index, plan in plans.items():
            assert index in plan, plan
        assert queries.instruments(engine, search="ber 1234 ")["symbol"].to_pylist() == ["S01234"]
    finally:
        engine.dispose()


def test_binary_copy_encodes_every_kind_exactly(warehouse: db.WarehouseUrls) -> None:
    from stockbatch.warehouse import pgcopy

    meta = sa.MetaData()
    table = sa.Table(
        "kinds",
        meta,
        sa.Column("f", sa.Double()),
        sa.Column("i2", sa.SmallInteger()),
        sa.Column("i4", sa.Integer()),
        sa.Column("i8", sa.BigInteger()),
        sa.Column("b", sa.Boolean()),
        sa.Column("d", sa.Date()),
        sa.Column("ts", sa.DateTime(timezone=True)),
        sa.Column("t", sa.Text()),
        prefixes=["TEMPORARY"],
    )
    utc = dt.UTC
    rows = {
        "f": [1.5, None, -0.0, 1e-308, 0.1 + 0.2, float("inf")],
        "i2": [1, None, -32768, 32767, 0, 7],
        "i4": [1, None, -(2**31), 2**31 - 1, 0, 7],
        "i8": [1, None, -(2**63), 2**63 - 1, 0, 7],
        "b": [True, None, False, True, False, True],
        "d": [
            dt.date(2000, 1, 1),
            None,
            dt.date(1962, 1, 2),
            dt.date(2099, 12, 31),
            dt.date(1999, 12, 31),
            dt.date(1970, 1, 1),
        ],
        "ts": [
            dt.datetime(2000, 1, 1, tzinfo=utc),
            None,
            dt.datetime(1969, 7, 20, 20, 17, tzinfo=utc),
        ]
        + [dt.datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=utc)] * 3,
        "t": ["a", None, "", "ü'\"\\\n", "x" * 5000, "🚀"],
    }
    batch = (
        pa.table(rows)
        .cast(
            pa.schema(
                [
                    ("f", pa.float64()),
                    ("i2", pa.int16()),
                    ("i4", pa.int32()),
                    ("i8", pa.int64()),
                    ("b", pa.bool_()),
                    ("d", pa.date32()),
                    ("ts", pa.timestamp("us", "UTC")),
                    ("t", pa.string()),
                ]
            )
        )
        .to_batches()[0]
    )
    columns = list(rows)
    kinds = pgcopy.binary_kinds(table, columns)
    assert kinds is not None
    engine = db.engine_for(warehouse.loader)
    try:
        with engine.begin() as conn:
            table.create(conn)
            # Sliced batches too: Arrow offsets into shared buffers must be honoured.
            n = bulk.bulk_insert(conn, table, columns, iter([batch.slice(0, 2), batch.slice(2)]))
            back = conn.execute(sa.select(table)).all()
    finally:
        engine.dispose()
    assert n == 6
    assert [tuple(r) for r in back] == list(zip(*rows.values(), strict=True))
