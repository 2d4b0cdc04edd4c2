"""The feature engine behind the process stage: one protocol, a Polars and a Spark adapter.

Both take and return Polars frames, so the full rebuild and the incremental
update are written once. The Spark adapter moves frames to Spark and back as
Arrow (fine for an update's few rows); a full rebuild on Spark runs the
whole-lake job instead (:mod:`stockbatch.process.spark_job`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol

import polars as pl

from stockbatch import lake, quality, schema
from stockbatch.calendar import SessionCalendar
from stockbatch.process.state import DAILY_SCHEMA, DATE, SYMBOL, TAIL_SCHEMA, by_symbol_date
from stockbatch.settings import Settings


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
        """Section 2, sorted by (symbol, trade_date) (``carry``/``with_state``: see
        :func:`stockbatch.features.polars.compute_daily`)."""
        ...

    def quarterly(
        self, daily: pl.DataFrame, calendar: SessionCalendar, dataset_last: dt.date
    ) -> pl.DataFrame:
        """Section 3 from daily rows, sorted by (symbol, quarter)."""
        ...


def for_settings(settings: Settings) -> Engine:
    """The feature engine the settings ask for."""
    if settings.process.engine == "spark":
        from stockbatch.process.spark_session import session_for

        return SparkEngine(session_for(settings))
    return PolarsEngine()


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
        from stockbatch.features import polars as polars_features

        return polars_features.compute_daily(bars, carry, with_state=with_state)

    def quarterly(
        self, daily: pl.DataFrame, calendar: SessionCalendar, dataset_last: dt.date
    ) -> pl.DataFrame:
        from stockbatch.features import polars as polars_features

        return polars_features.compute_quarterly(daily, calendar, dataset_last)


class SparkEngine:
    """The Spark engine behind the same interface (frames cross as Arrow)."""

    name = "spark"

    def __init__(self, spark: Any) -> None:
        self.spark = spark

    def _to_spark(self, frame: pl.DataFrame) -> Any:
        return self.spark.createDataFrame(frame.to_arrow())

    @staticmethod
    def _to_polars(sdf: Any, target: Any, *, keep_bucket: bool = False) -> pl.DataFrame:
        out = pl.from_arrow(sdf.toArrow())
        assert isinstance(out, pl.DataFrame)
        body = lake.conform(out, target)
        if keep_bucket:
            body = body.with_columns(out["bucket"].cast(pl.Int32).alias("bucket"))
        return body

    def validate(
        self,
        bronze: pl.DataFrame,
        *,
        as_of: dt.date,
        calendar: SessionCalendar,
        priority: list[str],
    ) -> quality.ValidationResult:
        from stockbatch.quality import spark as spark_quality

        frame = bronze.select(c for c in bronze.columns if c != "bucket")
        res = spark_quality.validate(
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
        from stockbatch.quality import spark as spark_quality

        work = spark_quality.flagged(self._to_spark(bronze), as_of=as_of).persist()
        try:
            sessions = calendar.sessions.to_list()
            rows = [r.asDict() for r in spark_quality.counts_frame(work, sessions).collect()]
            summary = spark_quality.summarize(rows, with_calendar=True, source_priority=priority)
            present = sorted({int(b) for b in bronze["bucket"].unique().to_list()})
            owner = dict(bronze.select(SYMBOL, "bucket").unique(SYMBOL).iter_rows())
            per_bucket = spark_quality.summarize_buckets(
                rows, lambda s: int(owner.get(s, present[0])), present, source_priority=priority
            )
            clean_rows = spark_quality.clean_rows(work, summary.losers, extra=["bucket"])
            clean = self._to_polars(clean_rows, schema.SILVER_BARS, keep_bucket=True)
            quarantine = self._to_polars(
                spark_quality.quarantine_rows(work, extra=["bucket"]).drop("__row"),
                schema.QUARANTINE,
                keep_bucket=True,
            )
        finally:
            work.unpersist()
        return {
            b: quality.ValidationResult(
                clean=clean.filter(pl.col("bucket") == b)
                .drop("bucket")
                .sort(SYMBOL, DATE, "source"),
                quarantine=quarantine.filter(pl.col("bucket") == b)
                .drop("bucket")
                .sort("source_file", "line_no", nulls_last=True),
                counts=per_bucket[b].counts,
                winners=per_bucket[b].winners,
            )
            for b in present
        }

    def daily(
        self, bars: pl.DataFrame, carry: pl.DataFrame | None = None, *, with_state: bool = False
    ) -> pl.DataFrame:
        from stockbatch.features import spark as spark_features

        sdf = spark_features.compute_daily(
            self._to_spark(bars.select(schema.DAILY_BAR_COLUMNS)),
            None if carry is None else self._to_spark(carry),
            with_state=with_state,
        )
        out = pl.from_arrow(sdf.toArrow())
        assert isinstance(out, pl.DataFrame)
        target = TAIL_SCHEMA if with_state else DAILY_SCHEMA
        return by_symbol_date(out.select(target.names()).cast(dict(target)))  # type: ignore[arg-type]

    def quarterly(
        self, daily: pl.DataFrame, calendar: SessionCalendar, dataset_last: dt.date
    ) -> pl.DataFrame:
        from stockbatch.features import spark as spark_features

        sdf = spark_features.compute_quarterly(
            self._to_spark(daily.select(DAILY_SCHEMA.names())),
            calendar.sessions.to_list(),
            dataset_last,
        )
        return self._to_polars(sdf, schema.QUARTERLY_FEATURES).sort(SYMBOL, "quarter")
