"""Canonical Arrow schemas shared by every stage and engine.

Column names follow FEATURES.md exactly; the engines, the warehouse models and
the exports all read their column lists from here.
"""

from __future__ import annotations

import pyarrow as pa

FEATURE_SET_VERSION = 2
"""Version of the FEATURES.md contract the engines implement."""

PRICE_FIELDS = ("open", "high", "low", "close")

# Bronze: exactly what arrived. Value fields stay text so that a field that does
# not parse is still kept verbatim and quarantined as `unparseable` downstream.
BRONZE_BARS = pa.schema(
    [
        ("symbol", pa.string()),
        ("trade_date", pa.string()),
        ("open", pa.string()),
        ("high", pa.string()),
        ("low", pa.string()),
        ("close", pa.string()),
        ("adj_close", pa.string()),  # null when the layout has no adjusted close
        ("volume", pa.string()),
        ("source", pa.string()),  # kaggle-huge | kaggle-sp500 | kaggle-nasdaq | yahoo
        ("is_adjusted", pa.bool_()),  # prices already split/dividend adjusted at source
        ("source_file", pa.string()),  # path relative to the input root, or a yahoo request id
        ("line_no", pa.int32()),  # 1-based physical line (the header is line 1)
        ("n_fields", pa.int16()),  # fields on that line
        ("raw_line", pa.string()),  # the line verbatim when its arity is wrong, else null
        ("ingest_run_id", pa.string()),
        ("bucket", pa.int16()),  # symbol_bucket(symbol, buckets)
    ]
)

# Silver: one row per clean bar (superseded rows of lower-priority sources included, flagged).
SILVER_BARS = pa.schema(
    [
        ("symbol", pa.string()),
        ("trade_date", pa.date32()),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("adj_close", pa.float64()),
        ("volume", pa.float64()),
        ("source", pa.string()),
        ("is_adjusted", pa.bool_()),
        ("superseded", pa.bool_()),
        ("source_file", pa.string()),
        ("line_no", pa.int32()),
    ]
)

# Quarantine: the bronze row as arrived plus why it was refused.
QUARANTINE = pa.schema(
    [
        *[BRONZE_BARS.field(n) for n in BRONZE_BARS.names if n != "bucket"],
        ("reasons", pa.list_(pa.string())),
    ]
)

REASON_CODES = (
    "unparseable",
    "missing_price",
    "missing_volume",
    "non_positive_price",
    "high_below_low",
    "open_outside_range",
    "close_outside_range",
    "negative_volume",
    "weekend_date",
    "duplicate",
    "future_date",
    "date_out_of_range",
    "implausible_value",
)
"""FEATURES.md section 4 reason codes, in the order they are checked and reported."""

HEALTH_FLAGS = ("zero_volume", "off_calendar", "suspect_jump", "open_missing")
"""Kept-but-counted conditions of FEATURES.md section 4 (health report only)."""

DAILY_BAR_COLUMNS = (
    "symbol",
    "trade_date",
    "open",
    "high",
    "low",
    "close",
    "adj_close",
    "volume",
    "source",
)

DAILY_FEATURE_COLUMNS = (
    "ret_1d",
    "log_ret_1d",
    "sma_5",
    "sma_20",
    "sma_50",
    "sma_200",
    "ema_12",
    "ema_26",
    "macd",
    "macd_signal",
    "macd_hist",
    "rsi_14",
    "true_range",
    "atr_14",
    "volatility_20",
    "bb_upper_20",
    "bb_lower_20",
    "volume_z_20",
    "dollar_volume",
)

DAILY_FEATURES = pa.schema(
    [
        *[SILVER_BARS.field(n) for n in DAILY_BAR_COLUMNS],
        *[(n, pa.float64()) for n in DAILY_FEATURE_COLUMNS],
    ]
)

QUARTERLY_KEY_COLUMNS = ("symbol", "quarter", "quarter_start", "quarter_end")
QUARTERLY_FEATURE_COLUMNS = (
    "q_open",
    "q_high",
    "q_low",
    "q_close",
    "q_return",
    "q_log_return",
    "q_volatility",
    "q_max_drawdown",
    "q_avg_volume",
    "q_dollar_volume",
    "q_trading_days",
    "q_expected_days",
    "q_missing_days",
    "sma_50_end",
    "sma_200_end",
    "rsi_14_end",
    "macd_end",
    "atr_14_end",
    "volatility_20_end",
    "close_to_sma_200_end",
)
QUARTERLY_META_COLUMNS = ("available_at", "q_complete", "feature_set_version")
QUARTERLY_LABEL_COLUMNS = ("label_next_q_return",)

_INT_QUARTERLY = {"q_trading_days", "q_expected_days", "q_missing_days"}

QUARTERLY_FEATURES = pa.schema(
    [
        ("symbol", pa.string()),
        ("quarter", pa.string()),  # e.g. 2017Q3
        ("quarter_start", pa.date32()),
        ("quarter_end", pa.date32()),
        *[
            (n, pa.int32() if n in _INT_QUARTERLY else pa.float64())
            for n in QUARTERLY_FEATURE_COLUMNS
        ],
        ("available_at", pa.date32()),
        ("q_complete", pa.bool_()),
        ("feature_set_version", pa.int32()),
        ("label_next_q_return", pa.float64()),
    ]
)

INSTRUMENTS = pa.schema(
    [
        ("symbol", pa.string()),
        ("name", pa.string()),
        ("exchange", pa.string()),
        ("is_etf", pa.bool_()),
        ("source", pa.string()),
    ]
)
