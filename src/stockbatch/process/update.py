"""The process stage, bronze -> silver -> gold, as a full rebuild or an incremental update.

A **full rebuild** validates every active bronze row bucket by bucket, computes
the daily features of every symbol and the quarterly table. It also leaves the
state an update starts from, under ``lake/_state/``:

* ``symbols.parquet``: per symbol, its bucket, winning source (FEATURES.md
  section 5), newest date seen in any of its rows, oldest ``future_date``
  quarantined date, newest clean date and clean row count;
* ``tail/bucket=NNN/``: per symbol its last gold daily rows, at least
  :func:`catalog.lookback_rows` + 1 of them and every row since the start of the
  quarter two before its last one, with the unpublished recursive columns
  (``_avg_gain``, ``_avg_loss``);
* in ``gold/_state.json``: per-bucket counts, the bronze units and files
  processed, and the size and mtime of every lake file this stage wrote.

An **incremental update** reads only the new bronze rows: units never processed,
and the appended lines of a file whose new version extends the previous one
(``ingest`` records that in the catalog). Per symbol it then decides:

* *append* (the usual daily case): every new row is dated after every row seen
  for that symbol and comes from its winning source, so validation of the new
  rows alone gives the rows a full rebuild would. Their daily features are
  computed from the symbol's tail (the window context) with the recursive
  features (EMA, MACD signal, Wilder RSI/ATR) carried from its last row;
  silver and gold get one new part file per bucket; the quarters touched, and
  the one before them (its label), are recomputed from the tail.
* *rebuild*: anything else (late history, a changed file that is not an append,
  a new winning source, a ``future_date`` row that the new as-of date makes
  valid): the symbol's bucket is validated and computed again in full, which
  keeps the counts exact.

When the dataset's last date moves past a quarter's last session, that quarter
becomes complete for every symbol: the recent quarters of all symbols are then
recomputed from the tails. Anything the state cannot vouch for (no state, other
settings or code version, an earlier as-of date, a lake file changed since)
makes a full rebuild. ``incremental == full`` is tested row for row
(tests/e2e/test_incremental.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from stockbatch import __version__, lake, quality, schema
from stockbatch.calendar import SessionCalendar
from stockbatch.features.catalog import CARRY_COLUMNS, STATE_COLUMNS, lookback_rows
from stockbatch.settings import Settings

SYMBOL = "symbol"
DATE = "trade_date"

CONTEXT_ROWS = lookback_rows() + 1
"""Rows of a symbol an update reads before its first new row (the carry row included)."""

COMPACT_PARTS = 16
"""A bucket folder with more part files than this is rewritten as one file."""

_SYMBOLS_SCHEMA = pl.Schema(
    {
        SYMBOL: pl.String,
        "bucket": pl.Int32,
        "winner": pl.String,
        "last_seen": pl.Date,
        "future_min": pl.Date,
        "last_date": pl.Date,
        "n_rows": pl.Int64,
    }
)

_DAILY = lake.polars_schema(schema.DAILY_FEATURES)
TAIL_SCHEMA = pl.Schema([*_DAILY.items(), *((c, pl.Float64()) for c in STATE_COLUMNS)])
"""Columns of the tail store: gold daily plus the unpublished carried state."""


class Engine(Protocol):
    """What the process stage asks of a feature engine (frames in, frames out)."""

    name: str

    def validate(
        self,
        bronze: pl.DataFrame,
        *,
        as_of: dt.date,
        calendar: SessionCalendar,
        priority: list[str],
    ) -> quality.ValidationResult:
        """FEATURES.md sections 4-5 on every row of the symbols in ``bronze``."""
        ...

    def validate_buckets(
        self,
        bronze: pl.DataFrame,
        *,
        as_of: dt.date,
        calendar: SessionCalendar,
        priority: list[str],
    ) -> dict[int, quality.ValidationResult]:
        """:meth:`validate` of each bucket of ``bronze`` (its ``bucket`` column) on its own."""
        ...

    def daily(
        self, bars: pl.DataFrame, carry: pl.DataFrame | None = None, *, with_state: bool = False
    ) -> pl.DataFrame:
        """Section 2 (see :func:`polars_engine.compute_daily` for ``carry``/``with_state``)."""
        ...

    def quarterly(
        self, daily: pl.DataFrame, calendar: SessionCalendar, dataset_last: dt.date
    ) -> pl.DataFrame:
        """Section 3 from daily rows."""
        ...


class PolarsEngine:
    """The embedded engine."""

    name = "polars"

    def validate(
        self,
        bronze: pl.DataFrame,
        *,
        as_of: dt.date,
        calendar: SessionCalendar,
        priority: list[str],
    ) -> quality.ValidationResult:
        return quality.validate(
            bronze, as_of=as_of, is_session=calendar.is_session, source_priority=priority
        )

    def validate_buckets(
        self,
        bronze: pl.DataFrame,
        *,
        as_of: dt.date,
        calendar: SessionCalendar,
        priority: list[str],
    ) -> dict[int, quality.ValidationResult]:
        return {
            int(b): self.validate(part, as_of=as_of, calendar=calendar, priority=priority)
            for (b,), part in bronze.partition_by("bucket", as_dict=True).items()
        }

    def daily(
        self, bars: pl.DataFrame, carry: pl.DataFrame | None = None, *, with_state: bool = False
    ) -> pl.DataFrame:
        from stockbatch.features import polars_engine

        return polars_engine.compute_daily(bars, carry, with_state=with_state)

    def quarterly(
        self, daily: pl.DataFrame, calendar: SessionCalendar, dataset_last: dt.date
    ) -> pl.DataFrame:
        from stockbatch.features import polars_engine

        return polars_engine.compute_quarterly(daily, calendar, dataset_last)


class SparkEngine:
    """The Spark engine behind the same interface: frames go to Spark as Arrow and come
    back as Arrow. Used for incremental updates (small frames); a full rebuild on
    Spark reads and writes the lake's Parquet itself (:meth:`full_rebuild`)."""

    name = "spark"

    def __init__(self, spark: Any) -> None:
        self.spark = spark

    @classmethod
    def for_settings(cls, settings: Settings) -> SparkEngine:
        """A SparkSession for ``settings.process`` (master, extra conf)."""
        import os

        from stockbatch.features import spark_engine

        if os.environ.get("STOCKBATCH_SPARK_SUBMIT"):
            # Under spark-submit: its session (master, resources) is the one to use.
            from pyspark.sql import SparkSession

            return cls(SparkSession.builder.getOrCreate())
        p = settings.process
        return cls(spark_engine.spark_session(master=p.spark_master, conf=p.spark_conf))

    def _to_spark(self, frame: pl.DataFrame) -> Any:
        return self.spark.createDataFrame(frame.to_arrow())

    @staticmethod
    def _to_polars(sdf: Any, target: Any) -> pl.DataFrame:
        out = pl.from_arrow(sdf.toArrow())
        assert isinstance(out, pl.DataFrame)
        return lake.conform(out, target)

    def validate(
        self,
        bronze: pl.DataFrame,
        *,
        as_of: dt.date,
        calendar: SessionCalendar,
        priority: list[str],
    ) -> quality.ValidationResult:
        from stockbatch import quality_spark

        frame = bronze.select(c for c in bronze.columns if c != "bucket")
        res = quality_spark.validate(
            self._to_spark(frame),
            as_of=as_of,
            sessions=calendar.sessions.to_list(),
            source_priority=priority,
        )
        try:
            clean = self._to_polars(res.clean, schema.SILVER_BARS).sort(SYMBOL, DATE, "source")
            quarantine = self._to_polars(res.quarantine, schema.QUARANTINE).sort(
                "source_file", "line_no", nulls_last=True
            )
        finally:
            res.release()  # the flagged rows were persisted for the two reads above
        return quality.ValidationResult(
            clean=clean, quarantine=quarantine, counts=res.counts, winners=dict(res.winners)
        )

    def validate_buckets(
        self,
        bronze: pl.DataFrame,
        *,
        as_of: dt.date,
        calendar: SessionCalendar,
        priority: list[str],
    ) -> dict[int, quality.ValidationResult]:
        # One flagged frame and one counts job for every bucket (Spark's fixed cost per
        # job dwarfs an update's few rows); counts are then summed bucket by bucket.
        from stockbatch import quality_spark as qs
        from stockbatch.features import spark_engine

        work = qs.flagged(self._to_spark(bronze), as_of=as_of).persist()
        try:
            rows = [
                r.asDict() for r in qs.counts_frame(work, calendar.sessions.to_list()).collect()
            ]
            summary = qs.summarize(rows, with_calendar=True, source_priority=priority)
            present = sorted({int(b) for b in bronze["bucket"].unique().to_list()})
            counts = spark_engine.bucket_counts(rows, present, priority, bronze)
            clean = self._to_polars_with(qs.clean_rows(work, summary.losers, extra=["bucket"]),
                                         schema.SILVER_BARS)  # fmt: skip
            quarantine = self._to_polars_with(
                qs.quarantine_rows(work, extra=["bucket"]).drop("__row"), schema.QUARANTINE
            )
        finally:
            work.unpersist()
        out: dict[int, quality.ValidationResult] = {}
        for b in present:
            mine = {s: w for s, w in summary.winners.items() if s in counts[b]["__symbols"]}
            out[b] = quality.ValidationResult(
                clean=clean.filter(pl.col("bucket") == b)
                .drop("bucket")
                .sort(SYMBOL, DATE, "source"),
                quarantine=quarantine.filter(pl.col("bucket") == b)
                .drop("bucket")
                .sort("source_file", "line_no", nulls_last=True),
                counts={k: v for k, v in counts[b].items() if k != "__symbols"},
                winners=mine,
            )
        return out

    @staticmethod
    def _to_polars_with(sdf: Any, target: Any) -> pl.DataFrame:
        out = pl.from_arrow(sdf.toArrow())
        assert isinstance(out, pl.DataFrame)
        body = lake.conform(out, target)
        return body.with_columns(out["bucket"].cast(pl.Int32).alias("bucket"))

    def daily(
        self, bars: pl.DataFrame, carry: pl.DataFrame | None = None, *, with_state: bool = False
    ) -> pl.DataFrame:
        from stockbatch.features import spark_engine

        sdf = spark_engine.compute_daily(
            self._to_spark(bars.select(schema.DAILY_BAR_COLUMNS)),
            None if carry is None else self._to_spark(carry),
            with_state=with_state,
        )
        out = pl.from_arrow(sdf.toArrow())
        assert isinstance(out, pl.DataFrame)
        target = TAIL_SCHEMA if with_state else _DAILY
        return _sort(out.select(target.names()).cast(dict(target)))  # type: ignore[arg-type]

    def full_rebuild(
        self, ctx: StageContext, parts: pl.DataFrame, bronze_files: list[Path]
    ) -> tuple[Outcome, dict[str, dict[str, Any]]]:
        """The whole lake as one Spark application reading and writing Parquet
        (:func:`spark_engine.process_lake`), then the update state from its output."""
        from stockbatch.features import spark_engine

        settings = ctx.settings
        res = spark_engine.process_lake(
            self.spark,
            bronze_files=[str(p) for p in bronze_files],
            active_keys=[(r, b) for r, b in parts.select("ref", "batch").iter_rows()],
            as_of=ctx.as_of,
            calendar=ctx.calendar,
            source_priority=settings.process.source_priority,
            buckets=settings.lake.buckets,
            silver_root=ctx.silver,
            gold_root=ctx.gold,
            compression=ctx.compression,
            state_root=state_dir(settings),
        )
        states = []
        for b in range(settings.lake.buckets):
            clean = pl.read_parquet(
                lake.bucket_dir(ctx.silver / "bars", b) / "part-00000.parquet",
                columns=[SYMBOL, DATE, "superseded"],
            )
            quarantine = pl.read_parquet(
                lake.bucket_dir(ctx.silver / "quarantine", b) / "part-00000.parquet",
                columns=[SYMBOL, DATE, "reasons"],
            )
            mine = {
                s: w
                for s, w in res.winners.items()
                if lake.symbol_bucket(s, settings.lake.buckets) == b
            }
            validated = quality.ValidationResult(
                clean=clean, quarantine=quarantine, counts={}, winners=mine
            )
            states.append(symbol_state(validated, b))
        symbols = pl.concat(states).sort(SYMBOL)
        lake.write_parquet_atomic(symbols, _symbols_path(settings))
        outcome = Outcome(
            counts=res.counts,
            winners=dict(sorted(res.winners.items())),
            daily_rows=res.daily_rows,
            quarterly_rows=res.quarterly_rows,
            symbols=int((symbols["n_rows"] > 0).sum()),
            dataset_last=res.dataset_last_date,
            recomputed={"mode": "full", "buckets": list(range(settings.lake.buckets))},
        )
        return outcome, res.bucket_counts

    def quarterly(
        self, daily: pl.DataFrame, calendar: SessionCalendar, dataset_last: dt.date
    ) -> pl.DataFrame:
        from stockbatch.features import spark_engine

        sdf = spark_engine.compute_quarterly(
            self._to_spark(daily.select(_DAILY.names())),
            calendar.sessions.to_list(),
            dataset_last,
        )
        return self._to_polars(sdf, schema.QUARTERLY_FEATURES).sort(SYMBOL, "quarter")


# ----------------------------------------------------------------------------- outcome


@dataclass
class Outcome:
    """What the stage did (``pipeline.process`` turns it into a ``ProcessResult``)."""

    counts: dict[str, Any]
    winners: dict[str, str]
    daily_rows: int
    quarterly_rows: int
    symbols: int
    dataset_last: dt.date
    recomputed: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- state


def state_dir(settings: Settings) -> Path:
    """``lake/_state``: what an incremental update starts from."""
    return settings.lake_path / "_state"


def _tail_path(settings: Settings, bucket: int) -> Path:
    return lake.bucket_dir(state_dir(settings) / "tail", bucket) / "part-00000.parquet"


def read_tail(settings: Settings, bucket: int) -> pl.DataFrame:
    """One bucket's tail rows: its base part, then the parts updates appended."""
    parts = lake.parquet_files(_tail_path(settings, bucket).parent)
    if not parts:
        return pl.DataFrame(schema=TAIL_SCHEMA)
    return pl.concat([pl.read_parquet(p) for p in parts], how="vertical_relaxed")


def _symbols_path(settings: Settings) -> Path:
    return state_dir(settings) / "symbols.parquet"


def config_fingerprint(settings: Settings) -> str:
    """Everything but the data and the engine that decides the output of the stage."""
    payload = {
        "feature_set_version": schema.FEATURE_SET_VERSION,
        "code_version": __version__,
        "source_priority": settings.process.source_priority,
        "buckets": settings.lake.buckets,
        "calendar": settings.process.calendar,
        "context_rows": CONTEXT_ROWS,
    }
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def _written_roots(settings: Settings) -> list[Path]:
    root = settings.lake_path
    return [root / lake.SILVER / "bars", root / lake.SILVER / "quarantine", root / lake.GOLD,
            state_dir(settings)]  # fmt: skip


def snapshot(settings: Settings) -> dict[str, list[int]]:
    """(size, mtime_ns) of every file the stage wrote, by path relative to the lake."""
    out: dict[str, list[int]] = {}
    for root in _written_roots(settings):
        for p in lake.parquet_files(root):
            st = p.stat()
            out[str(p.relative_to(settings.lake_path))] = [st.st_size, st.st_mtime_ns]
    return out


def _quarter_start(d: pl.Expr) -> pl.Expr:
    return d.dt.truncate("1q")


def symbol_state(res: quality.ValidationResult, bucket: int) -> pl.DataFrame:
    """Per symbol of one validated bucket: what the next update must know."""
    clean = res.clean.select(SYMBOL, pl.col(DATE).alias("d"), "superseded")
    q = res.quarantine.filter(pl.col(SYMBOL).is_not_null()).select(
        SYMBOL,
        pl.col(DATE).str.to_date(quality.DATE_FORMAT, strict=False).alias("d"),
        pl.col("reasons").list.contains("future_date").alias("future"),
    )
    seen = pl.concat([clean.select(SYMBOL, "d"), q.select(SYMBOL, "d")])
    out = seen.group_by(SYMBOL).agg(pl.col("d").max().alias("last_seen"))
    fut = q.filter("future").group_by(SYMBOL).agg(pl.col("d").min().alias("future_min"))
    live = (
        clean.filter(~pl.col("superseded"))
        .group_by(SYMBOL)
        .agg(pl.col("d").max().alias("last_date"), pl.len().cast(pl.Int64).alias("n_rows"))
    )
    win = pl.DataFrame(
        {SYMBOL: list(res.winners), "winner": list(res.winners.values())},
        schema={SYMBOL: pl.String, "winner": pl.String},
    )
    return (
        out.join(fut, on=SYMBOL, how="left")
        .join(live, on=SYMBOL, how="left")
        .join(win, on=SYMBOL, how="left")
        .with_columns(pl.lit(bucket, pl.Int32).alias("bucket"), pl.col("n_rows").fill_null(0))
        .select(_SYMBOLS_SCHEMA.names())
        .cast(dict(_SYMBOLS_SCHEMA))  # type: ignore[arg-type]
    )


def tail_of(daily: pl.DataFrame) -> pl.DataFrame:
    """The rows an update needs of each symbol (``daily`` sorted by symbol, date)."""
    last = pl.col(DATE).max().over(SYMBOL)
    cut = _quarter_start(last).dt.offset_by("-6mo")
    from_end = pl.int_range(pl.len()).reverse().over(SYMBOL)
    return daily.filter((from_end < CONTEXT_ROWS) | (pl.col(DATE) >= cut)).select(
        TAIL_SCHEMA.names()
    )


def _sort(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort(SYMBOL, DATE)


# ----------------------------------------------------------------------------- stage


@dataclass
class StageContext:
    """What every step of one process run shares."""

    settings: Settings
    engine: Engine
    run_id: str
    as_of: dt.date
    calendar: SessionCalendar
    progress: Callable[[str, int], Any]

    @property
    def silver(self) -> Path:
        return self.settings.lake_path / lake.SILVER

    @property
    def gold(self) -> Path:
        return self.settings.lake_path / lake.GOLD

    @property
    def compression(self) -> str:
        return self.settings.lake.compression

    def validate(self, bronze: pl.DataFrame) -> quality.ValidationResult:
        return self.engine.validate(
            bronze,
            as_of=self.as_of,
            calendar=self.calendar,
            priority=self.settings.process.source_priority,
        )

    def write(self, frame: pl.DataFrame, target: Any, path: Path) -> Path:
        lake.write_parquet_atomic(lake.conform(frame, target), path, self.compression)
        return path


def _only(folder: Path, keep: Path) -> None:
    """Delete every Parquet part in ``folder`` but ``keep``."""
    for p in lake.parquet_files(folder):
        if p != keep:
            p.unlink()


def _sum_counts(total: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if isinstance(value, dict):
            _sum_counts(total.setdefault(key, {}), value)
        elif value is None or total.get(key, 0) is None:
            total[key] = None
        else:
            total[key] = total.get(key, 0) + value


def _json_counts(counts: dict[str, Any]) -> dict[str, Any]:
    """Counts as they read back from JSON (a None file name becomes "null")."""
    loaded: dict[str, Any] = json.loads(json.dumps(counts))
    return loaded


def total_counts(bucket_counts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Sum of per-bucket counts, in bucket order."""
    total: dict[str, Any] = {}
    for b in sorted(bucket_counts, key=int):
        _sum_counts(total, bucket_counts[b])
    if "per_file" in total:
        total["per_file"] = dict(sorted(total["per_file"].items()))
    return total


def rebuild_bucket_silver(
    ctx: StageContext, b: int, bronze: pl.DataFrame
) -> tuple[quality.ValidationResult, pl.DataFrame]:
    """Validate every active row of bucket ``b``; write its silver as one part per layer."""
    res = ctx.validate(bronze)
    for name, frame, target in (
        ("bars", res.clean, schema.SILVER_BARS),
        ("quarantine", res.quarantine, schema.QUARANTINE),
    ):
        folder = lake.bucket_dir(ctx.silver / name, b)
        _only(folder, ctx.write(frame, target, folder / "part-00000.parquet"))
    return res, symbol_state(res, b)


def rebuild_bucket_gold(ctx: StageContext, b: int, bars: pl.DataFrame) -> pl.DataFrame:
    """Daily features of every symbol of bucket ``b``; writes gold and the tail."""
    daily = ctx.engine.daily(bars, with_state=True)
    folder = lake.bucket_dir(ctx.gold / "daily_features", b)
    _only(folder, ctx.write(daily, schema.DAILY_FEATURES, folder / "part-00000.parquet"))
    tail_path = _tail_path(ctx.settings, b)
    lake.write_parquet_atomic(tail_of(daily), tail_path, ctx.compression)
    return daily


def full_rebuild(
    ctx: StageContext, buckets: int, read_bronze: Callable[[int], pl.DataFrame]
) -> tuple[Outcome, dict[str, dict[str, Any]]]:
    """Every bucket from bronze; returns the outcome and the per-bucket counts."""
    bucket_counts: dict[str, dict[str, Any]] = {}
    winners: dict[str, str] = {}
    states: list[pl.DataFrame] = []
    task = ctx.progress("validate", buckets)
    try:
        for b in range(buckets):
            res, state = rebuild_bucket_silver(ctx, b, read_bronze(b))
            bucket_counts[str(b)] = res.counts
            winners.update(res.winners)
            states.append(state)
            task.advance()
    finally:
        task.close()
    symbols = pl.concat(states) if states else pl.DataFrame(schema=_SYMBOLS_SCHEMA)
    dataset_last = symbols["last_date"].max()
    last = dataset_last if isinstance(dataset_last, dt.date) else ctx.as_of
    quarterly_parts: list[pl.DataFrame] = []
    daily_rows = 0
    task = ctx.progress("features", buckets)
    try:
        for b in range(buckets):
            path = lake.bucket_dir(ctx.silver / "bars", b) / "part-00000.parquet"
            bars = pl.read_parquet(path).filter(~pl.col("superseded"))
            daily = rebuild_bucket_gold(ctx, b, bars)
            daily_rows += daily.height
            if daily.height:
                quarterly_parts.append(ctx.engine.quarterly(daily, ctx.calendar, last))
            task.advance()
    finally:
        task.close()
    _replace_missing_buckets(ctx, buckets)
    quarterly = _concat_quarterly(quarterly_parts)
    write_quarterly(ctx, quarterly)
    lake.write_parquet_atomic(symbols.sort(SYMBOL), _symbols_path(ctx.settings))
    outcome = Outcome(
        counts=total_counts(bucket_counts),
        winners=dict(sorted(winners.items())),
        daily_rows=daily_rows,
        quarterly_rows=quarterly.height,
        symbols=int((symbols["n_rows"] > 0).sum()),
        dataset_last=last,
        recomputed={"mode": "full", "buckets": list(range(buckets))},
    )
    return outcome, bucket_counts


def _replace_missing_buckets(ctx: StageContext, buckets: int) -> None:
    """Drop bucket folders beyond ``buckets`` (left by a run with more buckets)."""
    for root in (ctx.silver / "bars", ctx.silver / "quarantine", ctx.gold / "daily_features",
                 state_dir(ctx.settings) / "tail"):  # fmt: skip
        for p in lake.parquet_files(root):
            name = p.parent.name
            if name.startswith("bucket=") and int(name.removeprefix("bucket=")) >= buckets:
                p.unlink()


def _concat_quarterly(parts: list[pl.DataFrame]) -> pl.DataFrame:
    if not parts:
        out = pl.from_arrow(schema.QUARTERLY_FEATURES.empty_table())
        assert isinstance(out, pl.DataFrame)
        return out
    return pl.concat(parts).sort(SYMBOL, "quarter")


def write_quarterly(ctx: StageContext, quarterly: pl.DataFrame) -> None:
    path = ctx.gold / "quarterly_features" / "part-00000.parquet"
    ctx.write(quarterly, schema.QUARTERLY_FEATURES, path)


def read_quarterly(ctx: StageContext) -> pl.DataFrame:
    path = ctx.gold / "quarterly_features" / "part-00000.parquet"
    return pl.read_parquet(path)


# ----------------------------------------------------------------------------- planning


@dataclass
class Plan:
    """What an update must do, or why it cannot be incremental (``full_reason``)."""

    full_reason: str | None = None
    fresh: pl.DataFrame | None = None
    """New bronze rows of the symbols that are appended to."""
    rebuild: set[int] = field(default_factory=set)
    """Buckets to validate and compute again in full."""
    new_files: list[str] = field(default_factory=list)

    @property
    def nothing(self) -> bool:
        return (
            self.full_reason is None
            and not self.rebuild
            and (self.fresh is None or self.fresh.is_empty())
        )


def _unit_key(source: str, ref: str) -> str:
    return f"{source}\x1f{ref}"


def units_record(active: pl.DataFrame) -> dict[str, list[str]]:
    """The processed units, as stored in the state: key -> [sha256, batch]."""
    return {
        _unit_key(r["source"], r["ref"]): [r["sha256"], r["batch"]]
        for r in active.iter_rows(named=True)
    }


def plan_update(
    settings: Settings,
    state: dict[str, Any],
    active: pl.DataFrame,
    parts: pl.DataFrame,
    as_of: dt.date,
    bronze_files: list[Path],
) -> Plan:
    """Decide what an update recomputes (see the module docstring)."""
    if not state.get("incremental"):
        return Plan(full_reason="no incremental state yet")
    if state.get("config") != config_fingerprint(settings):
        return Plan(full_reason="settings or code version changed")
    if as_of < dt.date.fromisoformat(state["as_of"]):
        return Plan(full_reason="the as-of date moved back")
    if snapshot(settings) != state.get("files"):
        return Plan(full_reason="lake files changed since the last process run")
    symbols_path = _symbols_path(settings)
    if not symbols_path.exists():
        return Plan(full_reason="no symbol state")

    done: dict[str, list[str]] = state["units"]
    current = units_record(active)
    if any(k not in current for k in done):
        return Plan(full_reason="a processed unit is no longer in the catalog")
    chains: dict[str, list[dict[str, Any]]] = {}
    for r in parts.iter_rows(named=True):
        chains.setdefault(_unit_key(r["source"], r["ref"]), []).append(r)
    fresh_keys: list[dict[str, Any]] = []
    changed_refs: list[tuple[str, str]] = []
    for r in active.iter_rows(named=True):
        key = _unit_key(r["source"], r["ref"])
        before = done.get(key)
        if before == [r["sha256"], r["batch"]]:
            continue
        chain = chains.get(key, [r])
        if before is None:
            start = 0  # a unit never processed: every part is new
        else:
            at = [i for i, e in enumerate(chain) if [e["sha256"], e["batch"]] == before]
            if at:
                start = at[0] + 1  # the versions appended since the processed one
            elif r["extends"] == before[0] and r["first_new_line"] is not None:
                chain, start = [r], 0  # landed whole, but known to extend the processed one
            elif before[0] == r["sha256"]:
                continue  # the same content landed again (e.g. --force): nothing new
            else:
                changed_refs.append((r["ref"], r["batch"]))
                continue
        for e in chain[start:]:
            first = e["first_new_line"] if (before is not None and not e["delta"]) else None
            fresh_keys.append(
                {"source_file": e["ref"], "ingest_run_id": e["batch"], "from": first or 0}
            )

    known_files = set(state.get("bronze_files", []))
    root = settings.lake_path
    new_files = [p for p in bronze_files if str(p.relative_to(root)) not in known_files]
    plan = Plan(new_files=[str(p.relative_to(root)) for p in new_files])
    rows = pl.DataFrame(schema=lake.polars_schema(schema.BRONZE_BARS))
    if (fresh_keys or changed_refs) and new_files:
        keys = pl.DataFrame(
            fresh_keys
            + [{"source_file": r, "ingest_run_id": b, "from": 0} for r, b in changed_refs],
            schema={"source_file": pl.String, "ingest_run_id": pl.String, "from": pl.Int64},
        )
        rows = (
            pl.scan_parquet(new_files)
            .join(keys.lazy(), on=["source_file", "ingest_run_id"], how="inner")
            .filter(pl.col("line_no") >= pl.col("from"))
            .drop("from")
            .collect()
        )
    changed = {r for r, _ in changed_refs}
    is_changed = pl.col("source_file").is_in(list(changed))
    plan.rebuild.update(rows.filter(is_changed)["bucket"].unique().to_list())
    fresh = rows.filter(~is_changed)

    syms = pl.read_parquet(symbols_path)
    # A future_date row that the new as-of date makes valid: revalidate its bucket.
    plan.rebuild.update(syms.filter(pl.col("future_min") <= as_of)["bucket"].to_list())
    if fresh.height:
        per = (
            fresh.select(
                SYMBOL,
                "bucket",
                "source",
                pl.col(DATE).str.to_date(quality.DATE_FORMAT, strict=False).alias("__d"),
            )
            .join(syms.select(SYMBOL, "winner", "last_seen"), on=SYMBOL, how="left")
            .group_by(SYMBOL, "bucket")
            .agg(
                # Dated after everything seen, and from the symbol's winning source.
                (pl.col("last_seen").is_null() | (pl.col("__d") > pl.col("last_seen")))
                .fill_null(True)  # an unparseable date is quarantined whatever came before
                .all()
                .alias("after"),
                (pl.col("winner").is_null() | (pl.col("source") == pl.col("winner")))
                .all()
                .alias("same_source"),
            )
        )
        bad = per.filter(~(pl.col("after") & pl.col("same_source")))
        plan.rebuild.update(bad["bucket"].to_list())
    plan.rebuild = {int(b) for b in plan.rebuild}
    plan.fresh = fresh.filter(~pl.col("bucket").is_in(list(plan.rebuild)))
    return plan


# ----------------------------------------------------------------------------- update


def _merge_symbol_state(old: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """Fold the state of newly appended rows into the stored state of their symbols."""
    both = pl.concat([old, new])
    return (
        both.group_by(SYMBOL, maintain_order=True)
        .agg(
            pl.col("bucket").first(),
            pl.col("winner").drop_nulls().first(),
            pl.col("last_seen").max(),
            pl.col("future_min").min(),
            pl.col("last_date").max(),
            pl.col("n_rows").sum(),
        )
        .select(_SYMBOLS_SCHEMA.names())
    )


def _adj_close() -> pl.Expr:
    close = pl.col("close")
    return close * pl.coalesce(pl.col("adj_close") / close, pl.lit(1.0))


def _boundary_jumps(tail: pl.DataFrame, new_live: pl.DataFrame) -> int:
    """suspect_jump pairs between a symbol's last stored row and its first new row.

    Both frames hold each symbol's rows in date order (tail parts are appended in
    time order; validated rows are sorted).
    """
    prev = tail.group_by(SYMBOL).agg(_adj_close().last().alias("prev"))
    first = new_live.group_by(SYMBOL).agg(_adj_close().first().alias("c"))
    f = quality.JUMP_FACTOR
    j = first.join(prev, on=SYMBOL).filter(
        (pl.col("c") > pl.col("prev") * f) | (pl.col("c") * f < pl.col("prev"))
    )
    return j.height


def _quarterly_from(
    ctx: StageContext, rows: pl.DataFrame, cuts: pl.DataFrame, dataset_last: dt.date
) -> pl.DataFrame:
    """Quarterly rows of each symbol from its cut quarter (``__cut``, a quarter start) on.

    ``rows``: the symbol's daily rows in date order, from before the cut. Fed to the
    engine: the rows from the cut on, plus the last row before it (the previous
    quarter's close, for q_return; the quarter it lands in is dropped again).
    """
    if cuts.is_empty():
        return _concat_quarterly([])
    mine = rows.join(cuts, on=SYMBOL, how="inner")
    before = mine.filter(pl.col(DATE) < pl.col("__cut")).group_by(SYMBOL).tail(1)
    feed = pl.concat([before, mine.filter(pl.col(DATE) >= pl.col("__cut"))])
    if feed.is_empty():
        return _concat_quarterly([])
    q = ctx.engine.quarterly(_sort(feed.select(_DAILY.names())), ctx.calendar, dataset_last)
    return (
        q.join(cuts, on=SYMBOL, how="inner")
        .filter(pl.col("quarter_start") >= pl.col("__cut"))
        .drop("__cut")
    )


def update(
    ctx: StageContext,
    plan: Plan,
    state: dict[str, Any],
    read_bronze: Callable[[int], pl.DataFrame],
) -> tuple[Outcome, dict[str, dict[str, Any]]]:
    """Apply an incremental plan; returns the outcome and the per-bucket counts."""
    settings = ctx.settings
    bucket_counts: dict[str, dict[str, Any]] = {k: v for k, v in state["bucket_counts"].items()}
    winners: dict[str, str] = dict(state.get("winners", {}))
    symbols = pl.read_parquet(_symbols_path(settings))
    old_last = dt.date.fromisoformat(state["dataset_last_date"])
    fresh = plan.fresh if plan.fresh is not None else pl.DataFrame()
    append_buckets = (
        sorted({int(b) for b in fresh["bucket"].unique().to_list()}) if fresh.height else []
    )
    rebuild = sorted(plan.rebuild)
    part = f"part-{ctx.run_id}.parquet"

    # Pass 1: validation (it decides the dataset's new last date).
    appended: dict[int, pl.DataFrame] = {}
    tails: dict[int, pl.DataFrame] = {}
    new_state: list[pl.DataFrame] = []
    task = ctx.progress("validate", len(rebuild) + len(append_buckets))
    try:
        for b in rebuild:
            res, st = rebuild_bucket_silver(ctx, b, read_bronze(b))
            bucket_counts[str(b)] = _json_counts(res.counts)
            winners = {
                s: w
                for s, w in winners.items()
                if lake.symbol_bucket(s, settings.lake.buckets) != b
            }
            winners.update(res.winners)
            symbols = symbols.filter(pl.col("bucket") != b)
            new_state.append(st)
            task.advance()
        validated = (
            ctx.engine.validate_buckets(
                fresh.filter(pl.col("bucket").is_in(append_buckets)),
                as_of=ctx.as_of,
                calendar=ctx.calendar,
                priority=settings.process.source_priority,
            )
            if append_buckets
            else {}
        )
        for b in append_buckets:
            res = validated[b]
            live = res.clean.filter(~pl.col("superseded"))
            counts = res.counts
            if live.height:
                tails[b] = read_tail(settings, b)
                counts["health"]["suspect_jump"] += _boundary_jumps(tails[b], live)
            for name, frame, target in (
                ("bars", res.clean, schema.SILVER_BARS),
                ("quarantine", res.quarantine, schema.QUARANTINE),
            ):
                if frame.height:
                    ctx.write(frame, target, lake.bucket_dir(ctx.silver / name, b) / part)
            merged = dict(bucket_counts.get(str(b), {}))
            _sum_counts(merged, _json_counts(counts))
            bucket_counts[str(b)] = merged
            for s, w in res.winners.items():
                winners.setdefault(s, w)
            new_state.append(symbol_state(res, b))
            appended[b] = live
            task.advance()
    finally:
        task.close()
    touched_state = pl.concat(new_state) if new_state else pl.DataFrame(schema=_SYMBOLS_SCHEMA)
    rebuilt_state = touched_state.filter(pl.col("bucket").is_in(rebuild))
    appended_state = touched_state.filter(~pl.col("bucket").is_in(rebuild))
    prior = symbols.filter(pl.col(SYMBOL).is_in(appended_state[SYMBOL].implode()))
    symbols = pl.concat(
        [
            symbols.filter(~pl.col(SYMBOL).is_in(appended_state[SYMBOL].implode())),
            rebuilt_state,
            _merge_symbol_state(prior, appended_state) if appended_state.height else appended_state,
        ]
    ).sort(SYMBOL)
    last_value = symbols["last_date"].max()
    new_last = last_value if isinstance(last_value, dt.date) else ctx.as_of

    # Pass 2: features.
    quarterly = read_quarterly(ctx)
    replace_syms: list[pl.DataFrame] = []  # (symbol, __cut): rows from __cut on are replaced
    new_quarters: list[pl.DataFrame] = []
    daily_new = 0
    task = ctx.progress("features", len(rebuild) + len(append_buckets))
    try:
        for b in rebuild:
            path = lake.bucket_dir(ctx.silver / "bars", b) / "part-00000.parquet"
            bars = pl.read_parquet(path).filter(~pl.col("superseded"))
            daily = rebuild_bucket_gold(ctx, b, bars)
            daily_new += daily.height
            syms_b = (
                rebuilt_state.filter(pl.col("bucket") == b)
                .select(SYMBOL)
                .with_columns(pl.lit(dt.date(1, 1, 1)).alias("__cut"))
            )
            replace_syms.append(syms_b)
            if daily.height:
                new_quarters.append(ctx.engine.quarterly(daily, ctx.calendar, new_last))
            task.advance()
        # The appended symbols of all buckets in one engine call each (the work is
        # per symbol; one call saves the per-call overhead of eight small ones).
        lives = [appended[b].with_columns(pl.lit(b, pl.Int32).alias("__b")) for b in append_buckets]
        live = pl.concat(lives) if lives else pl.DataFrame()
        if live.height:
            mine = live[SYMBOL].unique().implode()
            tail = pl.concat(list(tails.values())).filter(pl.col(SYMBOL).is_in(mine))
            ctx_rows = tail.filter(pl.int_range(pl.len()).reverse().over(SYMBOL) < CONTEXT_ROWS)
            held = ctx_rows.group_by(SYMBOL).agg(
                pl.len().alias("__held"), pl.col(DATE).max().alias("__prev")
            )
            counts_now = prior.select(SYMBOL, "n_rows").join(held, on=SYMBOL, how="inner")
            # A symbol whose whole history is in its tail is simply recomputed.
            carried = counts_now.filter(pl.col("n_rows") > pl.col("__held"))[SYMBOL].implode()
            carry = (
                ctx_rows.filter(pl.col(SYMBOL).is_in(carried))
                .group_by(SYMBOL)
                .agg(pl.all().sort_by(DATE).last())
                .select(SYMBOL, DATE, *CARRY_COLUMNS)
            )
            bars = pl.concat(
                [
                    ctx_rows.select(schema.DAILY_BAR_COLUMNS),
                    live.select(schema.DAILY_BAR_COLUMNS).cast(
                        {c: _DAILY[c] for c in schema.DAILY_BAR_COLUMNS}
                    ),
                ]
            )
            daily = ctx.engine.daily(bars, carry if carry.height else None, with_state=True)
            owner = live.select(SYMBOL, "__b").unique(SYMBOL)
            daily = (
                daily.join(held.select(SYMBOL, "__prev"), on=SYMBOL, how="left")
                .filter(pl.col("__prev").is_null() | (pl.col(DATE) > pl.col("__prev")))
                .drop("__prev")
                .join(owner, on=SYMBOL, how="left")
            )
            daily_new += daily.height
            for b in tails:
                mine_b = daily.filter(pl.col("__b") == b)
                folder = lake.bucket_dir(ctx.gold / "daily_features", b)
                ctx.write(mine_b, schema.DAILY_FEATURES, folder / part)
                tail_dir = _tail_path(settings, b).parent
                lake.write_parquet_atomic(
                    mine_b.select(TAIL_SCHEMA.names()), tail_dir / part, ctx.compression
                )
                _compact(ctx, b)
                task.advance()
            cuts = daily.group_by(SYMBOL).agg(
                _quarter_start(pl.col(DATE).min()).dt.offset_by("-3mo").alias("__cut")
            )
            replace_syms.append(cuts)
            rows = pl.concat([tail, daily.select(TAIL_SCHEMA.names())])
            new_quarters.append(_quarterly_from(ctx, rows, cuts, new_last))
    finally:
        task.close()

    refresh = _completion_changed(ctx.calendar, old_last, new_last)
    if refresh is not None:
        # Quarters became (or stopped being) complete: every symbol's recent quarters.
        done = set(rebuild)
        for b in range(settings.lake.buckets):
            if b in done:
                continue
            tail = read_tail(settings, b)
            if tail.is_empty():
                continue
            cuts = tail.select(SYMBOL).unique().with_columns(pl.lit(refresh).alias("__cut"))
            replace_syms.append(cuts)
            new_quarters.append(_quarterly_from(ctx, tail, cuts, new_last))
    if replace_syms:
        cuts_all = pl.concat(replace_syms).group_by(SYMBOL).agg(pl.col("__cut").min())
        keep = (
            quarterly.join(cuts_all, on=SYMBOL, how="left")
            .filter(pl.col("__cut").is_null() | (pl.col("quarter_start") < pl.col("__cut")))
            .drop("__cut")
        )
        # A symbol may be recomputed twice (appended to, and in a completion refresh);
        # both come from the same tail and last date, so either copy will do.
        fresh_q = _concat_quarterly([q for q in new_quarters if q.height]).unique(
            subset=[SYMBOL, "quarter"], keep="last", maintain_order=True
        )
        fresh_q = (
            fresh_q.join(cuts_all, on=SYMBOL, how="inner")
            .filter(pl.col("quarter_start") >= pl.col("__cut"))
            .drop("__cut")
        )
        quarterly = pl.concat([keep, fresh_q.select(keep.columns).cast(keep.schema)])
        quarterly = quarterly.sort(SYMBOL, "quarter")
        write_quarterly(ctx, quarterly)
    lake.write_parquet_atomic(symbols, _symbols_path(settings))
    daily_rows = int(state.get("daily_rows", 0))
    if rebuild:
        daily_rows = sum(
            pl.scan_parquet(p).select(pl.len()).collect().item()
            for p in lake.parquet_files(ctx.gold / "daily_features")
        )
    else:
        daily_rows += daily_new
    outcome = Outcome(
        counts=total_counts(bucket_counts),
        winners=dict(sorted(winners.items())),
        daily_rows=daily_rows,
        quarterly_rows=quarterly.height,
        symbols=int((symbols["n_rows"] > 0).sum()),
        dataset_last=new_last,
        recomputed={
            "mode": "incremental",
            "new_rows": int(fresh.height),
            "appended_buckets": append_buckets,
            "rebuilt_buckets": rebuild,
            "symbols_appended": int(appended_state.height),
            "symbols_rebuilt": int(rebuilt_state.height),
            "daily_rows_computed": daily_new,
            "quarters_recomputed_from": refresh.isoformat() if refresh else None,
        },
    )
    return outcome, bucket_counts


def _completion_changed(
    calendar: SessionCalendar, old_last: dt.date, new_last: dt.date
) -> dt.date | None:
    """When some quarter's completeness differs between the two last dates: the start of
    the quarter before the earliest such quarter (its label changes too); else None."""
    lo, hi = sorted((old_last, new_last))
    if lo == hi:
        return None
    q_start = dt.date(lo.year, 3 * ((lo.month - 1) // 3) + 1, 1)
    while q_start <= hi:
        nxt = _add_months(q_start, 3)
        last_session = calendar.last_session_on_or_before(nxt - dt.timedelta(days=1))
        if lo < last_session <= hi:
            return _add_months(q_start, -3)
        q_start = nxt
    return None


def _add_months(d: dt.date, months: int) -> dt.date:
    m = d.year * 12 + d.month - 1 + months
    return dt.date(m // 12, m % 12 + 1, d.day)


def _compact(ctx: StageContext, b: int) -> None:
    """Rewrite a bucket's parts as one file once they are many (keeps reads fast)."""
    for folder, target in (
        (lake.bucket_dir(ctx.silver / "bars", b), schema.SILVER_BARS),
        (lake.bucket_dir(ctx.silver / "quarantine", b), schema.QUARANTINE),
        (lake.bucket_dir(ctx.gold / "daily_features", b), schema.DAILY_FEATURES),
    ):
        parts = lake.parquet_files(folder)
        if len(parts) <= COMPACT_PARTS:
            continue
        frame = pl.concat([pl.read_parquet(p) for p in parts], how="vertical_relaxed")
        if "trade_date" in frame.columns and target is not schema.QUARANTINE:
            frame = frame.sort(
                SYMBOL,
                DATE,
                *(["source"] if "source" in frame.columns and target is schema.SILVER_BARS else []),
            )
        keep = folder / "part-00000.parquet"
        ctx.write(frame, target, keep)
        _only(folder, keep)
    tail_dir = _tail_path(ctx.settings, b).parent
    if len(lake.parquet_files(tail_dir)) > COMPACT_PARTS:
        keep = tail_dir / "part-00000.parquet"
        lake.write_parquet_atomic(tail_of(_sort(read_tail(ctx.settings, b))), keep, ctx.compression)
        _only(tail_dir, keep)


def iter_names(paths: Iterable[Path], root: Path) -> list[str]:
    """Paths relative to ``root``, as strings (the form the state stores)."""
    return [str(p.relative_to(root)) for p in paths]


def run_stage(
    ctx: StageContext,
    *,
    state: dict[str, Any],
    active: pl.DataFrame,
    parts: pl.DataFrame,
    bronze_files: list[Path],
    read_bronze: Callable[[int], pl.DataFrame],
    full: bool,
) -> tuple[Outcome, dict[str, Any]]:
    """Full rebuild or incremental update; returns the outcome and the new state entries."""
    settings = ctx.settings
    started = time.perf_counter()
    plan = (
        Plan(full_reason="asked for a full rebuild")
        if full
        else plan_update(settings, state, active, parts, ctx.as_of, bronze_files)
    )
    if plan.full_reason is not None:
        if isinstance(ctx.engine, SparkEngine):
            outcome, bucket_counts = ctx.engine.full_rebuild(ctx, parts, bronze_files)
        else:
            outcome, bucket_counts = full_rebuild(ctx, settings.lake.buckets, read_bronze)
        outcome.recomputed["reason"] = plan.full_reason
    else:
        outcome, bucket_counts = update(ctx, plan, state, read_bronze)
    outcome.recomputed["seconds"] = round(time.perf_counter() - started, 3)
    entries = {
        "incremental": True,
        "config": config_fingerprint(settings),
        "units": units_record(active),
        "bronze_files": iter_names(bronze_files, settings.lake_path),
        "bucket_counts": bucket_counts,
        "recomputed": outcome.recomputed,
    }
    return outcome, entries
