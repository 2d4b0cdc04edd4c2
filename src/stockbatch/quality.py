"""Validation bronze -> silver (FEATURES.md sections 4 and 5), embedded engine.

The reason rules are declared once, as plain data (:data:`RULES`, no Polars
objects), so a second engine (Spark) compiles the very same declarations.
This module holds the declarations and their Polars compiler, and
:func:`validate`, which splits one symbol bucket of bronze rows into

* ``clean``: typed silver bars (``schema.SILVER_BARS``), rows of lower-priority
  sources of a symbol included but flagged ``superseded`` (section 5);
* ``quarantine``: the bronze rows as arrived plus every reason that applies
  (``schema.QUARANTINE``);
* collapsed identical twins, only counted (``rows_deduplicated``);

and checks ``rows_in == rows_clean + rows_quarantined + rows_deduplicated``
overall and per source file.

Parsing semantics (part of the declarations, so both engines agree):

* a field is *missing* when its text is null or ``""`` on a row of the right
  arity; a missing field is not unparseable;
* a number parses when its whole text matches :data:`NUMBER_PATTERN` (ASCII
  decimal with optional sign and exponent, no surrounding blanks) and the
  value is finite: ``nan``, ``inf``, ``1e400`` are unparseable;
* a date parses when it matches :data:`DATE_PATTERN` and is a real calendar
  date from 0001-01-01 on (``2017-02-30``, ``0000-01-01`` are unparseable);
* a row whose arity was wrong (``raw_line`` not null) is only ``unparseable``:
  its fields are unknown, not missing, so no other rule fires on it;
* a row without a symbol or source is ``unparseable`` (it cannot be placed);
* a rule that needs a value that is missing or unparseable does not fire.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import polars as pl
import pyarrow as pa

from stockbatch import schema

# --------------------------------------------------------------------------------------
# Declarations (engine-neutral: plain strings and numbers only)
# --------------------------------------------------------------------------------------

NUMBER_PATTERN = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"
"""Grammar of a number field ([0-9], not \\d: \\d is Unicode-aware in some regex engines)."""

DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
DATE_FORMAT = "%Y-%m-%d"
MIN_DATE = date(1, 1, 1)
"""Year 0000 matches the pattern but is no date for Python, Arrow's readers or Spark."""

NUMBER_FIELDS = ("open", "high", "low", "close", "adj_close", "volume")
COMPARE_FIELDS = NUMBER_FIELDS
"""Fields compared to tell identical twins from conflicting duplicates."""

REL_TOLERANCE = 1e-6
"""open/close may exceed [low, high] by ``REL_TOLERANCE * max(|low|, |high|)``.

Relative to the larger magnitude of the two bounds, i.e. to the scale of the
bar: sources round prices to a few significant digits (the Huge set prints 5),
so an absolute tolerance would be too strict for large prices and too loose
for penny stocks; using the larger bound keeps the tolerance positive even
when ``low`` is 0.
"""

JUMP_FACTOR = 5.0
"""Health ``suspect_jump``: ``c_t > 5 * c_{t-1}`` or ``5 * c_t < c_{t-1}``."""

Op = Literal["<", "<=", ">", ">="]


@dataclass(frozen=True)
class Unparseable:
    """Wrong arity, a required text that is null/empty, a date or a number that does not parse."""

    required: tuple[str, ...]
    date_field: str
    number_fields: tuple[str, ...]


@dataclass(frozen=True)
class AnyMissing:
    """Any of ``fields`` is missing (null or empty text) on a row of the right arity."""

    fields: tuple[str, ...]


@dataclass(frozen=True)
class AnyCompare:
    """Any parsed value of ``fields`` satisfies ``value <op> threshold`` (missing ones don't)."""

    fields: tuple[str, ...]
    op: Op
    threshold: float


@dataclass(frozen=True)
class FieldCompare:
    """``left <op> right`` on parsed values."""

    left: str
    op: Op
    right: str


@dataclass(frozen=True)
class OutsideRange:
    """``field < low - tol`` or ``field > high + tol``, ``tol = rel_tol * max(|low|, |high|)``.

    Needs all three values: it does not fire when any of them is missing.
    """

    field: str
    low: str
    high: str
    rel_tol: float


@dataclass(frozen=True)
class WeekdayIn:
    """The parsed date's ISO weekday (Monday = 1 ... Sunday = 7) is one of ``days``."""

    field: str
    days: tuple[int, ...]


@dataclass(frozen=True)
class AfterAsOf:
    """The parsed date is after the run's as-of date."""

    field: str


@dataclass(frozen=True)
class GroupConflict:
    """Rows sharing ``keys`` (all parsed/non-null) whose ``compare`` values are not all equal.

    A field's comparison value is its parsed number (so ``4`` equals ``4.0`` and
    ``-0`` equals ``0``), or its text as arrived when it does not parse (two
    different garbage texts are not identical twins); missing equals missing.
    Groups whose rows all agree are collapsed instead: the first row by
    ``keep_order`` is kept (and validated like any row), the others are counted
    as ``rows_deduplicated``.
    """

    keys: tuple[str, ...]
    compare: tuple[str, ...]
    keep_order: tuple[str, ...]


Check = (
    Unparseable
    | AnyMissing
    | AnyCompare
    | FieldCompare
    | OutsideRange
    | WeekdayIn
    | AfterAsOf
    | GroupConflict
)


@dataclass(frozen=True)
class Rule:
    """One reason code of FEATURES.md section 4 and the check that fires it."""

    code: str
    description: str
    check: Check


RULES: tuple[Rule, ...] = (
    Rule(
        "unparseable",
        "wrong arity, no symbol/source, or a date/number field that does not parse",
        Unparseable(
            required=("symbol", "source"), date_field="trade_date", number_fields=NUMBER_FIELDS
        ),
    ),
    Rule("missing_price", "open, high, low or close missing", AnyMissing(schema.PRICE_FIELDS)),
    Rule("missing_volume", "volume missing", AnyMissing(("volume",))),
    Rule(
        "non_positive_price",
        "open, high, low, close or (when present) adj_close <= 0",
        AnyCompare((*schema.PRICE_FIELDS, "adj_close"), "<=", 0.0),
    ),
    Rule("high_below_low", "high < low", FieldCompare("high", "<", "low")),
    Rule(
        "open_outside_range",
        "open outside [low, high] beyond the relative tolerance",
        OutsideRange("open", "low", "high", REL_TOLERANCE),
    ),
    Rule(
        "close_outside_range",
        "close outside [low, high] beyond the relative tolerance",
        OutsideRange("close", "low", "high", REL_TOLERANCE),
    ),
    Rule("negative_volume", "volume < 0", AnyCompare(("volume",), "<", 0.0)),
    Rule("weekend_date", "the date is a Saturday or Sunday", WeekdayIn("trade_date", (6, 7))),
    Rule(
        "duplicate",
        "several rows for one (source, symbol, trade_date) that disagree",
        GroupConflict(
            keys=("source", "symbol", "trade_date"),
            compare=COMPARE_FIELDS,
            keep_order=("source_file", "line_no"),
        ),
    ),
    Rule("future_date", "the date is after the run's as-of date", AfterAsOf("trade_date")),
)
"""The rules, in ``schema.REASON_CODES`` order (the order reasons are reported in)."""

if tuple(r.code for r in RULES) != schema.REASON_CODES:  # pragma: no cover - import-time guard
    raise RuntimeError("quality.RULES and schema.REASON_CODES disagree")


# --------------------------------------------------------------------------------------
# Polars compiler
# --------------------------------------------------------------------------------------

# Helper columns of the parsed frame (prefixed so they never clash with bronze names).
ROW = "__row"
ARITY_OK = "__arity_ok"
DATE = "__date"
DUP = "__duplicate"
COLLAPSED = "__collapsed"
KEY = "__key"
CLEAN = "__clean"
QUARANTINED = "__quarantined"


def num_col(name: str) -> str:
    """Column holding the parsed (finite) value of number field ``name``, null if not parsed."""
    return f"__num_{name}"


def bad_col(name: str) -> str:
    """Column that is true when field ``name`` has text that does not parse."""
    return f"__bad_{name}"


def flag_col(code: str) -> str:
    """Boolean column of reason ``code``."""
    return f"__r_{code}"


def _blank(name: str) -> pl.Expr:
    return pl.col(name).is_null() | (pl.col(name) == "")


def parse(bronze: pl.DataFrame) -> pl.DataFrame:
    """``bronze`` plus a row id and the parsed helper columns the compiled rules read.

    Numbers: Polars' own str->f64 cast accepts exactly the strings of
    :data:`NUMBER_PATTERN` plus non-finite spellings (``nan``, ``inf``,
    ``infinity``), which the finiteness test refuses along with overflow
    (``1e400``). So the grammar's regex is not run here (it would double the
    parse time); ``test_polars_parser_matches_declared_grammar`` pins that
    equivalence so a Polars upgrade cannot widen it silently.

    ``__key`` packs (symbol, trade_date, source) into one u64 whose order is
    the silver sort order, on rows where all three are present (else null): it
    finds repeated keys and sorts far faster than the three columns.
    """
    d = pl.col("trade_date")
    sym_rank, sym_bits = _lexical_rank(bronze["symbol"])
    src_rank, src_bits = _lexical_rank(bronze["source"])
    parsed = (
        bronze.lazy()
        .with_row_index(ROW)
        .with_columns(
            pl.col("raw_line").is_null().alias(ARITY_OK),
            *[pl.col(n).cast(pl.Float64, strict=False).alias(num_col(n)) for n in NUMBER_FIELDS],
            # The regex refuses what chrono's %Y-%m-%d would also take ("2017-1-5", "+2017-01-05").
            pl.when(d.str.contains(DATE_PATTERN))
            .then(d.str.to_date(DATE_FORMAT, strict=False))
            .alias(DATE),
            pl.lit(sym_rank).alias("__sym_rank"),
            pl.lit(src_rank).alias("__src_rank"),
        )
        .with_columns(
            pl.when(pl.col(DATE) >= pl.lit(MIN_DATE)).then(pl.col(DATE)).alias(DATE),
            *[
                pl.when(pl.col(num_col(n)).is_finite()).then(pl.col(num_col(n))).alias(num_col(n))
                for n in NUMBER_FIELDS
            ],
            *[
                (~_blank(n) & ~pl.col(num_col(n)).is_finite().fill_null(False)).alias(bad_col(n))
                for n in NUMBER_FIELDS
            ],
        )
    )
    return (
        parsed.with_columns(_packed_key(sym_bits, src_bits).alias(KEY))
        .drop("__sym_rank", "__src_rank")
        .collect()
    )


_KEY_BITS = 32
"""Bits of the packed key left for symbol and source ranks (the date takes the other 32)."""


def _lexical_rank(s: pl.Series) -> tuple[pl.Series, int]:
    """Rank of each value among the sorted distinct values (null stays null), and its bit width.

    Rows arrive in long runs of one symbol (and source): rank the runs, then
    spread run ranks back to rows, ~3x cheaper than casting every row.
    """
    runs = s.rle().struct.field("value")
    categories = runs.drop_nulls().unique().sort()
    ranks = runs.cast(pl.Enum(categories)).to_physical().cast(pl.UInt64)
    return ranks.gather(s.rle_id()).alias(s.name), max(1, len(categories).bit_length())


def _packed_key(sym_bits: int, src_bits: int) -> pl.Expr:
    """u64 ``symbol rank | date | source rank`` on rows where all three are present.

    Ranks are lexical (Polars' byte-wise string order), so the key orders like
    (symbol, trade_date, source). When the ranks don't fit in ``_KEY_BITS``, a
    dense rank of the three columns (slower, same order) stands in.
    """
    eligible = pl.col(ARITY_OK) & ~_blank("symbol") & ~_blank("source") & pl.col(DATE).is_not_null()
    if src_bits + sym_bits > _KEY_BITS:
        return pl.when(eligible).then(
            pl.struct("symbol", DATE, "source").rank("dense").cast(pl.UInt64)
        )
    day = (pl.col(DATE).cast(pl.Int32).cast(pl.Int64) + (1 << 31)).cast(pl.UInt64)
    shift_sym = pl.lit(1 << (32 + src_bits), dtype=pl.UInt64)
    shift_day = pl.lit(1 << src_bits, dtype=pl.UInt64)
    return pl.when(eligible).then(
        pl.col("__sym_rank") * shift_sym + day * shift_day + pl.col("__src_rank")
    )


def _value(name: str) -> pl.Expr:
    if name == "trade_date":
        return pl.col(DATE)
    return pl.col(num_col(name))


def _compare(left: pl.Expr, op: Op, right: pl.Expr) -> pl.Expr:
    if op == "<":
        return left < right
    if op == "<=":
        return left <= right
    if op == ">":
        return left > right
    return left >= right


def _any(exprs: list[pl.Expr]) -> pl.Expr:
    return pl.any_horizontal(exprs) if exprs else pl.lit(False)


def compile_rule(rule: Rule, *, as_of: date) -> pl.Expr:
    """Polars boolean expression (never null) of ``rule`` over the parsed frame.

    The frame must carry the columns of :func:`parse`; ``GroupConflict``
    reads the ``__duplicate`` column that :func:`validate` computes over groups
    (a group property, not a row expression).
    """
    c = rule.check
    expr: pl.Expr
    if isinstance(c, Unparseable):
        expr = (
            ~pl.col(ARITY_OK)
            | _any([_blank(n) for n in c.required])
            | pl.col(DATE).is_null()
            | _any([pl.col(bad_col(n)) for n in c.number_fields])
        )
        if c.date_field != "trade_date":
            raise NotImplementedError("the Polars compiler parses trade_date only")
    elif isinstance(c, AnyMissing):
        expr = pl.col(ARITY_OK) & _any([_blank(n) for n in c.fields])
    elif isinstance(c, AnyCompare):
        expr = _any([_compare(_value(n), c.op, pl.lit(c.threshold)) for n in c.fields])
    elif isinstance(c, FieldCompare):
        expr = _compare(_value(c.left), c.op, _value(c.right))
    elif isinstance(c, OutsideRange):
        lo, hi, v = _value(c.low), _value(c.high), _value(c.field)
        tol = pl.max_horizontal(lo.abs(), hi.abs()) * c.rel_tol
        # The rule needs all three values: without the guard, Kleene logic would
        # fire `open < low - tol` even when high is missing (True | null = True).
        known = v.is_not_null() & lo.is_not_null() & hi.is_not_null()
        expr = known & ((v < lo - tol) | (v > hi + tol))
    elif isinstance(c, WeekdayIn):
        expr = _value(c.field).dt.weekday().is_in(list(c.days))
    elif isinstance(c, AfterAsOf):
        expr = _value(c.field) > pl.lit(as_of, dtype=pl.Date)
    elif isinstance(c, GroupConflict):
        expr = pl.col(DUP)
    else:  # pragma: no cover - exhaustive over Check
        raise TypeError(f"unknown check {c!r}")
    if not isinstance(c, Unparseable):
        # A wrong-arity row's fields are unknown, not missing: it is only unparseable.
        expr = pl.col(ARITY_OK) & expr
    return expr.fill_null(False).alias(flag_col(rule.code))


def _group_rule() -> GroupConflict:
    for r in RULES:
        if isinstance(r.check, GroupConflict):
            return r.check
    raise RuntimeError("RULES declare no GroupConflict")  # pragma: no cover


def _duplicates(work: pl.DataFrame) -> tuple[pl.Series, pl.Series]:
    """Row ids of conflicting duplicates and of collapsed twins (the kept twin excluded)."""
    g = _group_rule()
    keys = [DATE if k == "trade_date" else k for k in g.keys]
    empty = pl.Series(ROW, [], dtype=pl.UInt32)
    # Nearly every key is unique: find the few repeated ones on the sorted packed
    # u64 (sorting integers is ~5x cheaper than hashing them), then compare
    # exactly on that small subset only.
    ordered = work[KEY].drop_nulls().sort()
    repeated = ordered.filter(ordered == ordered.shift(1)).unique()
    if repeated.len() == 0:
        return empty, empty
    multi = work.filter(pl.col(KEY).is_in(repeated.implode()))
    cmp_exprs: list[pl.Expr] = []
    for name in g.compare:
        v = pl.col(num_col(name))
        # -0.0 == 0.0: Polars 1.44 already hashes them alike; normalise anyway so the
        # declared semantics don't hang on a hashing detail.
        cmp_exprs.append(pl.when(v == 0).then(0.0).otherwise(v).alias(f"__cmp_{name}"))
        cmp_exprs.append(pl.when(pl.col(bad_col(name))).then(pl.col(name)).alias(f"__cmpt_{name}"))
    order = [*keys, *g.keep_order, ROW]
    multi = (
        multi.select(ROW, *keys, *g.keep_order, *cmp_exprs)
        .sort(order, nulls_last=True, maintain_order=True)
        .with_columns(
            (pl.struct(pl.col("^__cmp.*$")).n_unique().over(keys) > 1).alias(DUP),
            (pl.int_range(pl.len()).over(keys) > 0).alias(COLLAPSED),
        )
    )
    dup_rows = multi.filter(pl.col(DUP))[ROW]
    collapsed_rows = multi.filter(~pl.col(DUP) & pl.col(COLLAPSED))[ROW]
    return dup_rows, collapsed_rows


# --------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------


class ValidationInvariantError(RuntimeError):
    """Internal error: a row was lost or counted twice (a bug, never bad input)."""


@dataclass
class ValidationResult:
    """Outcome of :func:`validate` for one bucket of bronze rows.

    ``clean``: ``schema.SILVER_BARS`` columns, sorted by (symbol, trade_date,
    source), superseded rows included. ``quarantine``: ``schema.QUARANTINE``
    columns (the bronze row as arrived + ``reasons`` in REASON_CODES order),
    sorted by (source_file, line_no). ``counts``: ``rows_in``, ``rows_clean``
    (superseded included), ``rows_quarantined``, ``rows_deduplicated``,
    ``rows_superseded``, ``reasons`` {code: quarantined rows having it, every
    code}, ``health`` {zero_volume, off_calendar (None when no calendar was
    given), suspect_jump} over clean non-superseded rows, and ``per_file``
    {source_file: {rows_in, rows_clean, rows_quarantined, rows_deduplicated}}.
    ``winners``: {symbol: source} of section 5, for the run manifest.
    """

    clean: pl.DataFrame
    quarantine: pl.DataFrame
    counts: dict[str, Any]
    winners: dict[str, str] = field(default_factory=dict)


def _polars_schema(s: pa.Schema) -> pl.Schema:
    return pl.Schema(pl.from_arrow(s.empty_table()).schema)  # type: ignore[union-attr]


SILVER_SCHEMA = _polars_schema(schema.SILVER_BARS)
QUARANTINE_SCHEMA = _polars_schema(schema.QUARANTINE)
BRONZE_SCHEMA = _polars_schema(schema.BRONZE_BARS)


def source_rank(source: str, source_priority: list[str]) -> tuple[int, str]:
    """Sort key of a source: its place in ``source_priority`` (unlisted: after all), then name."""
    try:
        return (source_priority.index(source), source)
    except ValueError:
        return (len(source_priority), source)


def choose_winners(pairs: pl.DataFrame, source_priority: list[str]) -> dict[str, str]:
    """Section 5: per symbol, the best-ranked source among its (symbol, source) clean pairs."""
    winners: dict[str, str] = {}
    best: dict[str, tuple[int, str]] = {}
    for sym, src in pairs.select("symbol", "source").iter_rows():
        rank = source_rank(src, source_priority)
        if sym not in best or rank < best[sym]:
            best[sym], winners[sym] = rank, src
    return dict(sorted(winners.items()))


def _health(
    active: pl.DataFrame, is_session: Callable[[pl.Series], pl.Series] | None
) -> dict[str, int | None]:
    """Health flags over clean, non-superseded rows (one source per symbol, sorted)."""
    zero_volume = int((active["volume"] == 0).sum())
    off_calendar: int | None = None
    if is_session is not None:
        days = active["trade_date"].unique()
        days = days.filter(days.dt.weekday() <= 5)
        sessions = is_session(days) if len(days) else pl.Series([], dtype=pl.Boolean)
        if len(sessions) != len(days) or sessions.dtype != pl.Boolean:
            raise TypeError("is_session must return one Boolean per date it receives")
        off_days = days.filter(~sessions.fill_null(False))
        off_calendar = int(active["trade_date"].is_in(off_days.implode()).sum())
    # c = close * factor, factor = adj_close / close (close > 0 on clean rows) else 1.
    c = pl.col("close") * pl.coalesce(pl.col("adj_close") / pl.col("close"), pl.lit(1.0))
    prev = c.shift(1)
    same = pl.col("symbol") == pl.col("symbol").shift(1)
    jump = same & ((c > prev * JUMP_FACTOR) | (c * JUMP_FACTOR < prev))
    suspect_jump = int(active.select(jump.fill_null(False).sum()).item())
    return {"zero_volume": zero_volume, "off_calendar": off_calendar, "suspect_jump": suspect_jump}


def _check_input(bronze: pl.DataFrame) -> pl.DataFrame:
    missing = [n for n in BRONZE_SCHEMA.names() if n != "bucket" and n not in bronze.columns]
    if missing:
        raise ValueError(f"bronze frame lacks columns {missing}")
    casts = [
        pl.col(n).cast(t)
        for n, t in BRONZE_SCHEMA.items()
        if n in bronze.columns and bronze.schema[n] != t
    ]
    return bronze.with_columns(casts) if casts else bronze


def validate(
    bronze: pl.DataFrame,
    *,
    as_of: date,
    is_session: Callable[[pl.Series], pl.Series] | None,
    source_priority: list[str],
) -> ValidationResult:
    """Validate one bucket of bronze rows (every row of each of its symbols).

    ``as_of``: dates after it are ``future_date``. ``is_session``: maps a Date
    Series to a Boolean Series (exchange session or not), for the
    ``off_calendar`` health count; ``None`` skips it (reported as ``None``).
    ``source_priority``: section 5 order; unlisted sources rank after the
    listed ones, by name.
    """
    bronze = _check_input(bronze)
    work = parse(bronze)
    dup_rows, collapsed_rows = _duplicates(work)
    flags = [flag_col(r.code) for r in RULES]
    work = (
        work.lazy()
        .with_columns(
            pl.col(ROW).is_in(dup_rows.implode()).alias(DUP),
            pl.col(ROW).is_in(collapsed_rows.implode()).alias(COLLAPSED),
        )
        .with_columns(compile_rule(r, as_of=as_of) for r in RULES)
        # Collapsed twins are not validated: their kept twin carries their verdict.
        .with_columns(
            (~pl.col(COLLAPSED) & pl.any_horizontal(flags)).alias(QUARANTINED),
            (~pl.col(COLLAPSED) & ~pl.any_horizontal(flags)).alias(CLEAN),
        )
        .collect()
    )
    reasons = pl.concat_list(
        [pl.when(pl.col(flag_col(r.code))).then(pl.lit(r.code)) for r in RULES]
    ).list.drop_nulls()
    lazy = work.lazy()
    clean, quarantine, per_file_df, reason_df = pl.collect_all(
        [
            lazy.filter(pl.col(CLEAN)).select(
                "symbol",
                pl.col(DATE).alias("trade_date"),
                *[pl.col(num_col(n)).alias(n) for n in NUMBER_FIELDS],
                "source",
                "is_adjusted",
                pl.lit(False).alias("superseded"),
                "source_file",
                "line_no",
                KEY,
            ),
            lazy.filter(pl.col(QUARANTINED))
            .sort("source_file", "line_no", ROW, nulls_last=True, maintain_order=True)
            .select(
                *[n for n in QUARANTINE_SCHEMA.names() if n != "reasons"], reasons.alias("reasons")
            ),
            _per_file(lazy),
            lazy.filter(pl.col(QUARANTINED)).select(pl.col(flags).sum()),
        ]
    )
    clean = clean.select(*SILVER_SCHEMA.names(), KEY)  # column order of the contract
    pairs = _symbol_sources(clean)
    winners = choose_winners(pairs, source_priority)
    if pairs.height != len(winners):  # some symbol has clean rows from several sources
        clean = _flag_superseded(clean, winners)
    clean = _sort_silver(clean).cast(SILVER_SCHEMA)
    quarantine = quarantine.cast(QUARANTINE_SCHEMA)
    superseded = clean["superseded"]
    reason_row = reason_df.row(0) if reason_df.height else (0,) * len(RULES)
    per_file: dict[str | None, dict[str, int]] = {
        row["source_file"]: {k: int(v) for k, v in row.items() if k != "source_file"}
        for row in per_file_df.iter_rows(named=True)
    }
    counts: dict[str, Any] = {
        "rows_in": bronze.height,
        "rows_clean": clean.height,
        "rows_quarantined": quarantine.height,
        "rows_deduplicated": len(collapsed_rows),
        "rows_superseded": int(superseded.sum()),
        "reasons": {r.code: int(n or 0) for r, n in zip(RULES, reason_row, strict=True)},
        "health": _health(clean.filter(~superseded), is_session),
        "per_file": per_file,
    }
    _reconcile(counts)
    return ValidationResult(clean=clean, quarantine=quarantine, counts=counts, winners=winners)


def _per_file(work: pl.LazyFrame) -> pl.LazyFrame:
    """Per source file: rows_in / rows_clean / rows_quarantined / rows_deduplicated."""
    sums = (
        pl.len().alias("rows_in"),
        pl.col(CLEAN).sum().alias("rows_clean"),
        pl.col(QUARANTINED).sum().alias("rows_quarantined"),
        pl.col(COLLAPSED).sum().alias("rows_deduplicated"),
    )
    # A file's rows arrive contiguous: aggregate runs of equal names first
    # (adjacent compares and integer keys), then the few runs by name.
    return (
        work.group_by(pl.col("source_file").rle_id().alias("__run"))
        .agg(pl.col("source_file").first(), *sums)
        .group_by("source_file")
        .agg(
            pl.col(n).sum()
            for n in ("rows_in", "rows_clean", "rows_quarantined", "rows_deduplicated")
        )
        .sort("source_file", nulls_last=True)
    )


def _symbol_sources(clean: pl.DataFrame) -> pl.DataFrame:
    """Distinct (symbol, source) pairs of the clean rows."""
    s, src = pl.col("symbol"), pl.col("source")
    # Rows come in long runs of one pair: keep run starts, then dedupe those few.
    start = ((s != s.shift()) | (src != src.shift())).fill_null(True)
    return clean.lazy().select(s, src).filter(start).unique().collect()


def _flag_superseded(clean: pl.DataFrame, winners: dict[str, str]) -> pl.DataFrame:
    """Mark the rows of a symbol's non-winning sources ``superseded`` (section 5)."""
    win = pl.DataFrame(
        {"symbol": list(winners), "__winner": list(winners.values())},
        schema={"symbol": pl.String, "__winner": pl.String},
    )
    return (
        clean.join(win, on="symbol", how="left", maintain_order="left")
        .with_columns((pl.col("source") != pl.col("__winner")).alias("superseded"))
        .drop("__winner")
    )


def _sort_silver(clean: pl.DataFrame) -> pl.DataFrame:
    """Sort by (symbol, trade_date, source) via the packed key; unique on clean rows."""
    key = clean[KEY]
    # Skip the sort when already in order (bronze often arrives file by file, by date).
    if not bool((key > key.shift(1)).fill_null(True).all()):
        clean = clean.sort(KEY)
    return clean.drop(KEY)


def _reconcile(counts: dict[str, Any]) -> None:
    """Raise ValidationInvariantError unless every row is in exactly one place."""

    def check(where: str, c: dict[str, Any]) -> None:
        total = c["rows_clean"] + c["rows_quarantined"] + c["rows_deduplicated"]
        if c["rows_in"] != total:
            raise ValidationInvariantError(
                f"{where}: rows_in={c['rows_in']} != rows_clean={c['rows_clean']} + "
                f"rows_quarantined={c['rows_quarantined']} + "
                f"rows_deduplicated={c['rows_deduplicated']} (a validation bug)"
            )

    check("all files", counts)
    for name, c in counts["per_file"].items():
        check(f"file {name!r}", c)
    sums = {
        k: sum(c[k] for c in counts["per_file"].values())
        for k in ("rows_in", "rows_clean", "rows_quarantined", "rows_deduplicated")
    }
    if any(sums[k] != counts[k] for k in sums):
        raise ValidationInvariantError(f"per-file counts {sums} do not add up to {counts}")
