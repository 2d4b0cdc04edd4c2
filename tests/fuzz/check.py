"""Checks shared by the fuzz tests: every row accounted for, nothing infinite."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pyarrow as pa

from stockbatch import schema
from stockbatch.calendar import SessionCalendar
from stockbatch.features.polars import compute_daily, compute_quarterly
from stockbatch.quality import validate
from stockbatch.quality.polars import ValidationResult

AS_OF = dt.date(2026, 2, 20)
PRIORITY = ["yahoo", "kaggle-nasdaq", "kaggle-huge", "kaggle-sp500"]


def bronze_frame(table: pa.Table) -> pl.DataFrame:
    """A source table (``BRONZE_SOURCE_SCHEMA``) as the bronze rows ``validate`` reads."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame.with_columns(pl.lit("fuzz-run", dtype=pl.String).alias("ingest_run_id"))


def validate_accounted(bronze: pl.DataFrame, *, as_of: dt.date = AS_OF) -> ValidationResult:
    """Validate ``bronze`` and check, independently of ``reconcile``, that every input row
    is in exactly one place: clean, quarantined (with known reason codes), or collapsed."""
    res = validate(bronze, as_of=as_of, is_session=None, source_priority=PRIORITY)
    c = res.counts
    n = bronze.height
    assert c["rows_in"] == n
    assert res.clean.height == c["rows_clean"]
    assert res.quarantine.height == c["rows_quarantined"]
    assert c["rows_clean"] + c["rows_quarantined"] + c["rows_deduplicated"] == n, c
    # Row identity: (source_file, line_no) of the input, as a multiset.
    key = ["source_file", "line_no"]
    seen = pl.concat([res.clean.select(key), res.quarantine.select(key)])
    assert seen.height + c["rows_deduplicated"] == n
    left = bronze.select(key).group_by(key).len()
    right = seen.group_by(key).len()
    joined = left.join(right, on=key, how="full", nulls_equal=True, coalesce=True)
    joined = joined.with_columns(pl.col("len_right").fill_null(0), pl.col("len").fill_null(0))
    assert (joined["len_right"] <= joined["len"]).all(), "a row came out more often than in"
    for reasons in res.quarantine["reasons"].to_list():
        assert reasons, "a quarantined row without a reason code"
        assert set(reasons) <= set(schema.REASON_CODES), reasons
    assert sum(c["reasons"].values()) >= c["rows_quarantined"]
    assert_finite(res.clean, "silver")
    return res


def assert_finite(frame: pl.DataFrame, what: str) -> None:
    """No float of ``frame`` is NaN or infinite (a missing value is null)."""
    for name, dtype in frame.schema.items():
        if dtype in (pl.Float64, pl.Float32):
            bad = frame.filter(~pl.col(name).is_finite())
            assert bad.is_empty(), f"{what}.{name}: non-finite values {bad.head(3)}"


def assert_features_finite(res: ValidationResult) -> None:
    """The daily and quarterly features of the clean bars hold no NaN or infinity."""
    active = res.clean.filter(~pl.col("superseded"))
    if active.is_empty():
        return
    daily = compute_daily(active)
    assert daily.height == active.height
    assert_finite(daily, "gold daily")
    first, last = active["trade_date"].min(), active["trade_date"].max()
    assert isinstance(first, dt.date) and isinstance(last, dt.date)
    calendar = SessionCalendar.covering(first, last)
    quarterly = compute_quarterly(daily, calendar, last)
    assert_finite(quarterly, "gold quarterly")
