"""The features of FEATURES.md sections 1-3, declared once, as data.

Each :class:`FeatureDef` names a *kind* (an engine-neutral operation such as
``rolling_mean`` or ``wilder_mean``), its input columns, a window and a few
numeric parameters. Every engine compiles these definitions with one compiler
per kind (:mod:`stockbatch.features.polars`, :mod:`stockbatch.features.spark`),
so no formula is written twice and the engines cannot drift apart. Nothing in
this module depends on an engine.

Semantics of the kinds (all windows run per symbol over its rows ordered by
``trade_date``; "rows", not calendar days):

Finite or null (contract v2): every published float value is finite or null.
Inside a computation the kinds follow IEEE arithmetic (``x/0`` is ``±inf``,
``ln 0`` is ``-inf``); whatever non-finite value (an overflow, a division by
zero, a log of 0 or of a negative) reaches an engine's output is published as
null: each engine applies this once, to every float column of its daily and
quarterly output. Validation keeps the inputs in a range where this does not
happen (``implausible_value``); the guard is the contract's last line.

Missing inputs: silver ``open`` is null when the source did not record it
(contract v2); only ``o`` reads it, and only ``q_open`` reads ``o``.

Row / window kinds (:data:`ADJUSTMENT`, :data:`DAILY_FEATURES`, and the
row-level quarterly kinds):

* ``adjustment_factor`` (adj_close, close): ``adj_close/close`` when adj_close is
  not null and close > 0, else 1.0.
* ``product`` (a, b): ``a*b``.  ``quotient`` (a, b): ``a/b``.
* ``difference`` (a, b): ``a-b``.  ``relative_to`` (a, b): ``a/b - 1``.
* ``ratio_lag`` (x): ``x_t/x_{t-lag} - 1``; ``log_ratio_lag`` (x): ``ln(x_t/x_{t-lag})``;
  ``diff_lag`` (x): ``x_t - x_{t-lag}``; all null on the first ``lag`` rows.
* ``positive_part`` (x): ``max(x, 0)``; ``negative_part`` (x): ``max(-x, 0)``.
* ``rolling_mean`` (x): mean of the last ``window`` rows; null until the window
  holds ``window`` non-null values.
* ``rolling_std`` (x): std (``ddof``) of the last ``window`` rows times
  ``sqrt(annualization)``; null until ``window`` non-null values.
* ``bollinger`` (x): ``rolling_mean + k * rolling_std(ddof)`` over ``window``.
* ``rolling_zscore`` (x): ``(x - rolling_mean) / rolling_std(ddof)``; null until
  ``window`` rows and null when the window's std is 0, i.e. when all its values
  are equal (engines test that exactly with max == min, because a rolling std
  of a constant window may come out as ~1e-9 instead of 0).
* ``ema`` (x): ``ema_t = a*x_t + (1-a)*ema_{t-1}``, ``a = 2/(window+1)``, seeded with
  the symbol's first value (pandas ``ewm(span=window, adjust=False)``).
* ``wilder_mean`` (x): null until the first full window of ``window`` non-null
  values; on that row it is their mean (the seed); after it
  ``(prev*(window-1) + x_t)/window``. Inputs have leading nulls only: RSI gains
  start at t=1, so their seed is at t=14 over t=1..14; true range starts at
  t=0, so the ATR seed is at t=13 over t=0..13, as FEATURES.md says.
* ``rsi`` (avg_gain, avg_loss): ``100 - 100/(1 + g/l)``; 100 when l = 0 < g; 50 when
  both are 0.
* ``true_range`` (h, l, c): ``max(h-l, |h-c_{t-1}|, |l-c_{t-1}|)``; ``h-l`` on the first row.

Aggregate kinds (:data:`AGGREGATE_KINDS`; over one symbol's rows of one
calendar quarter, in trade_date order):

* ``first``, ``last``: value on the first / last row (the last row's value even
  when it is null: a snapshot, not "last non-null").
* ``first_non_null``: value on the first row where it is not null; null when it is
  null on every row.
* ``max``, ``min``, ``mean``, ``sum``: over non-null values.  ``count``: rows.
* ``std`` (x): sample std (``ddof``) of the non-null values times
  ``sqrt(annualization)``; null with fewer than ``min_count`` values.
* ``max_drawdown`` (x): ``min_t (x_t / max_{s<=t} x_s - 1)`` within the quarter.

Period kinds (on the quarterly table, per symbol, across calendar quarters):

* ``period_return`` (x): ``x / x of the immediately previous quarter - 1``; null
  when the symbol has no row in that quarter.
* ``log1p`` (x): ``ln(1 + x)``.
* ``expected_sessions``: exchange sessions in the quarter that lie between the
  symbol's first and last row overall.
* ``next_session_after`` (date): the first exchange session after the date.
* ``period_complete`` (quarter_end): the dataset's last trade_date is on or after
  the quarter's last exchange session.
* ``next_period_value`` (x, complete): x of the immediately next quarter, null when
  that quarter has no row or its ``complete`` flag is false.
* ``constant``: ``params['value']``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from stockbatch.schema import FEATURE_SET_VERSION

Role = Literal["feature", "intermediate", "meta", "label"]

AGGREGATE_KINDS = frozenset(
    {"first", "first_non_null", "last", "max", "min", "mean", "sum", "count", "std",
     "max_drawdown"}
)  # fmt: skip
"""Kinds that reduce a symbol's rows of one quarter to one value."""

ROW_KINDS = frozenset(
    {
        "adjustment_factor",
        "product",
        "quotient",
        "difference",
        "relative_to",
        "ratio_lag",
        "log_ratio_lag",
        "diff_lag",
        "positive_part",
        "negative_part",
        "rolling_mean",
        "rolling_std",
        "bollinger",
        "rolling_zscore",
        "ema",
        "wilder_mean",
        "rsi",
        "true_range",
        "log1p",
        "constant",
    }
)
"""Kinds that produce one value per row (some look back over the symbol's rows)."""

PERIOD_KINDS = frozenset(
    {"period_return", "expected_sessions", "next_session_after", "period_complete",
     "next_period_value"}
)  # fmt: skip
"""Kinds that need other quarters of the symbol or the exchange calendar."""

KINDS = AGGREGATE_KINDS | ROW_KINDS | PERIOD_KINDS


@dataclass(frozen=True)
class FeatureDef:
    """One feature (or intermediate column) of the contract, engine-neutral.

    ``role``: ``feature`` (a published column), ``intermediate`` (a helper column
    engines drop before output), ``meta`` (bookkeeping such as ``available_at``)
    or ``label`` (the ML target: no feature may read it).
    """

    name: str
    kind: str
    inputs: tuple[str, ...] = ()
    window: int | None = None
    params: Mapping[str, float] = field(default_factory=dict, hash=False)
    description: str = ""
    role: Role = "feature"
    version: int = FEATURE_SET_VERSION

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")
        # Read-only, so a shared definition cannot be mutated by an engine.
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def param(self, key: str) -> float:
        """A required numeric parameter."""
        try:
            return self.params[key]
        except KeyError:
            raise KeyError(f"{self.name} ({self.kind}) needs params[{key!r}]") from None

    @property
    def lag(self) -> int:
        """Lag of the ``*_lag`` kinds (``params['lag']``, default 1)."""
        return int(self.params.get("lag", 1))


def _d(
    name: str,
    kind: str,
    inputs: tuple[str, ...] = (),
    window: int | None = None,
    description: str = "",
    role: Role = "feature",
    **params: float,
) -> FeatureDef:
    return FeatureDef(name, kind, inputs, window, params, description, role)


# --- Section 1: adjusted prices -------------------------------------------------------------
# Intermediate columns o, h, l, c, v (and factor) that every feature reads.
ADJUSTMENT: tuple[FeatureDef, ...] = (
    _d("factor", "adjustment_factor", ("adj_close", "close"),
       description="adj_close/close when adj_close present and close > 0, else 1.0",
       role="intermediate"),
    _d("o", "product", ("open", "factor"), description="adjusted open", role="intermediate"),
    _d("h", "product", ("high", "factor"), description="adjusted high", role="intermediate"),
    _d("l", "product", ("low", "factor"), description="adjusted low", role="intermediate"),
    _d("c", "product", ("close", "factor"), description="adjusted close", role="intermediate"),
    _d("v", "quotient", ("volume", "factor"), description="adjusted volume",
       role="intermediate"),
)  # fmt: skip

ADJUSTMENT_INPUTS = ("open", "high", "low", "close", "adj_close", "volume")

_ANNUAL = 252.0

# --- Section 2: daily features, in dependency order ---------------------------------------
DAILY_FEATURES: tuple[FeatureDef, ...] = (
    _d("ret_1d", "ratio_lag", ("c",), lag=1, description="c_t / c_{t-1} - 1"),
    _d("log_ret_1d", "log_ratio_lag", ("c",), lag=1, description="ln(c_t / c_{t-1})"),
    *(
        _d(f"sma_{n}", "rolling_mean", ("c",), n, description=f"mean of c over the last {n} rows")
        for n in (5, 20, 50, 200)
    ),
    *(
        _d(f"ema_{n}", "ema", ("c",), n, description=f"EMA of c, span {n}, seeded with c_0")
        for n in (12, 26)
    ),
    _d("macd", "difference", ("ema_12", "ema_26"), description="ema_12 - ema_26"),
    _d("macd_signal", "ema", ("macd",), 9, description="EMA of macd, span 9, seeded"),
    _d("macd_hist", "difference", ("macd", "macd_signal"), description="macd - macd_signal"),
    _d("_change", "diff_lag", ("c",), lag=1, description="d_t = c_t - c_{t-1}",
       role="intermediate"),
    _d("_gain", "positive_part", ("_change",), description="max(d, 0)", role="intermediate"),
    _d("_loss", "negative_part", ("_change",), description="max(-d, 0)", role="intermediate"),
    _d("_avg_gain", "wilder_mean", ("_gain",), 14, description="Wilder mean of gains",
       role="intermediate"),
    _d("_avg_loss", "wilder_mean", ("_loss",), 14, description="Wilder mean of losses",
       role="intermediate"),
    _d("rsi_14", "rsi", ("_avg_gain", "_avg_loss"), description="Wilder RSI, 14"),
    _d("true_range", "true_range", ("h", "l", "c"),
       description="max(h-l, |h-c_{t-1}|, |l-c_{t-1}|); h-l on the first row"),
    _d("atr_14", "wilder_mean", ("true_range",), 14, description="Wilder mean of true_range"),
    _d("volatility_20", "rolling_std", ("log_ret_1d",), 20, ddof=1, annualization=_ANNUAL,
       description="sample std of log_ret_1d over 20 rows * sqrt(252)"),
    _d("bb_upper_20", "bollinger", ("c",), 20, k=2.0, ddof=0,
       description="sma_20 + 2 * population std of c over 20 rows"),
    _d("bb_lower_20", "bollinger", ("c",), 20, k=-2.0, ddof=0,
       description="sma_20 - 2 * population std of c over 20 rows"),
    _d("volume_z_20", "rolling_zscore", ("v",), 20, ddof=1,
       description="(v - mean20(v)) / sample std20(v); null when the std is 0"),
    _d("dollar_volume", "product", ("close", "volume"),
       description="close * volume, unadjusted"),
)  # fmt: skip

# --- Section 3: quarterly features, in dependency order -------------------------------------
# Inputs are the daily rows (DAILY_FEATURES columns + the ADJUSTMENT intermediates).
QUARTERLY_FEATURES: tuple[FeatureDef, ...] = (
    _d("q_open", "first_non_null", ("o",),
       description="o on the quarter's first trading row whose open is recorded; null if none"),
    _d("q_high", "max", ("h",), description="max h over the quarter"),
    _d("q_low", "min", ("l",), description="min l over the quarter"),
    _d("q_close", "last", ("c",), description="c on the quarter's last trading row"),
    _d("q_volatility", "std", ("log_ret_1d",), ddof=1, annualization=_ANNUAL, min_count=2,
       description="sample std of log_ret_1d over the quarter * sqrt(252); null with < 2"),
    _d("q_max_drawdown", "max_drawdown", ("c",),
       description="min of c_t / running max of c within the quarter - 1"),
    _d("q_avg_volume", "mean", ("volume",), description="mean of volume (unadjusted)"),
    _d("q_dollar_volume", "sum", ("dollar_volume",), description="sum of dollar_volume"),
    _d("q_trading_days", "count", description="rows of the symbol in the quarter"),
    *(
        _d(f"{f}_end", "last", (f,), description=f"{f} on the quarter's last trading row")
        for f in ("sma_50", "sma_200", "rsi_14", "macd", "atr_14", "volatility_20")
    ),
    _d("q_return", "period_return", ("q_close",),
       description="q_close / previous quarter's q_close - 1; null without a previous row"),
    _d("q_log_return", "log1p", ("q_return",), description="ln(1 + q_return)"),
    _d("q_expected_days", "expected_sessions",
       description="XNYS sessions in the quarter between the symbol's first and last row"),
    _d("q_missing_days", "difference", ("q_expected_days", "q_trading_days"),
       description="q_expected_days - q_trading_days"),
    _d("close_to_sma_200_end", "relative_to", ("q_close", "sma_200_end"),
       description="q_close / sma_200_end - 1"),
    _d("available_at", "next_session_after", ("quarter_end",), role="meta",
       description="first XNYS session after quarter_end (no look-ahead before it)"),
    _d("q_complete", "period_complete", ("quarter_end",), role="meta",
       description="dataset's last trade_date >= the quarter's last XNYS session"),
    _d("feature_set_version", "constant", role="meta", value=float(FEATURE_SET_VERSION),
       description="FEATURES.md contract version"),
    _d("label_next_q_return", "next_period_value", ("q_return", "q_complete"), role="label",
       description="next quarter's q_return; null when absent or not complete (ML target)"),
)  # fmt: skip

ANNUALIZATION = _ANNUAL
"""Trading days per year used by the ``annualization`` params."""


def by_name(defs: Iterable[FeatureDef]) -> dict[str, FeatureDef]:
    """Index definitions by name (names must be unique)."""
    out: dict[str, FeatureDef] = {}
    for d in defs:
        if d.name in out:
            raise ValueError(f"duplicate feature name {d.name!r}")
        out[d.name] = d
    return out


def check_order(defs: Iterable[FeatureDef], available: Iterable[str]) -> None:
    """Raise unless every definition reads only ``available`` columns or earlier definitions,
    and no non-label reads a label."""
    known = set(available)
    labels: set[str] = set()
    for d in defs:
        missing = [i for i in d.inputs if i not in known]
        if missing:
            raise ValueError(f"{d.name} reads {missing} before they are defined")
        leaks = [i for i in d.inputs if i in labels]
        if leaks and d.role != "label":
            raise ValueError(f"{d.name} reads the label(s) {leaks}")
        known.add(d.name)
        if d.role == "label":
            labels.add(d.name)


def annualization_scale(d: FeatureDef) -> float:
    """``sqrt(params['annualization'])``, or 1.0 when not annualised."""
    return math.sqrt(d.params.get("annualization", 1.0))


# --- incremental processing -----------------------------------------------------------------

RECURSIVE_KINDS = frozenset({"ema", "wilder_mean"})
"""Kinds whose value depends on every earlier row (an infinite recursion, not a window)."""

CARRY_COLUMNS: tuple[str, ...] = tuple(d.name for d in DAILY_FEATURES if d.kind in RECURSIVE_KINDS)
"""The recursive daily columns: their values on a symbol's last row are the state an
incremental update carries forward (``ema_12, ema_26, macd_signal, _avg_gain, _avg_loss,
atr_14``)."""

STATE_COLUMNS: tuple[str, ...] = tuple(
    d.name for d in DAILY_FEATURES if d.kind in RECURSIVE_KINDS and d.role == "intermediate"
)
"""Carried columns that gold does not publish (``_avg_gain, _avg_loss``); engines return
them on request (``with_state=True``) so the next update can start from them."""


def lookback_rows(defs: Iterable[FeatureDef] = (*ADJUSTMENT, *DAILY_FEATURES)) -> int:
    """How many earlier rows of a symbol a row's features read, once the recursive kinds
    carry their state: the longest chain of windows and lags in the catalog.

    An incremental update recomputes a symbol's new rows from this many earlier rows
    plus the carried state, and gets the values of a full rebuild.
    """
    depth: dict[str, int] = {}
    for d in defs:
        base = max((depth.get(i, 0) for i in d.inputs), default=0)
        if d.kind in {"ratio_lag", "log_ratio_lag", "diff_lag"}:
            base += d.lag
        elif d.kind == "true_range":
            base += 1
        elif d.kind in RECURSIVE_KINDS:
            pass  # the carried value replaces the history
        elif d.window is not None:
            base += d.window - 1
        depth[d.name] = base
    return max(depth.values(), default=0)
