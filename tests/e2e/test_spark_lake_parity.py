"""Whole-lake parity: ``spark_job.process_lake`` against the Polars process stage.

1. The REAL shared Kaggle Huge sample (900 files, 1.88 M rows) is ingested and
   processed once by the normal pipeline (Polars); ``process_lake`` then reads
   the same bronze files and writes a second silver/gold root. Every file of
   the layout must exist in both; silver bars and quarantine (rows, reasons)
   must be equal exactly, daily and quarterly features within the contract's
   tolerance (1e-8 relative, nulls in the same places), the counts identical.
2. A HAND-MADE bronze (not market data) with the edge cases the sample lacks:
   one-row symbols, gaps, identical twins and conflicting duplicates,
   quarantined rows, two sources for one symbol, an empty bucket, and the
   contract v2 cases (zero opens, alone and with another fault; dates before
   and on 1885-01-01 and before 1962, which the exchange calendar must cover;
   implausible and extreme-but-allowed values); compared with the Polars
   engine run bucket by bucket as ``stockbatch.process`` does.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from stockbatch import lake, quality, runs, schema
from stockbatch.calendar import SessionCalendar
from stockbatch.cli import app
from stockbatch.features import polars as polars_features
from stockbatch.lake import LakeLayout
from stockbatch.process import spark_job
from stockbatch.settings import Settings

pytestmark = [pytest.mark.spark, pytest.mark.slow]

AS_OF = dt.date(2017, 11, 30)
CALENDAR = SessionCalendar(start=quality.EARLIEST_DATE, end=AS_OF + dt.timedelta(days=400))
"""The process stage's calendar: from the first date a clean row may have."""
PRIORITY = ["yahoo", "kaggle-nasdaq", "kaggle-huge", "kaggle-sp500"]
TOL = 1e-8
LAYERS = {
    "silver/bars": schema.SILVER_BARS,
    "silver/quarantine": schema.QUARANTINE,
    "gold/daily_features": schema.DAILY_FEATURES,
    "gold/quarterly_features": schema.QUARTERLY_FEATURES,
}


def _read(path: Path) -> pl.DataFrame:
    return pl.read_parquet(path)


def assert_frames(expected: pl.DataFrame, got: pl.DataFrame, where: str, exact: bool) -> None:
    assert got.schema == expected.schema, where
    assert got.height == expected.height, where
    if exact:
        assert got.equals(expected, null_equal=True), where
        return
    for name in got.columns:
        a, b = expected[name], got[name]
        assert a.is_null().equals(b.is_null()), f"{where} {name}: nulls differ"
        if a.dtype == pl.Float64:
            ok = ((a - b).abs() <= TOL * a.abs().clip(lower_bound=1.0)) | a.is_null()
            ok = ok | (a.is_nan() & b.is_nan())
            assert ok.all(), f"{where} {name}: {(~ok).sum()} values differ"
        else:
            assert a.equals(b, null_equal=True), f"{where} {name}"


def assert_lakes(expected_root: Path, got_root: Path) -> None:
    """Every layer file of the Polars lake has its twin, same rows and types."""
    for layer in LAYERS:
        exp_files = [
            p.relative_to(expected_root) for p in lake.parquet_files(expected_root / layer)
        ]
        got_files = [p.relative_to(got_root) for p in lake.parquet_files(got_root / layer)]
        assert got_files == exp_files, layer
        for rel in exp_files:
            exact = layer.startswith("silver")
            assert_frames(_read(expected_root / rel), _read(got_root / rel), str(rel), exact)


def run_spark(spark: Any, bronze_files: list[Path], out: Path, buckets: int) -> Any:
    return spark_job.process_lake(
        spark,
        LakeLayout(out),
        bronze_files=[str(p) for p in bronze_files],
        active_keys=None,
        as_of=AS_OF,
        calendar=CALENDAR,
        source_priority=PRIORITY,
        buckets=buckets,
        compression="zstd",
    )


def test_huge_sample_lake_parity(spark: Any, huge_sample: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"STOCKBATCH_HOME": str(home)}
    runner = CliRunner()
    for args in (
        ["ingest", "--source", "kaggle", "--path", str(huge_sample), "--as-of", str(AS_OF), "-q"],
        ["process", "--as-of", str(AS_OF), "-q"],
    ):
        res = runner.invoke(app, args, env=env, catch_exceptions=False)
        assert res.exit_code == 0, res.output
    lake_root = home / "lake"
    manifest = [m for m in runs.iter_manifests(Settings(home=home)) if "counts" in m][-1]
    bronze = lake.parquet_files(lake_root / "bronze" / "bars")
    out = tmp_path / "spark"
    result = run_spark(spark, bronze, out, buckets=8)
    assert result.counts == manifest["counts"]
    assert result.daily_rows == 1_883_012
    assert_lakes(lake_root, out)


# --- HAND-MADE bronze -------------------------------------------------------------------


def _bar(symbol: str, day: dt.date, close: float, **over: Any) -> dict[str, Any]:
    row = {
        "symbol": symbol,
        "trade_date": day.isoformat(),
        "open": repr(close),
        "high": repr(close * 1.01),
        "low": repr(close * 0.99),
        "close": repr(close),
        "adj_close": None,
        "volume": "1000",
        "source": "kaggle-huge",
        "is_adjusted": True,
        "source_file": f"hand/{symbol.lower()}.txt",
        "line_no": 0,
        "n_fields": 7,
        "raw_line": None,
        "ingest_run_id": "run-hand",
    }
    row.update(over)
    return row


def _sessions(start: dt.date, n: int, skip_quarters: tuple[int, ...] = ()) -> list[dt.date]:
    out, d = [], start
    while len(out) < n:
        if d.weekday() < 5 and (d.year * 4 + (d.month - 1) // 3) not in skip_quarters:
            out.append(d)
        d += dt.timedelta(days=1)
    return out


def hand_bronze(buckets: int) -> pl.DataFrame:
    rows: list[dict[str, Any]] = []
    rows.append(_bar("ONE", dt.date(2017, 5, 3), 42.0))
    gap = _sessions(dt.date(2015, 1, 5), 400, skip_quarters=(2015 * 4 + 2, 2015 * 4 + 3))
    rows += [_bar("GAP", d, 10 + (i % 17) * 0.3) for i, d in enumerate(gap)]
    two = _sessions(dt.date(2016, 6, 1), 300)
    rows += [_bar("TWO", d, 30 + (i % 11)) for i, d in enumerate(two)]
    rows += [
        _bar("TWO", d, 60 + (i % 11), source="kaggle-sp500", source_file="hand/two_sp.csv")
        for i, d in enumerate(two[:200])
    ]
    rows += [_bar("TWIN", d, 5.0) for d in two[:30]] + [_bar("TWIN", two[3], 5.0)]
    rows += [_bar("DUP", d, 7.0) for d in two[:30]] + [_bar("DUP", two[4], 7.5)]
    rows += [
        _bar("BAD", two[0], 1.0, open="x"),
        _bar("BAD", dt.date(2017, 11, 4), 1.0),
        _bar("BAD", dt.date(2017, 12, 4), 1.0),
        _bar("BAD", two[1], 1.0, raw_line="2016-06-02,1,1", n_fields=3, trade_date=None),
    ]
    # contract v2: zero opens (not recorded), alone and with another fault
    rows += [_bar("ZOPEN", d, 20 + i % 5, open="0" if i % 4 == 0 else repr(20.0 + i % 5))
             for i, d in enumerate(two[:120])]  # fmt: skip
    rows += [_bar("ZOPEN", dt.date(2017, 11, 20), 20.0, open="0", high="19", low="21")]
    # dates: before 1885 (quarantined), on and after it, before the old 1962 calendar start
    old = [dt.date(1885, 1, 2), *_sessions(dt.date(1961, 12, 1), 40), dt.date(1963, 5, 1)]
    rows += [_bar("OLD", d, 5 + (i % 3) * 0.1) for i, d in enumerate(old)]
    rows += [_bar("OLD", dt.date(1800, 1, 2), 5.0), _bar("OLD", dt.date(1884, 12, 31), 5.0)]
    # implausible values (quarantined) and extreme-but-allowed ones (clean, finite features)
    ext = _sessions(dt.date(2016, 1, 4), 260)
    rows += [
        _bar("EXT", d, 1e-6 if i % 2 else 1e9, high="1e9", low="1e-6",
             volume="1e13" if i % 3 else "0", adj_close="1e9" if i % 5 == 0 else None)
        for i, d in enumerate(ext)
    ]  # fmt: skip
    rows += [
        _bar("IMPL", dt.date(2017, 1, 3), 1e-7),
        _bar("IMPL", dt.date(2017, 1, 4), 1e10),
        _bar("IMPL", dt.date(2017, 1, 5), 10.0, volume="1e14"),
    ]
    df = pl.DataFrame(
        rows, schema={k: v for k, v in quality.BRONZE_SCHEMA.items() if k != "bucket"}
    )
    df = df.with_columns(
        (pl.int_range(pl.len()).over("source_file") + 2).cast(pl.Int32).alias("line_no"),
        pl.col("symbol")
        .map_elements(lambda s: lake.symbol_bucket(s, buckets), return_dtype=pl.Int16)
        .alias("bucket"),
    )
    return df


def polars_lake(bronze: pl.DataFrame, root: Path, buckets: int) -> dict[str, Any]:
    """What the process stage writes, bucket by bucket, from the same bronze rows."""
    calendar = CALENDAR
    counts: dict[str, Any] = {}
    silver: list[pl.DataFrame] = []

    def add(total: dict[str, Any], part: dict[str, Any]) -> None:
        for k, v in part.items():
            if isinstance(v, dict):
                add(total.setdefault(k, {}), v)
            else:
                total[k] = total.get(k, 0) + v

    for b in range(buckets):
        res = quality.validate(
            bronze.filter(pl.col("bucket") == b),
            as_of=AS_OF,
            is_session=calendar.is_session,
            source_priority=PRIORITY,
        )
        add(counts, res.counts)
        for name, frame, target in (
            ("silver/bars", res.clean, schema.SILVER_BARS),
            ("silver/quarantine", res.quarantine, schema.QUARANTINE),
        ):
            path = lake.bucket_dir(root / name, b) / "part-00000.parquet"
            lake.write_parquet_atomic(lake.conform(frame, target), path)
        silver.append(res.clean.filter(~pl.col("superseded")))
    last = max(s["trade_date"].max() for s in silver if s.height)  # type: ignore[type-var]
    quarterly = []
    for b in range(buckets):
        daily = polars_features.compute_daily(silver[b])
        path = lake.bucket_dir(root / "gold/daily_features", b) / "part-00000.parquet"
        lake.write_parquet_atomic(lake.conform(daily, schema.DAILY_FEATURES), path)
        if daily.height:
            quarterly.append(polars_features.compute_quarterly(daily, calendar, last))  # type: ignore[arg-type]
    q = pl.concat(quarterly).sort("symbol", "quarter")
    path = root / "gold/quarterly_features/part-00000.parquet"
    lake.write_parquet_atomic(lake.conform(q, schema.QUARTERLY_FEATURES), path)
    return counts


def test_hand_made_lake_parity(spark: Any, tmp_path: Path) -> None:
    buckets = 8
    bronze = hand_bronze(buckets)
    assert bronze["bucket"].n_unique() < buckets  # some bucket is empty
    bronze_file = tmp_path / "bronze" / "part-0.parquet"
    lake.write_parquet_atomic(lake.conform(bronze, schema.BRONZE_BARS), bronze_file)
    counts = polars_lake(bronze, tmp_path / "polars", buckets)
    result = run_spark(spark, [bronze_file], tmp_path / "spark", buckets)
    assert result.counts == counts
    assert counts["rows_superseded"] == 200 and counts["rows_deduplicated"] == 1
    assert counts["reasons"]["duplicate"] == 2
    assert counts["reasons"]["date_out_of_range"] == 2
    assert counts["reasons"]["implausible_value"] == 3
    assert counts["health"]["open_missing"] == 30  # ZOPEN's clean zero opens
    assert_lakes(tmp_path / "polars", tmp_path / "spark")
    for layer in ("gold/daily_features", "gold/quarterly_features"):
        frame = pl.concat([_read(p) for p in lake.parquet_files(tmp_path / "spark" / layer)])
        floats = [n for n, t in frame.schema.items() if t == pl.Float64]
        bad = frame.select(pl.col(n).is_finite().not_().sum() for n in floats).row(0)
        assert not any(bad), (layer, dict(zip(floats, bad, strict=True)))
    q = _read(tmp_path / "spark" / "gold/quarterly_features/part-00000.parquet")
    assert q.filter(pl.col("symbol") == "OLD")["quarter"].to_list()[:2] == ["1885Q1", "1961Q4"]
