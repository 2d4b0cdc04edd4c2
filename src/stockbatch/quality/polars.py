"""Validation bronze -> silver (FEATURES.md sections 4 and 5) compiled to Polars.

:func:`validate` splits one symbol bucket of bronze rows into

* ``clean``: typed silver bars (``schema.SILVER_BARS``), rows of lower-priority
  sources of a symbol included but flagged ``superseded`` (section 5);
* ``quarantine``: the bronze rows as arrived plus every reason that applies
  (``schema.QUARANTINE``);
* collapsed identical twins, only counted (``rows_deduplicated``);

and checks ``rows_in == rows_clean + rows_quarantined + rows_deduplicated``
overall and per source file. The rules themselves are declared in
:mod:`stockbatch.quality.rules`; this module only compiles them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import polars as pl

from stockbatch import schema
from stockbatch.quality.rules import (
    ARITY_OK,
    CLEAN,
    COLLAPSED,
    DATE,
    DATE_FORMAT,
    DATE_PATTERN,
    DUP,
    JUMP_FACTOR,
    KEY,
    MIN_DATE,
    NOT_RECORDED,
    NUMBER_FIELDS,
    QUARANTINED,
    ROW,
    ROW_COUNTS,
    RULES,
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

SILVER_SCHEMA = pl.Schema(schema.SILVER_BARS)
QUARANTINE_SCHEMA = pl.Schema(schema.QUARANTINE)
BRONZE_SCHEMA = pl.Schema(schema.BRONZE_BARS)


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

    :data:`NOT_RECORDED` values (an open of exactly 0) become null here, marked in
    :func:`not_recorded_col` (see :class:`~stockbatch.quality.rules.NotRecorded`).

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
    if NOT_RECORDED:
        parsed = parsed.with_columns(
            (pl.col(num_col(d.field)) == d.value).fill_null(False).alias(not_recorded_col(d.field))
            for d in NOT_RECORDED
        ).with_columns(
            pl.when(~pl.col(not_recorded_col(d.field)))
            .then(pl.col(num_col(d.field)))
            .alias(num_col(d.field))
            for d in NOT_RECORDED
        )
    return (
        parsed.with_columns(_packed_key(sym_bits, src_bits).alias(KEY))
        .drop("__sym_rank", "__src_rank")
        .collect()
    )


KEY_BITS = 32
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
    (symbol, trade_date, source). When the ranks don't fit in ``KEY_BITS``, a
    dense rank of the three columns (slower, same order) stands in.
    """
    eligible = pl.col(ARITY_OK) & ~_blank("symbol") & ~_blank("source") & pl.col(DATE).is_not_null()
    if src_bits + sym_bits > KEY_BITS:
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


def _any(exprs: list[pl.Expr]) -> pl.Expr:
    return pl.any_horizontal(exprs) if exprs else pl.lit(False)


def compile_rule(rule: Rule, *, as_of: date) -> pl.Expr:
    """Polars boolean expression (never null) of ``rule`` over the parsed frame.

    The frame must carry the columns of :func:`parse`; ``GroupConflict``
    reads the ``__duplicate`` column that :func:`validate` computes over groups
    (a group property, not a row expression).
    """
    expr = _compile_check(rule.check, as_of)
    if not isinstance(rule.check, Unparseable):
        # A wrong-arity row's fields are unknown, not missing: it is only unparseable.
        expr = pl.col(ARITY_OK) & expr
    return expr.fill_null(False).alias(flag_col(rule.code))


def _compile_check(c: Check, as_of: date) -> pl.Expr:
    """One check as a Polars boolean expression (null where it cannot tell)."""
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
        expr = _any([compare(_value(n), c.op, pl.lit(c.threshold)) for n in c.fields])
    elif isinstance(c, FieldCompare):
        expr = compare(_value(c.left), c.op, _value(c.right))
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
    elif isinstance(c, DateBefore):
        expr = _value(c.field) < pl.lit(c.bound, dtype=pl.Date)
    elif isinstance(c, AnyOutside):
        expr = _any(
            [(_value(n) > 0) & ((_value(n) < c.low) | (_value(n) > c.high)) for n in c.fields]
        )
    elif isinstance(c, AnyOf):
        expr = _any([_compile_check(part, as_of).fill_null(False) for part in c.checks])
    elif isinstance(c, GroupConflict):
        expr = pl.col(DUP)
    else:  # pragma: no cover - exhaustive over Check
        raise TypeError(f"unknown check {c!r}")
    return expr


def _duplicates(work: pl.DataFrame) -> tuple[pl.Series, pl.Series]:
    """Row ids of conflicting duplicates and of collapsed twins (the kept twin excluded)."""
    g = group_rule()
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
    not_recorded = {d.field: d.value for d in NOT_RECORDED}
    for name in g.compare:
        v = pl.col(num_col(name))
        if name in not_recorded:  # compare the value as parsed: 0 is not the same as missing
            v = pl.when(pl.col(not_recorded_col(name))).then(not_recorded[name]).otherwise(v)
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
    out: dict[str, int | None] = {
        "zero_volume": zero_volume,
        "off_calendar": off_calendar,
        "suspect_jump": suspect_jump,
    }
    # A clean row's value is null only when it was not recorded (blank ones are quarantined).
    out.update({d.health: int(active[d.field].null_count()) for d in NOT_RECORDED})
    return {flag: out[flag] for flag in schema.HEALTH_FLAGS}


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
    work, collapsed_rows = _flagged(bronze, as_of)
    clean, quarantine, per_file_df, reason_df = _split(work)
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
    reconcile(counts)
    return ValidationResult(clean=clean, quarantine=quarantine, counts=counts, winners=winners)


def _flagged(bronze: pl.DataFrame, as_of: date) -> tuple[pl.DataFrame, pl.Series]:
    """Parsed rows with every rule's flag and ``__clean`` / ``__quarantined``; and the row
    ids of the collapsed twins."""
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
    return work, collapsed_rows


def _split(work: pl.DataFrame) -> list[pl.DataFrame]:
    """[clean rows (+ the packed key), quarantined rows with their reasons, per-file
    counts, reason counts] of the flagged rows, in one collect."""
    reasons = pl.concat_list(
        [pl.when(pl.col(flag_col(r.code))).then(pl.lit(r.code)) for r in RULES]
    ).list.drop_nulls()
    lazy = work.lazy()
    return pl.collect_all(
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
            lazy.filter(pl.col(QUARANTINED)).select(
                pl.col([flag_col(r.code) for r in RULES]).sum()
            ),
        ]
    )


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
        .agg(pl.col(n).sum() for n in ROW_COUNTS)
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
