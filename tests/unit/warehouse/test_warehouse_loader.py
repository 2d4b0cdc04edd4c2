"""Transactional upserts, run-scoped replaces, run records and the audit log."""

from __future__ import annotations

import csv
import datetime as dt
import math
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa

from stockbatch import schema
from stockbatch.warehouse import bulk, loader, models, queries

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "warehouse"
KEY = ("symbol", "trade_date")
D = dt.date


def bars(rows: Sequence[tuple[Any, ...]]) -> pa.Table:
    """Hand-made daily bars (symbol, date, o, h, l, c, adj, vol, source) for edge cases."""
    cols = list(zip(*rows, strict=True))
    return pa.Table.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(cols, _BAR_SCHEMA, strict=True)],
        schema=_BAR_SCHEMA,
    )


_BAR_SCHEMA = pa.schema([schema.SILVER_BARS.field(n) for n in schema.DAILY_BAR_COLUMNS])


def stored_bars(engine: sa.Engine) -> list[tuple[object, ...]]:
    t = models.daily_bars
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(t).order_by(t.c.symbol, t.c.trade_date))]


def real_brk_bars() -> pa.Table:
    """The first 30 real BRK.B rows of the Kaggle S&P 500 sample."""
    with (FIXTURES / "BRK.B_data_head.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    return bars(
        [
            (
                r["Name"],
                D.fromisoformat(r["date"]),
                float(r["open"]),
                float(r["high"]),
                float(r["low"]),
                float(r["close"]),
                None,
                float(r["volume"]),
                "kaggle-sp500",
            )
            for r in rows
        ]
    )


# --------------------------------------------------------------------------- upsert counting

# Hand-made edge case: 4 stored rows, then a load of 6 rows that is, row by row,
# unchanged, unchanged, changed (close), changed (adj_close null -> value), new, new.
BASE = [
    ("AAA", D(2020, 1, 2), 10.0, 11.0, 9.0, 10.5, None, 100.0, "yahoo"),
    ("AAA", D(2020, 1, 3), 10.5, 12.0, 10.0, 11.0, 10.9, 200.0, "yahoo"),
    ("BBB", D(2020, 1, 2), 5.0, 5.5, 4.5, 5.0, None, 0.0, "kaggle-huge"),
    ("BBB", D(2020, 1, 3), 5.0, 5.5, 4.5, 5.2, None, 50.0, "kaggle-huge"),
]
NEXT = [
    BASE[0],
    BASE[1],
    ("BBB", D(2020, 1, 2), 5.0, 5.5, 4.5, 5.1, None, 0.0, "kaggle-huge"),
    ("BBB", D(2020, 1, 3), 5.0, 5.5, 4.5, 5.2, 5.15, 50.0, "kaggle-huge"),
    ("CCC", D(2020, 1, 2), 1.0, 1.0, 1.0, 1.0, None, 1.0, "yahoo"),
    ("AAA", D(2020, 1, 6), 11.0, 11.5, 10.5, 11.2, None, 300.0, "yahoo"),
]


def test_first_load_inserts_everything(engine: sa.Engine) -> None:
    stats = loader.load_table(engine, "daily_bars", [bars(BASE)], key=KEY)
    assert stats == loader.LoadStats(inserted=4, updated=0, unchanged=0)
    assert stored_bars(engine) == BASE


def test_counts_inserted_updated_unchanged_exactly(engine: sa.Engine) -> None:
    loader.load_table(engine, "daily_bars", [bars(BASE)], key=KEY)
    stats = loader.load_table(engine, "daily_bars", [bars(NEXT)], key=KEY)
    assert stats == loader.LoadStats(inserted=2, updated=2, unchanged=2)
    assert stats.rows == 6
    assert stored_bars(engine) == sorted(NEXT, key=lambda r: (r[0], r[1]))


def test_value_to_null_is_an_update(engine: sa.Engine) -> None:
    # Null-safe comparison both ways: 10.9 -> NULL must be seen as a change.
    loader.load_table(engine, "daily_bars", [bars(BASE)], key=KEY)
    changed = [*BASE[:1], (*BASE[1][:6], None, *BASE[1][7:]), *BASE[2:]]
    stats = loader.load_table(engine, "daily_bars", [bars(changed)], key=KEY)
    assert stats == loader.LoadStats(inserted=0, updated=1, unchanged=3)
    assert stored_bars(engine)[1][6] is None


def test_rerun_with_identical_data_changes_nothing(engine: sa.Engine) -> None:
    real = real_brk_bars()
    first = loader.load_table(engine, "daily_bars", [real], key=KEY)
    assert first == loader.LoadStats(30, 0, 0)
    before = stored_bars(engine)
    # Count every row write the database performs from here on.
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE row_writes (n INTEGER)")
        for event in ("INSERT", "UPDATE", "DELETE"):
            conn.exec_driver_sql(
                f"CREATE TRIGGER count_{event.lower()} AFTER {event} ON daily_bars "
                "BEGIN INSERT INTO row_writes VALUES (1); END"
            )
    again = loader.load_table(engine, "daily_bars", [real], key=KEY)
    assert again == loader.LoadStats(inserted=0, updated=0, unchanged=30)
    assert stored_bars(engine) == before
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM row_writes").scalar() == 0
    changed = real.set_column(5, "close", pa.array([97.25] * 30))  # differs on 29 of 30 rows
    assert loader.load_table(engine, "daily_bars", [changed], key=KEY).updated == 29
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM row_writes").scalar() == 29
    assert before[0] == (
        "BRK.B",
        D(2013, 2, 8),
        97.25,
        97.33,
        96.73,
        97.25,
        None,
        2996000.0,
        "kaggle-sp500",
    )


def test_rerun_does_not_touch_updated_at(engine: sa.Engine) -> None:
    inst = pa.table(
        {
            "symbol": ["A"],
            "name": ["Agilent Technologies, Inc. Common Stock"],
            "exchange": ["N"],
            "is_etf": [False],
            "source": ["kaggle-nasdaq"],
        },
        schema=schema.INSTRUMENTS,
    )
    loader.load_table(engine, "instruments", [inst], key=("symbol",))
    t = models.instruments
    with engine.connect() as conn:
        first = conn.execute(sa.select(t.c.updated_at)).scalar_one()
    assert first is not None
    time.sleep(0.01)
    stats = loader.load_table(engine, "instruments", [inst], key=("symbol",))
    assert stats == loader.LoadStats(0, 0, 1)
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.c.updated_at)).scalar_one() == first
    renamed = inst.set_column(1, "name", pa.array(["Agilent"]))
    assert loader.load_table(engine, "instruments", [renamed], key=("symbol",)) == (
        loader.LoadStats(0, 1, 0)
    )
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.c.updated_at)).scalar_one() > first


def test_batches_may_be_split_and_record_batches(engine: sa.Engine) -> None:
    real = real_brk_bars()
    parts = [real.slice(0, 7), *real.slice(7).to_batches(max_chunksize=5)]
    assert loader.load_table(engine, "daily_bars", parts, key=KEY) == loader.LoadStats(30, 0, 0)
    assert len(stored_bars(engine)) == 30


def test_empty_input_is_a_no_op(engine: sa.Engine) -> None:
    assert loader.load_table(engine, "daily_bars", [], key=KEY) == loader.LoadStats(0, 0, 0)


def test_key_must_be_the_primary_key(engine: sa.Engine) -> None:
    with pytest.raises(ValueError, match="primary key"):
        loader.load_table(engine, "daily_bars", [bars(BASE)], key=("symbol",))


def test_unknown_column_is_refused(engine: sa.Engine) -> None:
    with pytest.raises(ValueError, match="not in table"):
        loader.load_table(
            engine, "daily_bars", [bars(BASE).append_column("oops", pa.array([1] * 4))], key=KEY
        )


# --------------------------------------------------------------------------- atomicity


def test_exception_mid_load_leaves_previous_state(engine: sa.Engine) -> None:
    loader.load_table(engine, "daily_bars", [bars(BASE)], key=KEY)
    before = stored_bars(engine)

    def batches() -> Iterator[pa.Table]:
        yield bars(NEXT[:3])  # already staged when the failure comes
        raise RuntimeError("source died mid-load")

    with pytest.raises(RuntimeError, match="mid-load"):
        loader.load_table(engine, "daily_bars", batches(), key=KEY)
    assert stored_bars(engine) == before
    # The connection is usable afterwards and the temp staging table is gone.
    assert loader.load_table(engine, "daily_bars", [bars(NEXT)], key=KEY) == loader.LoadStats(
        2, 2, 2
    )


def test_constraint_failure_in_merge_rolls_back_the_whole_load(engine: sa.Engine) -> None:
    loader.load_table(engine, "daily_bars", [bars(BASE)], key=KEY)
    before = stored_bars(engine)
    bad = ("ZZZ", D(2020, 1, 2), 1.0, 0.5, 0.9, 1.0, None, 1.0, "yahoo")  # high < low
    with pytest.raises(sa.exc.IntegrityError):
        loader.load_table(engine, "daily_bars", [bars(NEXT), bars([bad])], key=KEY)
    assert stored_bars(engine) == before


@pytest.mark.parametrize(
    "row",
    [
        ("X", D(2020, 1, 2), 0.0, 1.0, 0.5, 1.0, None, 1.0, "yahoo"),  # open = 0
        ("X", D(2020, 1, 2), 1.0, 1.0, 0.5, -1.0, None, 1.0, "yahoo"),  # close < 0
        ("X", D(2020, 1, 2), 1.0, 1.0, 1.5, 1.0, None, 1.0, "yahoo"),  # high < low
        ("X", D(2020, 1, 2), 1.0, 1.0, 0.5, 1.0, None, -1.0, "yahoo"),  # volume < 0
    ],
)
def test_check_constraints_reject_bad_bars(engine: sa.Engine, row: tuple[object, ...]) -> None:
    with pytest.raises(sa.exc.IntegrityError, match="CHECK constraint failed"):
        loader.load_table(engine, "daily_bars", [bars([row])], key=KEY)
    # And through plain SQL, not only through the loader.
    values = dict(zip(schema.DAILY_BAR_COLUMNS, row, strict=True))
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(models.daily_bars.insert().values(values))
    assert stored_bars(engine) == []


def test_high_equal_low_is_allowed(engine: sa.Engine) -> None:
    row = ("X", D(2020, 1, 2), 1.0, 1.0, 1.0, 1.0, None, 0.0, "yahoo")
    assert loader.load_table(engine, "daily_bars", [bars([row])], key=KEY).inserted == 1


def test_duplicate_key_in_input_writes_nothing(engine: sa.Engine) -> None:
    dup = [BASE[0], (*BASE[0][:5], 10.6, *BASE[0][6:])]
    with pytest.raises(loader.DuplicateKeyError):
        loader.load_table(engine, "daily_bars", [bars(dup)], key=KEY)
    assert stored_bars(engine) == []


# --------------------------------------------------------------------------- values


def test_nan_is_stored_as_null(engine: sa.Engine) -> None:
    feats = pa.table(
        {
            "symbol": ["A", "A"],
            "trade_date": pa.array([D(2020, 1, 2), D(2020, 1, 3)]),
            **{
                n: pa.array([float("nan"), 1.5], pa.float64()) for n in schema.DAILY_FEATURE_COLUMNS
            },
        }
    )
    loader.load_table(engine, "daily_features", [feats], key=KEY)
    t = models.daily_features
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.ret_1d, t.c.dollar_volume).order_by(t.c.trade_date))
        assert [tuple(r) for r in rows] == [(None, None), (1.5, 1.5)]
    # ... and NaN again on a rerun is "unchanged", not a perpetual update.
    assert loader.load_table(engine, "daily_features", [feats], key=KEY) == loader.LoadStats(
        0, 0, 2
    )


def test_extreme_floats_round_trip(engine: sa.Engine) -> None:
    # Hand-made edge case: the bits of these doubles must survive SQLite exactly.
    values = [1e-300, 1.7976931348623157e308, 0.1 + 0.2, math.pi, 123456789.123456789]
    rows = [
        ("X", D(2020, 1, 1) + dt.timedelta(days=i), v, v, v, v, v, v, "yahoo")
        for i, v in enumerate(values)
    ]
    loader.load_table(engine, "daily_bars", [bars(rows)], key=KEY)
    assert [r[5] for r in stored_bars(engine)] == values


def test_text_is_stored_verbatim(engine: sa.Engine) -> None:
    # Hand-made edge case: quotes, semicolons, SQL, unicode, emoji, backslashes.
    names = [
        'O\'Reilly; "Automotive"',
        "Robert'); DROP TABLE instruments;--",
        "Société Générale — Ünïcödé 株式会社 📈",
        "back\\slash, comma, 100% _under_",
        "",
    ]
    inst = pa.table(
        {
            "symbol": [f"S{i}" for i in range(len(names))],
            "name": names,
            "exchange": ["N"] * len(names),
            "is_etf": [False, True, None, False, True],
            "source": ["kaggle-nasdaq"] * len(names),
        },
        schema=schema.INSTRUMENTS,
    )
    loader.load_table(engine, "instruments", [inst], key=("symbol",))
    got = queries.instruments(engine)
    assert got.equals(inst)


def test_real_instrument_names_with_commas_and_ampersands(engine: sa.Engine) -> None:
    with (FIXTURES / "symbols_valid_meta_head.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    inst = pa.table(
        {
            "symbol": [r["Symbol"] for r in rows],
            "name": [r["Security Name"] for r in rows],
            "exchange": [r["Listing Exchange"] for r in rows],
            "is_etf": [r["ETF"] == "Y" for r in rows],
            "source": ["kaggle-nasdaq"] * len(rows),
        },
        schema=schema.INSTRUMENTS,
    )
    loader.load_table(engine, "instruments", [inst], key=("symbol",))
    got = queries.instruments(engine)
    assert got.equals(inst.sort_by("symbol"))
    assert got["name"][1].as_py() == "Alcoa Corporation Common Stock "  # trailing blank kept


def test_generic_bulk_insert_matches_the_sqlite_fast_path(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The portable path (used by other dialects until their fast path is registered)
    # must store exactly what the sqlite3 fast path stores.
    loader.load_table(engine, "daily_bars", [bars(BASE)], key=KEY)
    fast = stored_bars(engine)
    with engine.begin() as conn:
        conn.execute(sa.delete(models.daily_bars))
    monkeypatch.setattr(bulk, "BULK_INSERTERS", {})
    assert loader.load_table(engine, "daily_bars", [bars(BASE)], key=KEY) == (
        loader.LoadStats(4, 0, 0)
    )
    assert stored_bars(engine) == fast
    assert loader.load_table(engine, "daily_bars", [bars(NEXT)], key=KEY) == (
        loader.LoadStats(2, 2, 2)
    )


# --------------------------------------------------------------------------- quarantine


def quarantine_rows(n: int, start_line: int = 2) -> pa.Table:
    """Hand-made quarantine rows (schema.QUARANTINE) with awkward raw text."""
    raw = ["12,5", " 001.50 ", "NaN", '"quoted"; x', "é📉"]
    return pa.table(
        {
            "symbol": ["AAA"] * n,
            "trade_date": ["2020-13-45"] * n,
            "open": [raw[i % len(raw)] for i in range(n)],
            "high": ["1"] * n,
            "low": [None] * n,
            "close": ["1e3"] * n,
            "adj_close": [None] * n,
            "volume": ["-5"] * n,
            "source": ["kaggle-huge"] * n,
            "is_adjusted": [True] * n,
            "source_file": ["Stocks/aaa.us.txt"] * n,
            "line_no": pa.array(range(start_line, start_line + n), pa.int32()),
            "n_fields": pa.array([7] * n, pa.int16()),
            "raw_line": [None] * n,
            "ingest_run_id": ["ingest-1"] * n,
            "reasons": pa.array([["unparseable", "negative_volume"]] * n, pa.list_(pa.string())),
        },
        schema=schema.QUARANTINE,
    )


def test_replace_run_rows_is_idempotent_per_run(engine: sa.Engine) -> None:
    q = models.quarantine
    assert loader.replace_run_rows(engine, "quarantine", "run-1", [quarantine_rows(5)]) == 5
    assert loader.replace_run_rows(engine, "quarantine", "run-2", [quarantine_rows(2)]) == 2
    assert loader.replace_run_rows(engine, "quarantine", "run-1", [quarantine_rows(3)]) == 3
    with engine.connect() as conn:
        per_run: dict[str, int] = dict(
            conn.execute(sa.select(q.c.run_id, sa.func.count()).group_by(q.c.run_id)).all()
        )
        assert per_run == {"run-1": 3, "run-2": 2}
        rows = conn.execute(
            sa.select(q.c.open, q.c.low, q.c.reasons, q.c.trade_date, q.c.line_no)
            .where(q.c.run_id == "run-1")
            .order_by(q.c.line_no)
        ).all()
    assert [tuple(r) for r in rows] == [
        ("12,5", None, "unparseable,negative_volume", "2020-13-45", 2),
        (" 001.50 ", None, "unparseable,negative_volume", "2020-13-45", 3),
        ("NaN", None, "unparseable,negative_volume", "2020-13-45", 4),
    ]


def test_replace_run_rows_rolls_back_on_failure(engine: sa.Engine) -> None:
    loader.replace_run_rows(engine, "quarantine", "run-1", [quarantine_rows(4)])

    def batches() -> Iterator[pa.Table]:
        yield quarantine_rows(2)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        loader.replace_run_rows(engine, "quarantine", "run-1", batches())
    assert queries.table_counts(engine)["quarantine"] == 4


def test_quarantine_raw_text_is_verbatim(engine: sa.Engine) -> None:
    loader.replace_run_rows(engine, "quarantine", "r", [quarantine_rows(5)])
    q = models.quarantine
    with engine.connect() as conn:
        opens = conn.execute(sa.select(q.c.open).order_by(q.c.line_no)).scalars().all()
    assert opens == ["12,5", " 001.50 ", "NaN", '"quoted"; x', "é📉"]


def stored_quarantine(engine: sa.Engine) -> list[tuple[Any, ...]]:
    q = models.quarantine
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.select(q.c.id, q.c.run_id, q.c.line_no, q.c.open).order_by(q.c.line_no)
            )
        ]


def test_replace_quarantine_replaces_the_whole_table(engine: sa.Engine) -> None:
    first = loader.replace_quarantine(engine, [quarantine_rows(4)])
    assert first == loader.LoadStats(inserted=4, updated=0, unchanged=0, deleted=0)
    before = stored_quarantine(engine)
    assert [r[1] for r in before] == ["ingest-1"] * 4  # run_id = the bronze batch
    # The same silver quarantine again: nothing written, ids kept.
    again = loader.replace_quarantine(engine, [quarantine_rows(4)])
    assert again == loader.LoadStats(inserted=0, updated=0, unchanged=4, deleted=0)
    assert again.changed == 0
    assert stored_quarantine(engine) == before
    # Same lines from a new bronze batch (a forced re-ingest): provenance is not content.
    reingested = quarantine_rows(4).set_column(
        14, "ingest_run_id", pa.array(["ingest-2"] * 4, pa.string())
    )
    assert loader.replace_quarantine(engine, [reingested]).changed == 0
    assert stored_quarantine(engine) == before
    # Lines 3..6 instead of 2..5: line 2 is gone, line 6 is new, and lines 3..5 differ in
    # their raw open text (rows are compared whole), so they count as replaced.
    moved = loader.replace_quarantine(engine, [quarantine_rows(4, start_line=3)])
    assert moved.deleted == 4 and moved.inserted == 4
    assert [r[2] for r in stored_quarantine(engine)] == [3, 4, 5, 6]
    # Fewer rows, identical to stored ones: only deletions.
    fewer = loader.replace_quarantine(engine, [quarantine_rows(4, start_line=3).slice(0, 2)])
    assert fewer == loader.LoadStats(inserted=0, updated=0, unchanged=2, deleted=2)
    assert [r[2] for r in stored_quarantine(engine)] == [3, 4]
    empty = loader.replace_quarantine(engine, [])
    assert empty.deleted == 2
    assert stored_quarantine(engine) == []


def test_replace_quarantine_for_one_run_keeps_the_others(engine: sa.Engine) -> None:
    loader.replace_quarantine(engine, [quarantine_rows(3)], run_id="p1")
    loader.replace_quarantine(engine, [quarantine_rows(2)], run_id="p2")
    stats = loader.replace_quarantine(engine, [quarantine_rows(1)], run_id="p1")
    assert stats == loader.LoadStats(inserted=0, updated=0, unchanged=1, deleted=2)
    assert sorted(r[1] for r in stored_quarantine(engine)) == ["p1", "p2", "p2"]


def test_replace_quarantine_rolls_back_on_failure(engine: sa.Engine) -> None:
    loader.replace_quarantine(engine, [quarantine_rows(4)])
    before = stored_quarantine(engine)

    def batches() -> Iterator[pa.Table]:
        yield quarantine_rows(2, start_line=100)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        loader.replace_quarantine(engine, batches())
    assert stored_quarantine(engine) == before


# --------------------------------------------------------------------------- runs and audit

MANIFEST = {
    "run_id": "20240102T030405Z-abc",
    "command": "process",
    "status": "succeeded",
    "started_at": "2024-01-02T03:04:05+00:00",
    "finished_at": "2024-01-02T03:04:35.5+00:00",
    "params": {"as_of": D(2024, 1, 2), "engine": "polars"},
    "counts": {
        "rows_in": 100,
        "rows_clean": 90,
        "rows_quarantined": 7,
        "rows_deduplicated": 3,
        "reasons": {"duplicate": 4, "weekend_date": 3},
        "health": {"zero_volume": 2},
    },
}


def test_record_run_and_quality_rows(engine: sa.Engine) -> None:
    loader.record_run(engine, MANIFEST)
    loader.record_run(engine, {**MANIFEST, "status": "failed"})  # upsert, not a second row
    [run] = queries.runs(engine, last=5)
    assert run["status"] == "failed"
    assert run["rows_in"] == 100 and run["rows_deduplicated"] == 3
    assert run["duration_s"] == 30.5
    assert run["started_at"] == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert run["params"] == {"as_of": "2024-01-02", "engine": "polars"}
    quality = run["quality"]
    assert quality["rows_in"] == 100
    assert quality["reasons.duplicate"] == 4
    assert quality["reasons.unparseable"] == 0  # every reason code present
    assert quality["health.zero_volume"] == 2
    assert quality["health.suspect_jump"] == 0
    assert len(quality) == 4 + len(schema.REASON_CODES) + len(schema.HEALTH_FLAGS)
    assert sum(v for k, v in quality.items() if k.startswith("reasons.")) == 7


def test_runs_newest_first(engine: sa.Engine) -> None:
    for i in range(3):
        loader.record_run(
            engine,
            {"run_id": f"r{i}", "started_at": dt.datetime(2024, 1, 1 + i, tzinfo=dt.UTC)},
        )
    assert [r["run_id"] for r in queries.runs(engine, last=2)] == ["r2", "r1"]


def test_record_run_keeps_run_level_counts_only(engine: sa.Engine) -> None:
    per_file = {f"Stocks/s{i}.us.txt": {"rows_in": 10, "rows_clean": 10} for i in range(50)}
    counts = {**MANIFEST["counts"], "rows_superseded": 5, "per_file": per_file}  # type: ignore[dict-item]
    loader.record_run(engine, {**MANIFEST, "counts": counts})
    [run] = queries.runs(engine)
    assert "per_file" not in run["counts"]  # stays in the lake manifest
    assert run["counts"]["reasons"] == {"duplicate": 4, "weekend_date": 3}
    assert run["quality"]["rows_superseded"] == 5
    assert not any(k.startswith("per_file") for k in run["quality"])


def test_record_run_needs_a_run_id(engine: sa.Engine) -> None:
    with pytest.raises(ValueError, match="run_id"):
        loader.record_run(engine, {"status": "x"})


def test_audit(engine: sa.Engine) -> None:
    first = loader.audit(engine, "cli", "load", {"tables": ["daily_bars"], "day": D(2024, 1, 2)})
    second = loader.audit(engine, "api:admin", "export")
    assert second == first + 1
    a = models.audit_log
    with engine.connect() as conn:
        rows = conn.execute(sa.select(a.c.actor, a.c.action, a.c.detail).order_by(a.c.id)).all()
    assert [tuple(r) for r in rows] == [
        ("cli", "load", {"tables": ["daily_bars"], "day": "2024-01-02"}),
        ("api:admin", "export", None),
    ]
    with engine.connect() as conn:  # a missing detail is SQL NULL, not the JSON text 'null'
        assert (
            conn.exec_driver_sql("SELECT count(*) FROM audit_log WHERE detail IS NULL").scalar()
            == 1
        )


# --------------------------------------------------------------------------- timing


def synthetic_bars(n_symbols: int, n_days: int) -> pa.Table:
    """Synthetic bars for the timing print only (valid by construction, not real data)."""
    rng = np.random.default_rng(7)
    n = n_symbols * n_days
    close = rng.uniform(1, 500, n)
    return pa.table(
        {
            "symbol": np.repeat(np.array([f"SYN{i:05d}" for i in range(n_symbols)]), n_days),
            "trade_date": pa.array(
                np.tile(np.datetime64("1990-01-01") + np.arange(n_days), n_symbols).astype(
                    "datetime64[D]"
                )
            ),
            "open": close,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "adj_close": close * 0.98,
            "volume": rng.integers(0, 10_000_000, n).astype(np.float64),
            "source": pa.array(["kaggle-huge"] * n),
        },
        schema=_BAR_SCHEMA,
    )


def test_a_one_million_row_load_and_its_rerun(
    engine: sa.Engine, record_property: Callable[[str, object], None]
) -> None:
    """1M rows load, then a rerun changes none; rows/s go to the test report (machines differ:
    the figures belong in benchmarks/, not in an assertion or the console)."""
    table = synthetic_bars(500, 2000)
    first = loader.load_table(engine, "daily_bars", [table], key=KEY)
    again = loader.load_table(engine, "daily_bars", [table], key=KEY)
    assert first == loader.LoadStats(1_000_000, 0, 0)
    assert again == loader.LoadStats(0, 0, 1_000_000)
    record_property("first_load_rows_per_s", round(first.rows_per_s))
    record_property("rerun_rows_per_s", round(again.rows_per_s))


# ----------------------------------------------------------------------------- one transaction


def _bars(symbols: list[str], high: float = 2.0) -> pa.Table:
    n = len(symbols)
    return pa.table(
        {
            "symbol": symbols,
            "trade_date": pa.array([dt.date(2024, 1, 2)] * n, pa.date32()),
            "open": [1.0] * n,
            "high": [high] * n,
            "low": [1.0] * n,
            "close": [1.5] * n,
            "adj_close": [1.5] * n,
            "volume": [10.0] * n,
            "source": ["kaggle"] * n,
        }
    )


def test_run_transaction_commits_all_tables_together(engine: sa.Engine) -> None:
    with loader.run_transaction(engine) as tx:
        a = tx.load_table("daily_bars", [_bars(["AAA", "BBB"])], key=("symbol", "trade_date"))
        b = tx.load_table("instruments", [pa.table({"symbol": ["AAA"]})], key=("symbol",))
        tx.record_run({"run_id": "r1", "counts": {"rows_in": 2}})
    assert (a.inserted, b.inserted) == (2, 1)
    counts = queries.table_counts(engine)
    assert (counts["daily_bars"], counts["instruments"], counts["pipeline_runs"]) == (2, 1, 1)


def test_run_transaction_rolls_every_table_back(engine: sa.Engine) -> None:
    loader.load_table(engine, "daily_bars", [_bars(["AAA"])], key=("symbol", "trade_date"))
    with pytest.raises(sa.exc.IntegrityError), loader.run_transaction(engine) as tx:
        tx.load_table("instruments", [pa.table({"symbol": ["AAA"]})], key=("symbol",))
        tx.load_table("daily_bars", [_bars(["AAA"], high=5.0)], key=("symbol", "trade_date"))
        tx.load_table("daily_bars", [_bars(["BAD"], high=0.5)], key=("symbol", "trade_date"))
    counts = queries.table_counts(engine)
    assert (counts["instruments"], counts["daily_bars"]) == (0, 1)
    assert next(queries.daily_table(engine))["high"].to_pylist() == [2.0]


def test_load_tables_uses_the_contract_keys(engine: sa.Engine) -> None:
    stats = loader.load_tables(
        engine,
        {"instruments": [pa.table({"symbol": ["AAA"]})], "daily_bars": [_bars(["AAA"])]},
    )
    assert {k: v.inserted for k, v in stats.items()} == {"instruments": 1, "daily_bars": 1}
    again = loader.load_tables(engine, {"daily_bars": [_bars(["AAA"])]})
    assert again["daily_bars"].changed == 0


# --------------------------------------------------------------------------- straight insert
# Keyed loads whose symbols the table does not hold yet skip the staging table and the merge.

NEW = [
    ("DDD", D(2020, 1, 2), 2.0, 2.5, 1.5, 2.0, None, 10.0, "yahoo"),
    ("EEE", D(2020, 1, 2), 3.0, 3.5, 2.5, 3.0, 3.0, 20.0, "yahoo"),
]


@pytest.fixture
def merges(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tables each load merged through the staging table (the straight path adds none)."""
    seen: list[str] = []
    merge = loader._merge

    def spy(conn: sa.Connection, table: sa.Table, *args: Any, **kwargs: Any) -> Any:
        seen.append(table.name)
        return merge(conn, table, *args, **kwargs)

    monkeypatch.setattr(loader, "_merge", spy)
    return seen


def test_first_load_and_new_symbols_skip_the_merge(engine: sa.Engine, merges: list[str]) -> None:
    assert loader.load_table(engine, "daily_bars", [bars(BASE)], key=KEY) == loader.LoadStats(
        4, 0, 0
    )
    assert loader.load_table(engine, "daily_bars", [bars(NEW)], key=KEY) == loader.LoadStats(
        2, 0, 0
    )
    assert merges == []
    assert stored_bars(engine) == sorted([*BASE, *NEW])


def test_a_stored_symbol_goes_through_the_merge(engine: sa.Engine, merges: list[str]) -> None:
    loader.load_table(engine, "daily_bars", [bars(BASE)], key=KEY)
    again = loader.load_table(engine, "daily_bars", [bars([*NEW, BASE[0]])], key=KEY)
    assert again == loader.LoadStats(2, 0, 1)
    assert merges == ["daily_bars"]


def test_rerun_after_a_straight_load_changes_nothing(engine: sa.Engine) -> None:
    loader.load_table(engine, "daily_bars", [bars(BASE)], key=KEY)
    assert loader.load_table(engine, "daily_bars", [bars(BASE)], key=KEY) == loader.LoadStats(
        0, 0, 4
    )


def test_duplicate_key_on_the_straight_path_writes_nothing(engine: sa.Engine) -> None:
    loader.load_table(engine, "daily_bars", [bars(BASE)], key=KEY)
    with pytest.raises(loader.DuplicateKeyError):
        loader.load_table(engine, "daily_bars", [bars([NEW[0], NEW[1], NEW[0]])], key=KEY)
    assert stored_bars(engine) == sorted(BASE)


def test_null_key_on_the_straight_path_is_refused(engine: sa.Engine) -> None:
    rows = [NEW[0], (None, *NEW[1][1:])]
    with pytest.raises(ValueError, match="null key"):
        loader.load_table(engine, "daily_bars", [bars(rows)], key=KEY)
    assert stored_bars(engine) == []


def test_check_failure_on_the_straight_path_rolls_the_run_back(engine: sa.Engine) -> None:
    bad = ("ZZZ", D(2020, 1, 2), 1.0, 0.5, 0.9, 1.0, None, 1.0, "yahoo")  # high < low
    failed = pytest.raises(sa.exc.IntegrityError, match="CHECK constraint failed")
    with failed, loader.run_transaction(engine) as tx:
        tx.load_table("instruments", [pa.table({"symbol": ["ZZZ"]})], key=("symbol",))
        tx.load_table("daily_bars", [bars(NEW)], key=KEY)
        tx.load_table("daily_bars", [bars([bad])], key=KEY)
    assert stored_bars(engine) == []


def test_straight_insert_holds_the_write_lock(engine: sa.Engine) -> None:
    """No other writer can add a row between the check and the insert (SQLite)."""
    url = engine.url
    assert url.database
    with loader.run_transaction(engine) as tx:
        tx.load_table("daily_bars", [bars(BASE)], key=KEY)
        other = sqlite3.connect(url.database, timeout=0.05, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            # Readers go on (WAL) and still see the previous state.
            assert other.execute("SELECT count(*) FROM daily_bars").fetchone() == (0,)
        finally:
            other.close()
