"""Ingest sources: each lists units (files, requests) and reads one into bronze rows.

- ``KaggleSource(root)``: the three Kaggle CSV layouts (Huge, S&P 500 5yr, NASDAQ).
- ``YahooSource(symbols, start, end, last_dates, settings)``: Yahoo Finance via yfinance.

Both implement ``Source``; ``read(unit)`` returns ``BRONZE_SOURCE_SCHEMA`` rows and
raises ``SourceError`` (with a message saying what to do) for a unit-level failure.
``units(on_scan=...)`` reports a long listing's progress (``ScanProgress``); ``echo``
is how any input is quoted in a message (escaped, at most ``ECHO_LIMIT`` characters).
"""

from stockbatch.sources.base import (
    BRONZE_SOURCE_SCHEMA,
    ECHO_LIMIT,
    SOURCE_NAMES,
    RateLimitedError,
    ScanProgress,
    Source,
    SourceError,
    SourceName,
    SourceUnit,
    SymbolNotFoundError,
    UnknownLayoutError,
    echo,
    empty_bronze,
)
from stockbatch.sources.kaggle import KAGGLE_DATASETS, KaggleSource, kaggle_download
from stockbatch.sources.symbols import canonical_symbol, normalize_symbol, yahoo_symbol
from stockbatch.sources.yahoo import YAHOO_EVENTS, YahooSource

__all__ = [
    "BRONZE_SOURCE_SCHEMA",
    "ECHO_LIMIT",
    "KAGGLE_DATASETS",
    "SOURCE_NAMES",
    "YAHOO_EVENTS",
    "KaggleSource",
    "RateLimitedError",
    "ScanProgress",
    "Source",
    "SourceError",
    "SourceName",
    "SourceUnit",
    "SymbolNotFoundError",
    "UnknownLayoutError",
    "YahooSource",
    "canonical_symbol",
    "echo",
    "empty_bronze",
    "kaggle_download",
    "normalize_symbol",
    "yahoo_symbol",
]
