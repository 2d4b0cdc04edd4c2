"""Validation bronze -> silver (FEATURES.md sections 4 and 5) compiled to Spark.

Compiles the very declarations of :mod:`stockbatch.quality.rules` to Spark
``Column`` expressions; nothing here restates a rule. The result has the same
rows, reasons and counts as :func:`stockbatch.quality.polars.validate`. Where
Spark and Polars differ (regex anchors, number and date parsing, weekday
numbering) and how its Spark jobs are laid out: docs/design/spark.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from stockbatch import schema
from stockbatch.quality.rules import (
    ARITY_OK,
    CLEAN,
    COLLAPSED,
    DATE,
    DATE_PATTERN,
    DUP,
    JUMP_FACTOR,
    MIN_DATE,
    NOT_RECORDED,
    NUMBER_FIELDS,
    NUMBER_PATTERN,
    QUARANTINE_ORDER,
    QUARANTINED,
    ROW,
    ROW_COUNTS,
    RULES,
    SILVER_ORDER,
    AfterAsOf,
    AnyCompare,
    AnyMissing,
    AnyOf,
    AnyOutside,
    Check,
    DateBefore,
    FieldCompare,
    GroupConflict,
    OutsideRange,
    Rule,
    Unparseable,
    ValidationInvariantError,
    WeekdayIn,
    bad_col,
    compare,
    flag_col,
    group_rule,
    not_recorded_col,
    num_col,
    reconcile,
    source_rank,
)

# --------------------------------------------------------------------------------------
# Spark types of the contract's Arrow schemas
# --------------------------------------------------------------------------------------


def spark_type(t: Any) -> T.DataType:
    """Spark type of an Arrow type of :mod:`stockbatch.schema`."""
    import pyarrow as pa

    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return T.StringType()
    if pa.types.is_date32(t):
        return T.DateType()
    if pa.types.is_float64(t):
        return T.DoubleType()
    if pa.types.is_boolean(t):
        return T.BooleanType()
    if pa.types.is_int32(t):
        return T.IntegerType()
    if pa.types.is_int16(t):
        return T.ShortType()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return T.ArrayType(spark_type(t.value_type), True)
    raise TypeError(f"no Spark type for Arrow {t}")


def spark_schema(arrow_schema: Any) -> T.StructType:
    """Spark ``StructType`` of one of the canonical Arrow schemas (all fields nullable)."""
    return T.StructType([T.StructField(f.name, spark_type(f.type), True) for f in arrow_schema])


BRONZE_SPARK = spark_schema(schema.BRONZE_BARS)
SILVER_SPARK = spark_schema(schema.SILVER_BARS)
QUARANTINE_SPARK = spark_schema(schema.QUARANTINE)

# --------------------------------------------------------------------------------------
# Compiler
# --------------------------------------------------------------------------------------


def java_regex(pattern: str) -> str:
    """A declared ``^...$`` ASCII pattern with Rust-regex anchor semantics, in Java syntax.

    Java's ``$`` (without MULTILINE) also matches before a final line terminator;
    ``\\z`` is the end of input, which is what Rust's ``$`` means.
    """
    if not pattern.isascii():
        raise ValueError(f"pattern {pattern!r} is not ASCII: Java and Rust classes may differ")
    if not (pattern.startswith("^") and pattern.endswith("$") and not pattern.endswith("\\$")):
        raise ValueError(f"pattern {pattern!r} must be anchored ^...$")
    if re.search(r"\\[dswDSW]", pattern):
        raise ValueError(f"pattern {pattern!r} uses a Unicode-dependent class")
    return pattern[:-1] + r"\z"


_NUMBER_RE = java_regex(NUMBER_PATTERN)
_DATE_RE = java_regex(DATE_PATTERN)


def _blank(name: str) -> Column:
    return F.col(name).isNull() | (F.col(name) == F.lit(""))


def _finite(x: Column) -> Column:
    return ~F.isnan(x) & (F.abs(x) != F.lit(float("inf")))


def _parse_date(text: Column) -> Column:
    """Date of a ``YYYY-MM-DD`` text that is a real calendar date on/after MIN_DATE, else null."""
    y = F.substring(text, 1, 4).cast("int")
    m = F.substring(text, 6, 2).cast("int")
    d = F.substring(text, 9, 2).cast("int")
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    days_in_month = (
        F.when(m == 2, F.when(leap, 29).otherwise(28)).when(m.isin(4, 6, 9, 11), 30).otherwise(31)
    )
    valid = (
        text.rlike(_DATE_RE)
        & (m >= 1)
        & (m <= 12)
        & (d >= 1)
        & (d <= days_in_month)
        # MIN_DATE is a year's first day (0001-01-01): a year bound says the same.
        & (y >= MIN_DATE.year)
    )
    if (MIN_DATE.month, MIN_DATE.day) != (1, 1):  # pragma: no cover - declaration guard
        raise NotImplementedError("MIN_DATE must be January 1st")
    return F.when(valid, F.make_date(y, m, d))


def parse(bronze: DataFrame) -> DataFrame:
    """``bronze`` plus a row id and the parsed helper columns the compiled rules read
    (the same names as :func:`stockbatch.quality.polars.parse`, the declared
    :data:`NOT_RECORDED` values nulled and marked the same way)."""
    cols: list[Column] = [
        F.monotonically_increasing_id().alias(ROW),
        F.col("raw_line").isNull().alias(ARITY_OK),
        _parse_date(F.col("trade_date")).alias(DATE),
    ]
    for n in NUMBER_FIELDS:
        # try_cast: never an ANSI error; the grammar gate decides what parses.
        v = F.when(F.col(n).rlike(_NUMBER_RE), F.col(n).try_cast("double"))
        cols.append(F.when(_finite(v), v).alias(num_col(n)))
    parsed = bronze.select("*", *cols)
    parsed = parsed.select(
        "*",
        *[(~_blank(n) & F.col(num_col(n)).isNull()).alias(bad_col(n)) for n in NUMBER_FIELDS],
        *[
            F.coalesce(F.col(num_col(d.field)) == F.lit(d.value), F.lit(False)).alias(
                not_recorded_col(d.field)
            )
            for d in NOT_RECORDED
        ],
    )
    if not NOT_RECORDED:
        return parsed
    return parsed.withColumns(
        {
            num_col(d.field): F.when(~F.col(not_recorded_col(d.field)), F.col(num_col(d.field)))
            for d in NOT_RECORDED
        }
    )


def _value(name: str) -> Column:
    return F.col(DATE) if name == "trade_date" else F.col(num_col(name))


def _any(exprs: list[Column]) -> Column:
    out = F.lit(False)
    for e in exprs:
        out = out | F.coalesce(e, F.lit(False))
    return out


def compile_rule(rule: Rule, *, as_of: date) -> Column:
    """Spark boolean column (never null) of ``rule`` over the parsed frame.

    ``GroupConflict`` reads the ``__duplicate`` column that :func:`validate`
    computes over groups.
    """
    expr = _compile_check(rule.check, as_of)
    if not isinstance(rule.check, Unparseable):
        # A wrong-arity row's fields are unknown, not missing: it is only unparseable.
        expr = F.col(ARITY_OK) & expr
    return F.coalesce(expr, F.lit(False)).alias(flag_col(rule.code))


def _compile_check(c: Check, as_of: date) -> Column:
    """One check as a Spark boolean column (null where it cannot tell)."""
    expr: Column
    if isinstance(c, Unparseable):
        if c.date_field != "trade_date":
            raise NotImplementedError("the Spark compiler parses trade_date only")
        expr = (
            ~F.col(ARITY_OK)
            | _any([_blank(n) for n in c.required])
            | F.col(DATE).isNull()
            | _any([F.col(bad_col(n)) for n in c.number_fields])
        )
    elif isinstance(c, AnyMissing):
        expr = F.col(ARITY_OK) & _any([_blank(n) for n in c.fields])
    elif isinstance(c, AnyCompare):
        expr = _any([compare(_value(n), c.op, F.lit(c.threshold)) for n in c.fields])
    elif isinstance(c, FieldCompare):
        expr = compare(_value(c.left), c.op, _value(c.right))
    elif isinstance(c, OutsideRange):
        lo, hi, v = _value(c.low), _value(c.high), _value(c.field)
        tol = F.greatest(F.abs(lo), F.abs(hi)) * c.rel_tol
        known = v.isNotNull() & lo.isNotNull() & hi.isNotNull()
        expr = known & ((v < lo - tol) | (v > hi + tol))
    elif isinstance(c, WeekdayIn):
        # Spark: Monday = 0; the declaration: ISO, Monday = 1.
        expr = (F.weekday(_value(c.field)) + 1).isin(*c.days)
    elif isinstance(c, AfterAsOf):
        expr = _value(c.field) > F.lit(as_of)
    elif isinstance(c, DateBefore):
        expr = _value(c.field) < F.lit(c.bound)
    elif isinstance(c, AnyOutside):
        expr = _any(
            [
                (_value(n) > 0) & ((_value(n) < F.lit(c.low)) | (_value(n) > F.lit(c.high)))
                for n in c.fields
            ]
        )
    elif isinstance(c, AnyOf):
        expr = _any([_compile_check(part, as_of) for part in c.checks])
    elif isinstance(c, GroupConflict):
        expr = F.col(DUP)
    else:  # pragma: no cover - exhaustive over Check
        raise TypeError(f"unknown check {c!r}")
    return expr


def _compare_key(names: Sequence[str]) -> Column:
    """One string per row that is equal on two rows iff all ``names`` compare equal.

    Per field: ``n<number>;`` for a parsed value (``-0.0`` normalised to ``0.0``;
    Spark's double-to-string is deterministic and injective), ``t<length>:<text>``
    for a text that does not parse (length-prefixed, so any text is
    self-delimiting), ``m;`` when missing. One key keeps the window to three
    aggregates instead of three per field (a much smaller plan to analyse).
    """
    parts: list[Column] = []
    not_recorded = {d.field: d.value for d in NOT_RECORDED}
    for name in names:
        v = F.col(num_col(name))
        if name in not_recorded:  # compare the value as parsed: 0 is not the same as missing
            v = F.when(F.col(not_recorded_col(name)), F.lit(not_recorded[name])).otherwise(v)
        num = F.when(v == 0, F.lit(0.0)).otherwise(v)
        text = F.col(name)
        parts.append(
            F.when(F.col(bad_col(name)), F.concat(F.lit("t"), F.length(text).cast("string"),
                                                  F.lit(":"), text))
            .when(num.isNotNull(), F.concat(F.lit("n"), num.cast("string"), F.lit(";")))
            .otherwise(F.lit("m;"))
        )  # fmt: skip
    return F.concat(*parts)


def _with_duplicates(work: DataFrame) -> DataFrame:
    """Add ``__duplicate`` (conflicting group) and ``__collapsed`` (a non-first twin).

    One window (one sort) per group of ``keys``: the group conflicts when the
    rows' comparison keys (:func:`_compare_key`, the Polars engine's
    ``n_unique > 1`` of (number, unparseable text) per field) are not all
    equal, i.e. min != max. The kept twin is the first by ``keep_order``.
    """
    g = group_rule()
    keys = [DATE if k == "trade_date" else k for k in g.keys]
    # symbol first: the lake job partitions by symbol, so this window needs no shuffle.
    keys = sorted(keys, key=lambda k: k != "symbol")
    eligible = F.col(ARITY_OK) & ~_blank("symbol") & ~_blank("source") & F.col(DATE).isNotNull()
    order = [F.col(k).asc_nulls_last() for k in g.keep_order] + [F.col(ROW).asc()]
    w = Window.partitionBy(*keys).orderBy(*order)
    whole = w.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    key = F.col("__cmp")
    n = F.count(F.lit(1)).over(whole)
    conflict = F.min(key).over(whole) != F.max(key).over(whole)
    return (
        work.withColumn("__cmp", _compare_key(g.compare))
        .select(
            "*",
            F.coalesce(eligible & (n > 1) & conflict, F.lit(False)).alias(DUP),
            F.coalesce(
                eligible & (n > 1) & ~conflict & (F.row_number().over(w) > 1), F.lit(False)
            ).alias(COLLAPSED),
        )
        .drop("__cmp")
    )


def _all(exprs: list[Column]) -> Column:
    out = F.lit(True)
    for e in exprs:
        out = out & e
    return out


def flagged(bronze: DataFrame, *, as_of: date) -> DataFrame:
    """Parsed bronze + duplicate groups + every rule's flag + ``__clean`` / ``__quarantined``."""
    work = _with_duplicates(parse(_check_input(bronze)))
    flags = [compile_rule(r, as_of=as_of) for r in RULES]
    work = work.select("*", *flags)
    anyflag = _any([F.col(flag_col(r.code)) for r in RULES])
    # Collapsed twins are not validated: their kept twin carries their verdict.
    return work.select(
        "*",
        (~F.col(COLLAPSED) & anyflag).alias(QUARANTINED),
        (~F.col(COLLAPSED) & ~anyflag).alias(CLEAN),
    )


def _check_input(bronze: DataFrame) -> DataFrame:
    present = set(bronze.columns)
    missing = [f.name for f in BRONZE_SPARK if f.name != "bucket" and f.name not in present]
    if missing:
        raise ValueError(f"bronze frame lacks columns {missing}")
    types = dict(bronze.dtypes)
    out = bronze
    for f in BRONZE_SPARK:
        if f.name in present and types[f.name] != f.dataType.simpleString():
            out = out.withColumn(f.name, F.col(f.name).cast(f.dataType))
    return out


# --------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------


def _reasons() -> Column:
    """Array of the row's reason codes, in RULES order."""
    return F.filter(
        F.array(*[F.when(F.col(flag_col(r.code)), F.lit(r.code)) for r in RULES]),
        lambda x: x.isNotNull(),
    )


def quarantine_rows(work: DataFrame, extra: Sequence[str] = ()) -> DataFrame:
    """Quarantined rows: ``schema.QUARANTINE`` columns (+ ``__row``, for the tie-break,
    and the ``extra`` columns of ``work``)."""
    cols = [
        F.col(f.name).cast(f.dataType).alias(f.name)
        for f in QUARANTINE_SPARK
        if f.name != "reasons"
    ]
    return work.filter(F.col(QUARANTINED)).select(*cols, _reasons().alias("reasons"), ROW, *extra)


def clean_rows(
    work: DataFrame, losers: Sequence[tuple[str, str]], extra: Sequence[str] = ()
) -> DataFrame:
    """Clean rows in ``schema.SILVER_BARS`` columns (+ the ``extra`` columns of ``work``);
    ``losers``: the superseded (symbol, source) pairs."""
    rows = work.filter(F.col(CLEAN))
    if losers:
        spark = work.sparkSession
        lose = spark.createDataFrame(
            [(s, src) for s, src in losers], "symbol string, source string"
        ).withColumn("__sup", F.lit(True))
        rows = rows.join(F.broadcast(lose), ["symbol", "source"], "left")
        superseded = F.coalesce(F.col("__sup"), F.lit(False))
    else:
        superseded = F.lit(False)
    by_name: dict[str, Column] = {
        "trade_date": F.col(DATE),
        **{n: F.col(num_col(n)) for n in NUMBER_FIELDS},
        "superseded": superseded,
    }
    return rows.select(
        *[by_name.get(f.name, F.col(f.name)).cast(f.dataType).alias(f.name) for f in SILVER_SPARK],
        *extra,
    )


@dataclass
class SparkValidation:
    """Outcome of :func:`validate`, as :class:`stockbatch.quality.polars.ValidationResult`.

    ``clean``: ``schema.SILVER_BARS`` columns, superseded rows included and
    flagged; ``quarantine``: ``schema.QUARANTINE`` columns, ``reasons`` in
    RULES order. Both are lazy Spark frames without an order (Spark frames
    carry none): sort clean by :data:`SILVER_ORDER` and quarantine by
    :data:`QUARANTINE_ORDER` (nulls last) to get the Polars engine's order.
    ``counts`` and ``winners``: identical to the Polars engine's.
    ``work``: the flagged frame both outputs read (persisted; :meth:`release`
    frees it).
    """

    clean: DataFrame
    quarantine: DataFrame
    counts: dict[str, Any]
    winners: dict[str, str] = field(default_factory=dict)
    work: DataFrame | None = None
    superseded_pairs: list[tuple[str, str]] = field(default_factory=list)

    def release(self) -> None:
        """Unpersist the cached flagged frame."""
        if self.work is not None:
            self.work.unpersist()


def _off_calendar(sessions: Sequence[date]) -> Column:
    """Weekday that is not a session: a holiday within the sessions' range, or outside it
    (the Polars engine's calendar answers "unknown" there, which counts as off).

    The sessions travel as ONE binary literal, a day-by-day bitmap from the first
    to the last session (b'1' = session): an O(1) ``substring`` per row, where an
    ``isin`` of the ~600 holidays of 1962-2019 made the plan slow to optimise.
    Binary, not string: Spark's string ``substring`` walks the UTF-8 code points
    from the start (O(position), ~21,000 steps per row over 1962-2019: 69 s for
    1.9 M rows, measured), the binary one indexes bytes (0.4 s).
    """
    days = sorted(set(sessions))
    if not days:
        raise ValueError("sessions is empty")
    first, last = days[0], days[-1]
    bits = ["0"] * ((last - first).days + 1)
    for d in days:
        bits[(d - first).days] = "1"
    bitmap = bytearray("".join(bits).encode("ascii"))
    day = F.col(DATE)
    outside = (day < F.lit(first)) | (day > F.lit(last))
    position = F.datediff(day, F.lit(first)) + 1
    hole = F.substring(F.lit(bitmap), position, 1) == F.lit(bytearray(b"0"))
    return (F.weekday(day) < 5) & (outside | hole)


_REASON_SUM = "__n_"


def counts_frame(work: DataFrame, sessions: Sequence[date] | None) -> DataFrame:
    """One row per (source_file, symbol, source): every sum the counts need (a small frame)."""
    c = F.col(num_col("close"))
    adj = F.col(num_col("adj_close"))
    # c = close * factor (close > 0 on clean rows), as the Polars engine's health count.
    cadj = c * F.coalesce(adj / c, F.lit(1.0))
    # Clean rows of one (symbol, source), by date: for the winning source these are
    # exactly the non-superseded rows the Polars engine scans for jumps.
    w = Window.partitionBy("symbol", "source", CLEAN).orderBy(DATE)
    prev = F.lag(cadj, 1).over(w)
    jump = F.col(CLEAN) & ((cadj > prev * JUMP_FACTOR) | (cadj * JUMP_FACTOR < prev))
    off = F.col(CLEAN) & _off_calendar(sessions) if sessions is not None else F.lit(False)

    def n(e: Column) -> Column:
        return F.sum(F.coalesce(e, F.lit(False)).cast("long"))

    # (A window cannot sit inside an aggregate: the jump flag is a column first.)
    work = work.withColumn("__jump", jump)
    jump = F.col("__jump")
    return work.groupBy("source_file", "symbol", "source").agg(
        F.count(F.lit(1)).alias("rows_in"),
        n(F.col(CLEAN)).alias("rows_clean"),
        n(F.col(QUARANTINED)).alias("rows_quarantined"),
        n(F.col(COLLAPSED)).alias("rows_deduplicated"),
        *[
            n(F.col(QUARANTINED) & F.col(flag_col(r.code))).alias(_REASON_SUM + r.code)
            for r in RULES
        ],
        n(F.col(CLEAN) & (F.col(num_col("volume")) == 0)).alias("zero_volume"),
        n(off).alias("off_calendar"),
        n(jump).alias("suspect_jump"),
        *[n(F.col(CLEAN) & F.col(not_recorded_col(d.field))).alias(d.health) for d in NOT_RECORDED],
        *(
            [F.min(F.when(F.col(CLEAN), F.col("bucket"))).alias("bucket")]
            if "bucket" in work.columns
            else []
        ),
        F.min(F.when(F.col(CLEAN), F.col(DATE))).alias("first_date"),
        F.max(F.when(F.col(CLEAN), F.col(DATE))).alias("last_date"),
    )


@dataclass
class CountsSummary:
    """Counts of one validation, the winners, and the clean date range of the live rows."""

    counts: dict[str, Any]
    winners: dict[str, str]
    losers: list[tuple[str, str]]
    first_date: date | None
    last_date: date | None


def summarize(rows: list[Any], *, with_calendar: bool, source_priority: list[str]) -> CountsSummary:
    """The Polars-shaped counts dict from the rows of :func:`counts_frame` (driver side)."""
    best: dict[str, tuple[int, str]] = {}
    for r in rows:
        if r["rows_clean"]:
            rank = source_rank(r["source"], source_priority)
            if r["symbol"] not in best or rank < best[r["symbol"]]:
                best[r["symbol"]] = rank
    winners = {sym: rank[1] for sym, rank in sorted(best.items())}
    per_file: dict[str | None, dict[str, int]] = {}
    reasons = dict.fromkeys((r.code for r in RULES), 0)
    totals = dict.fromkeys(ROW_COUNTS, 0)
    health = dict.fromkeys(schema.HEALTH_FLAGS, 0)
    superseded = 0
    losers: set[tuple[str, str]] = set()
    first: date | None = None
    last: date | None = None
    for r in rows:
        pf = per_file.setdefault(r["source_file"], dict.fromkeys(totals, 0))
        for k in totals:
            pf[k] += int(r[k])
            totals[k] += int(r[k])
        for code in reasons:
            reasons[code] += int(r[_REASON_SUM + code])
        if not r["rows_clean"]:
            continue
        if winners[r["symbol"]] != r["source"]:
            superseded += int(r["rows_clean"])
            losers.add((r["symbol"], r["source"]))
            continue
        for k in health:
            health[k] += int(r[k])
        first = r["first_date"] if first is None else min(first, r["first_date"])
        last = r["last_date"] if last is None else max(last, r["last_date"])
    counts: dict[str, Any] = {
        **totals,
        "rows_superseded": superseded,
        "reasons": reasons,
        "health": {**health, "off_calendar": health["off_calendar"] if with_calendar else None},
        "per_file": per_file,
    }
    reconcile(counts)
    return CountsSummary(counts, winners, sorted(losers), first, last)


def summarize_buckets(
    rows: list[Any],
    bucket_of: Callable[[str | None], int],
    buckets: Iterable[int],
    *,
    source_priority: list[str],
) -> dict[int, CountsSummary]:
    """:func:`summarize` of each bucket's rows alone (``bucket_of``: a row's symbol -> its
    bucket; every bucket in ``buckets`` is listed, an empty one with zero counts).

    A symbol's rows are all in one bucket, so each bucket's winners are the
    winners of its symbols over all rows.
    """
    by: dict[int, list[Any]] = {b: [] for b in buckets}
    for r in rows:
        by[bucket_of(r["symbol"])].append(r)
    return {
        b: summarize(part, with_calendar=True, source_priority=source_priority)
        for b, part in by.items()
    }


def validate(
    bronze: DataFrame,
    *,
    as_of: date,
    sessions: Sequence[date] | None,
    source_priority: list[str],
    persist: bool = True,
) -> SparkValidation:
    """Validate bronze rows (every row of each of their symbols) like the Polars ``validate``.

    ``sessions``: the exchange sessions (e.g. ``SessionCalendar.sessions``) for
    the ``off_calendar`` health count; ``None`` reports it as ``None``. A
    weekday outside the sessions' range counts as off calendar (the Polars
    engine's calendar answers "unknown" there). Runs one Spark job (the
    counts); ``clean`` and ``quarantine`` stay lazy over the flagged frame,
    which is persisted when ``persist`` (call ``release()`` when done).
    """
    work = flagged(bronze, as_of=as_of)
    if persist:
        work = work.persist(StorageLevel.MEMORY_AND_DISK)
    rows = counts_frame(work, sessions).collect()
    summary = summarize(
        [r.asDict() for r in rows],
        with_calendar=sessions is not None,
        source_priority=source_priority,
    )
    return SparkValidation(
        clean=clean_rows(work, summary.losers),
        quarantine=quarantine_rows(work).drop(ROW),
        counts=summary.counts,
        winners=summary.winners,
        work=work if persist else None,
        superseded_pairs=summary.losers,
    )


__all__ = [
    "QUARANTINE_ORDER",
    "SILVER_ORDER",
    "CountsSummary",
    "SparkValidation",
    "ValidationInvariantError",
    "clean_rows",
    "compile_rule",
    "counts_frame",
    "flagged",
    "java_regex",
    "parse",
    "quarantine_rows",
    "spark_schema",
    "summarize",
    "summarize_buckets",
    "validate",
]
