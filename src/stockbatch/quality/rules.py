"""The validation rules of FEATURES.md section 4, declared once as plain data.

:data:`RULES` holds no Polars or Spark object: :mod:`stockbatch.quality.polars`
and :mod:`stockbatch.quality.spark` each compile these very declarations, and
share the helpers below (helper column names, the source rank of section 5,
the row reconciliation).

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
* a rule that needs a value that is missing or unparseable does not fire;
* a value declared "not recorded" (:data:`NOT_RECORDED`: an open of exactly 0)
  is parsed as null: it is neither missing (its text is not blank) nor
  unparseable, and no rule that needs the value fires because of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from stockbatch import schema

NUMBER_PATTERN = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"
"""Grammar of a number field ([0-9], not \\d: \\d is Unicode-aware in some regex engines)."""

DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
DATE_FORMAT = "%Y-%m-%d"
MIN_DATE = date(1, 1, 1)
"""Year 0000 matches the pattern but is no date for Python, Arrow's readers or Spark."""

EARLIEST_DATE = date(1885, 1, 1)
"""``date_out_of_range`` (contract v2): a parsed date before this one is a typo (no daily US
exchange record is older). Every clean row is on or after it, so an exchange calendar from
this day covers any clean data."""

MIN_PRICE = 1e-6
MAX_PRICE = 1e9
MAX_VOLUME = 1e13
"""``implausible_value`` (contract v2): a positive price outside [MIN_PRICE, MAX_PRICE] or a
volume above MAX_VOLUME; beyond any real US listing, and such values overflow features."""

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

PRICE_VALUE_FIELDS = (*schema.PRICE_FIELDS, "adj_close")
"""The prices ``non_positive_price`` and ``implausible_value`` check (adj_close when present)."""

JUMP_FACTOR = 5.0
"""Health ``suspect_jump``: ``c_t > 5 * c_{t-1}`` or ``5 * c_t < c_{t-1}``."""

SILVER_ORDER = ("symbol", "trade_date", "source")
"""Sort order of silver bars (unique on clean rows)."""
QUARANTINE_ORDER = ("source_file", "line_no")
"""Sort order of quarantined rows (nulls last; ties in arrival order)."""

Op = Literal["<", "<=", ">", ">="]


# ----------------------------------------------------------------------------- checks


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
class DateBefore:
    """The parsed date is before ``bound``."""

    field: str
    bound: date


@dataclass(frozen=True)
class AnyOutside:
    """Any parsed, positive value of ``fields`` is below ``low`` or above ``high``.

    Values <= 0 are left to the sign rules (``non_positive_price``, ``negative_volume``).
    """

    fields: tuple[str, ...]
    low: float
    high: float


@dataclass(frozen=True)
class AnyOf:
    """Any of ``checks`` fires (each compiled as on its own)."""

    checks: tuple[Check, ...]


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
    | DateBefore
    | AnyOutside
    | AnyOf
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
        "open, high, low, close or (when present) adj_close <= 0 (an open of 0 is not recorded)",
        AnyCompare(PRICE_VALUE_FIELDS, "<=", 0.0),
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
    Rule(
        "date_out_of_range",
        f"the date is before {EARLIEST_DATE.isoformat()}",
        DateBefore("trade_date", EARLIEST_DATE),
    ),
    Rule(
        "implausible_value",
        f"a positive price (adj_close included) below {MIN_PRICE:g} or above {MAX_PRICE:g}, "
        f"or a volume above {MAX_VOLUME:g}",
        AnyOf(
            (
                AnyOutside(PRICE_VALUE_FIELDS, MIN_PRICE, MAX_PRICE),
                AnyCompare(("volume",), ">", MAX_VOLUME),
            )
        ),
    ),
)
"""The rules, in ``schema.REASON_CODES`` order (the order reasons are reported in)."""

if tuple(r.code for r in RULES) != schema.REASON_CODES:  # pragma: no cover - import-time guard
    raise RuntimeError("quality.RULES and schema.REASON_CODES disagree")


@dataclass(frozen=True)
class NotRecorded:
    """Parse-time declaration: a number field whose parsed value equals ``value`` means
    "not recorded" (FEATURES.md v2, zero open).

    Both compilers apply it in ``parse``: the field's parsed value becomes null (the
    clean row's value too), :func:`not_recorded_col` marks the row. The text is not
    blank, so ``AnyMissing`` does not fire; the value is null, so no rule that needs
    it fires (the row is validated without it). Clean, non-superseded rows marked so
    are counted as health flag ``health``. Duplicate detection compares the value as
    parsed (a ``0`` open is not the same as an empty one).
    """

    field: str
    value: float
    health: str


NOT_RECORDED: tuple[NotRecorded, ...] = (NotRecorded("open", 0.0, "open_missing"),)
"""The "not recorded" values of the contract: an open of exactly 0 (Yahoo's histories)."""

if not {d.health for d in NOT_RECORDED} <= set(schema.HEALTH_FLAGS):  # pragma: no cover
    raise RuntimeError("quality.NOT_RECORDED names a health flag schema.HEALTH_FLAGS lacks")
_MISSING_RULED = {f for r in RULES if isinstance(r.check, AnyMissing) for f in r.check.fields}
if not {d.field for d in NOT_RECORDED} <= _MISSING_RULED:  # pragma: no cover
    # The health counts read "null on a clean row" as "not recorded": that holds only
    # for a field whose blank text is quarantined (missing), so a null has one meaning.
    raise RuntimeError("a NOT_RECORDED field must be one that AnyMissing quarantines")


def group_rule() -> GroupConflict:
    """The one group check of :data:`RULES` (duplicates)."""
    for r in RULES:
        if isinstance(r.check, GroupConflict):
            return r.check
    raise RuntimeError("RULES declare no GroupConflict")  # pragma: no cover


def compare(left: Any, op: Op, right: Any) -> Any:
    """``left <op> right`` on engine expressions (a Polars ``Expr`` or a Spark ``Column``)."""
    if op == "<":
        return left < right
    if op == "<=":
        return left <= right
    if op == ">":
        return left > right
    return left >= right


# ----------------------------------------------------------------------------- helper columns
# Both compilers add these to the bronze rows (prefixed so they never clash with bronze names).

ROW = "__row"
ARITY_OK = "__arity_ok"
DATE = "__date"
"""The parsed ``trade_date`` (null when it does not parse)."""
DUP = "__duplicate"
COLLAPSED = "__collapsed"
KEY = "__key"
CLEAN = "__clean"
QUARANTINED = "__quarantined"


def num_col(name: str) -> str:
    """Column holding the parsed (finite) value of number field ``name``, null if not parsed."""
    return f"__num_{name}"


def not_recorded_col(name: str) -> str:
    """Column that is true when number field ``name`` parsed to its "not recorded" value."""
    return f"__nr_{name}"


def bad_col(name: str) -> str:
    """Column that is true when field ``name`` has text that does not parse."""
    return f"__bad_{name}"


def flag_col(code: str) -> str:
    """Boolean column of reason ``code``."""
    return f"__r_{code}"


# ----------------------------------------------------------------------------- outcome helpers


def source_rank(source: str, source_priority: list[str]) -> tuple[int, str]:
    """Sort key of a source: its place in ``source_priority`` (unlisted: after all), then name."""
    try:
        return (source_priority.index(source), source)
    except ValueError:
        return (len(source_priority), source)


class ValidationInvariantError(RuntimeError):
    """Internal error: a row was lost or counted twice (a bug, never bad input)."""


ROW_COUNTS = ("rows_in", "rows_clean", "rows_quarantined", "rows_deduplicated")
"""The counts every row is in exactly one of (``rows_in`` = the sum of the other three)."""


def reconcile(counts: dict[str, Any]) -> None:
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
    sums = {k: sum(c[k] for c in counts["per_file"].values()) for k in ROW_COUNTS}
    if any(sums[k] != counts[k] for k in sums):
        raise ValidationInvariantError(f"per-file counts {sums} do not add up to {counts}")
