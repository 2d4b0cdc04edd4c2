"""The incremental planner's decisions, on small HAND-MADE inputs (not market data).

Each test crafts the few rows the decision reads: new bronze rows (``row()``
overrides), the stored symbol state, the catalog entries of a unit. Whether an
update then equals a full rebuild is tested end to end in
tests/e2e/test_incremental.py.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from stockbatch import schema
from stockbatch.calendar import SessionCalendar
from stockbatch.process.incremental import completion_refresh
from stockbatch.process.plan import Plan, decide, full_rebuild_reason, unit_changes
from stockbatch.process.state import (
    SYMBOLS_SCHEMA,
    config_fingerprint,
    snapshot,
    unit_key,
    units_record,
    write_symbols,
)
from stockbatch.settings import Settings
from support.bronze_rows import bronze_frame, row

AS_OF = dt.date(2017, 11, 30)


def symbols(*entries: dict[str, Any]) -> pl.DataFrame:
    """A symbol state: each entry names symbol, bucket, last_seen (ISO), and optionally
    winner (default kaggle-huge), future_min and n_rows."""
    rows = [
        {
            "symbol": e["symbol"],
            "bucket": e["bucket"],
            "winner": e.get("winner", "kaggle-huge"),
            "last_seen": dt.date.fromisoformat(e["last_seen"]),
            "future_min": dt.date.fromisoformat(e["future_min"]) if "future_min" in e else None,
            "last_date": dt.date.fromisoformat(e["last_seen"]),
            "n_rows": e.get("n_rows", 100),
        }
        for e in entries
    ]
    return pl.DataFrame(rows, schema=SYMBOLS_SCHEMA)


STATE = symbols(
    {"symbol": "AAA", "bucket": 1, "last_seen": "2017-11-06"},
    {"symbol": "BBB", "bucket": 1, "last_seen": "2017-11-06"},
    {"symbol": "CCC", "bucket": 3, "last_seen": "2017-11-06"},
)


def new_rows(*overrides: dict[str, Any]) -> pl.DataFrame:
    return bronze_frame([row(**o) for o in overrides])


def fresh_symbols(plan: Plan) -> list[str]:
    return sorted(set(plan.fresh["symbol"].to_list()))


# ----------------------------------------------------------------------------- decide


def test_rows_after_the_last_seen_date_from_the_winner_are_appended() -> None:
    rows = new_rows(
        {"symbol": "AAA", "bucket": 1, "trade_date": "2017-11-07"},
        {"symbol": "CCC", "bucket": 3, "trade_date": "2017-11-07"},
    )
    plan = decide(rows, set(), STATE, AS_OF)
    assert plan.full_reason is None
    assert plan.rebuild == set()
    assert fresh_symbols(plan) == ["AAA", "CCC"]
    assert plan.append_buckets == [1, 3]


def test_a_new_symbol_is_appended_from_nothing() -> None:
    rows = new_rows({"symbol": "NEWCO", "bucket": 2, "trade_date": "2017-11-01"})
    plan = decide(rows, set(), STATE, AS_OF)
    assert plan.rebuild == set()
    assert fresh_symbols(plan) == ["NEWCO"]


@pytest.mark.parametrize("late", ["2017-11-06", "2017-10-02"])
def test_late_history_rebuilds_the_bucket_of_its_symbol(late: str) -> None:
    rows = new_rows(
        {"symbol": "AAA", "bucket": 1, "trade_date": "2017-11-07"},
        {"symbol": "AAA", "bucket": 1, "trade_date": late},  # not after what was seen
        {"symbol": "BBB", "bucket": 1, "trade_date": "2017-11-07"},  # same bucket
        {"symbol": "CCC", "bucket": 3, "trade_date": "2017-11-07"},
    )
    plan = decide(rows, set(), STATE, AS_OF)
    assert plan.rebuild == {1}
    assert fresh_symbols(plan) == ["CCC"]  # a rebuilt bucket's rows are not appended too


def test_a_changed_line_rebuilds_the_bucket_of_its_file() -> None:
    rows = new_rows(
        {"symbol": "AAA", "bucket": 1, "trade_date": "2017-11-07", "source_file": "a.txt"},
        {"symbol": "CCC", "bucket": 3, "trade_date": "2017-11-07", "source_file": "c.txt"},
    )
    plan = decide(rows, {"a.txt"}, STATE, AS_OF)
    assert plan.rebuild == {1}
    assert fresh_symbols(plan) == ["CCC"]


@pytest.mark.parametrize("source", ["yahoo", "kaggle-sp500"])
def test_rows_from_another_source_than_the_winner_rebuild(source: str) -> None:
    # A higher-priority source may win from now on; a lower one is superseded: either
    # way the symbol's rows must be compared across sources, so the bucket is rebuilt.
    rows = new_rows({"symbol": "CCC", "bucket": 3, "trade_date": "2017-11-07", "source": source})
    plan = decide(rows, set(), STATE, AS_OF)
    assert plan.rebuild == {3}
    assert plan.fresh.is_empty()


def test_a_future_row_made_valid_by_a_later_as_of_rebuilds_without_new_rows() -> None:
    state = symbols(
        {"symbol": "FUT", "bucket": 4, "last_seen": "2017-12-04", "future_min": "2017-12-04"}
    )
    no_rows = new_rows()
    assert decide(no_rows, set(), state, AS_OF).rebuild == set()  # still in the future
    plan = decide(no_rows, set(), state, dt.date(2017, 12, 4))
    assert plan.rebuild == {4}
    assert plan.append_buckets == []


def test_an_unparseable_date_does_not_force_a_rebuild() -> None:
    # It is quarantined whatever came before it, so appending it gives the same rows.
    rows = new_rows({"symbol": "AAA", "bucket": 1, "trade_date": "2017-13-45"})
    plan = decide(rows, set(), STATE, AS_OF)
    assert plan.rebuild == set()
    assert fresh_symbols(plan) == ["AAA"]


def test_nothing_new_plans_nothing() -> None:
    plan = decide(new_rows(), set(), STATE, AS_OF)
    assert plan.rebuild == set() and plan.fresh.is_empty() and plan.append_buckets == []


# ----------------------------------------------------------------------------- unit_changes


def unit(sha: str, batch: str, **over: Any) -> dict[str, Any]:
    """A catalog entry of the unit ``kaggle-huge`` / ``a.txt``."""
    entry = {
        "source": "kaggle-huge",
        "ref": "a.txt",
        "sha256": sha,
        "batch": batch,
        "extends": None,
        "first_new_line": None,
        "delta": False,
    }
    entry.update(over)
    return entry


def catalog(*entries: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(
        list(entries),
        schema={
            "source": pl.String,
            "ref": pl.String,
            "sha256": pl.String,
            "batch": pl.String,
            "extends": pl.String,
            "first_new_line": pl.Int64,
            "delta": pl.Boolean,
        },
    )


KEY = unit_key("kaggle-huge", "a.txt")


def test_a_unit_never_processed_is_new_from_its_first_line() -> None:
    v1 = unit("s1", "b1")
    changes = unit_changes({}, catalog(v1), catalog(v1))
    assert changes.new_lines == [{"source_file": "a.txt", "ingest_run_id": "b1", "from": 0}]
    assert changes.changed == []


def test_an_unchanged_unit_is_nothing_new() -> None:
    v1 = unit("s1", "b1")
    assert not unit_changes({KEY: ["s1", "b1"]}, catalog(v1), catalog(v1))


def test_appended_parts_since_the_processed_version_are_new() -> None:
    v1 = unit("s1", "b1")
    v2 = unit("s2", "b2", extends="s1", first_new_line=100, delta=True)
    v3 = unit("s3", "b3", extends="s2", first_new_line=103, delta=True)
    changes = unit_changes({KEY: ["s1", "b1"]}, catalog(v3), catalog(v1, v2, v3))
    # A delta part holds only the appended lines: all of it is new.
    assert changes.new_lines == [
        {"source_file": "a.txt", "ingest_run_id": "b2", "from": 0},
        {"source_file": "a.txt", "ingest_run_id": "b3", "from": 0},
    ]


def test_a_whole_new_version_that_extends_the_processed_one_is_new_from_its_first_new_line() -> (
    None
):
    v2 = unit("s2", "b2", extends="s1", first_new_line=100)
    changes = unit_changes({KEY: ["s1", "b1"]}, catalog(v2), catalog(v2))
    assert changes.new_lines == [{"source_file": "a.txt", "ingest_run_id": "b2", "from": 100}]


def test_the_same_content_landed_again_is_nothing_new() -> None:
    again = unit("s1", "b2")
    assert not unit_changes({KEY: ["s1", "b1"]}, catalog(again), catalog(again))


def test_a_version_that_is_not_an_append_changed_lines() -> None:
    edited = unit("s9", "b2")
    changes = unit_changes({KEY: ["s1", "b1"]}, catalog(edited), catalog(edited))
    assert changes.changed == [("a.txt", "b2")]
    assert changes.new_lines == []


# ----------------------------------------------------------------------------- full rebuilds


def test_what_the_state_cannot_vouch_for_makes_a_full_rebuild(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", progress=False)
    active = catalog(unit("s1", "b1"))
    as_of = dt.date(2017, 11, 30)

    def reason(**state: Any) -> str | None:
        return full_rebuild_reason(settings, state, active, as_of)

    ok: dict[str, Any] = {
        "incremental": True,
        "config": config_fingerprint(settings),
        "feature_set_version": schema.FEATURE_SET_VERSION,
        "as_of": "2017-11-29",
        "files": {},
        "units": units_record(active),
    }
    assert reason() == "no incremental state yet"
    assert reason(**{**ok, "config": "other"}) == "settings or code version changed"
    # contract v1 -> v2: the config differs (it holds the version) and the reason says which
    old = {**ok, "config": "v1 config", "feature_set_version": 1}
    assert reason(**old) == f"feature set version 1 -> {schema.FEATURE_SET_VERSION}"
    legacy = {k: v for k, v in old.items() if k != "feature_set_version"}  # written by v1 code
    assert reason(**legacy) == f"feature set version 1 -> {schema.FEATURE_SET_VERSION}"
    assert reason(**{**ok, "as_of": "2017-12-01"}) == "the as-of date moved back"
    assert reason(**{**ok, "files": {"gold/x.parquet": [1, 2]}}) == (
        "lake files changed since the last process run"
    )
    assert reason(**ok) == "no symbol state"
    write_symbols(settings, pl.DataFrame(schema=SYMBOLS_SCHEMA))
    ok["files"] = snapshot(settings)
    assert reason(**ok) is None
    gone = {**ok["units"], unit_key("kaggle-huge", "gone.txt"): ["s0", "b0"]}
    assert reason(**{**ok, "units": gone}) == "a processed unit is no longer in the catalog"


# ----------------------------------------------------------------------------- quarters


CALENDAR = SessionCalendar(end=dt.date(2024, 6, 30))


@pytest.mark.parametrize(
    ("old_last", "new_last", "refresh"),
    [
        # 2023-03-31 is Q1's last session: Q1 becomes complete, Q4 2022's label changes.
        ("2023-03-30", "2023-03-31", "2022-10-01"),
        ("2023-03-31", "2023-03-30", "2022-10-01"),
        # the earliest quarter that became complete decides (Q4 2022 ends 2022-12-30)
        ("2022-12-15", "2023-04-03", "2022-07-01"),
        # no quarter's last session between the two dates
        ("2023-03-31", "2023-04-05", None),
        ("2023-04-03", "2023-06-29", None),
        ("2023-05-01", "2023-05-01", None),
    ],
)
def test_a_quarter_that_becomes_complete_refreshes_the_recent_quarters(
    old_last: str, new_last: str, refresh: str | None
) -> None:
    got = completion_refresh(
        CALENDAR, dt.date.fromisoformat(old_last), dt.date.fromisoformat(new_last)
    )
    assert got == (dt.date.fromisoformat(refresh) if refresh else None)
