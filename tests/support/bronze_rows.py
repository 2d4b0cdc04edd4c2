"""HAND-MADE bronze rows for validation tests (not market data).

:func:`row` builds a valid Monday bar (2017-11-06, 9 <= open/close <= 11) as the
adapters land it; each test overrides the fields it is about.
"""

from __future__ import annotations

from itertools import count
from typing import Any

import polars as pl

from stockbatch import quality

MONDAY = "2017-11-06"

_line = count(2)


def row(**over: Any) -> dict[str, Any]:
    """A HAND-MADE valid bar (Monday 2017-11-06, 9 <= open/close <= 11), with overrides."""
    base: dict[str, Any] = {
        "symbol": "TEST",
        "trade_date": MONDAY,
        "open": "10",
        "high": "11",
        "low": "9",
        "close": "10.5",
        "adj_close": None,
        "volume": "1000",
        "source": "kaggle-huge",
        "is_adjusted": True,
        "source_file": "hand/test.us.txt",
        "line_no": next(_line),
        "n_fields": 7,
        "raw_line": None,
        "ingest_run_id": "run-hand",
        "bucket": 0,
    }
    base.update(over)
    return base


def wrong_arity(line: str, **over: Any) -> dict[str, Any]:
    """A HAND-MADE line with the wrong number of fields, as the adapters store it."""
    values = dict.fromkeys(["trade_date", "open", "high", "low", "close", "volume"])
    return row(**values, raw_line=line, n_fields=line.count(",") + 1, **over)


def bronze_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Bronze rows (built by :func:`row`) as a frame in the bronze schema."""
    return pl.DataFrame(rows, schema=quality.BRONZE_SCHEMA)
