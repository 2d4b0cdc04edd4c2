"""Ingest sources: each lists units (files, requests) and reads one into bronze rows.

- ``KaggleSource(root)``: the three Kaggle CSV layouts (Huge, S&P 500 5yr, NASDAQ).
- ``YahooSource(symbols, start, end, last_dates, settings)``: Yahoo Finance via yfinance.

Both implement ``Source``; ``read(unit)`` returns ``BRONZE_SOURCE_SCHEMA`` rows and
raises ``SourceError`` (with a message saying what to do) for a unit-level failure.
"""

from stockbatch.sources.base import (
    BRONZE_SOURCE_SCHEMA,
    SOURCE_NAMES,
    RateLimitedError,
    Source,
    SourceError,
    SourceName,
    SourceUnit,
    SymbolNotFoundError,
    UnknownLayoutError,
    empty_bronze,
)
from stockbatch.sources.kaggle import KAGGLE_DATASETS, KaggleSource, kaggle_download
from stockbatch.sources.symbols import canonical_symbol, normalize_symbol, yahoo_symbol
from stockbatch.sources.yahoo import YAHOO_EVENTS, YahooSource

__all__ = [
    "BRONZE_SOURCE_SCHEMA",
    "KAGGLE_DATASETS",
    "SOURCE_NAMES",
    "YAHOO_EVENTS",
    "KaggleSource",
    "RateLimitedError",
    "Source",
    "SourceError",
    "SourceName",
    "SourceUnit",
    "SymbolNotFoundError",
    "UnknownLayoutError",
    "YahooSource",
    "canonical_symbol",
    "empty_bronze",
    "kaggle_download",
    "normalize_symbol",
    "yahoo_symbol",
]
