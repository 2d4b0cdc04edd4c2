"""The indices of the search side: names, index templates and their explicit mappings.

Three datasets, each an alias that points at exactly one complete index:

- ``<prefix>-instruments``: symbol and name search (exact, prefix, fuzzy).
- ``<prefix>-quarterly-features``: filter and aggregate one quarter.
- ``<prefix>-daily-bars``: OHLCV and a few features per (symbol, day), for analytics.

A load writes a fresh index ``<alias>-<run id>-<content hash>`` that the index
template ``<alias>`` (pattern ``<alias>-*``) gives its settings and mappings, then
swaps the alias to it (:mod:`stockbatch.search.load`). Every mapping is
``dynamic: strict``: a field the template does not know is an error, never a
silently guessed type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from stockbatch import schema

TEMPLATE_VERSION = 1
"""Bump when a mapping or analysis setting changes: part of every index's content hash,
so the next load rebuilds the indices instead of calling them unchanged."""

DAILY_FEATURE_FIELDS = ("ret_1d", "sma_20", "sma_50", "sma_200", "rsi_14", "volatility_20")
"""The daily features copied into the bars index (the rest stay in the warehouse)."""


@dataclass(frozen=True)
class Dataset:
    """One searchable dataset: its name and the body of its index template."""

    name: str
    """Short name: ``instruments``, ``quarterly-features``, ``daily-bars``."""
    settings: dict[str, Any]
    mappings: dict[str, Any]

    def alias(self, prefix: str) -> str:
        """The alias readers query: ``<prefix>-<name>``."""
        return f"{prefix}-{self.name}"

    def pattern(self, prefix: str) -> str:
        """The pattern of this dataset's concrete indices (and of its template)."""
        return f"{self.alias(prefix)}-*"

    def index_name(self, prefix: str, run_id: str, fingerprint: str) -> str:
        """A fresh concrete index for a load of ``run_id`` with content ``fingerprint``."""
        run = re.sub(r"[^a-z0-9_-]+", "-", run_id.lower()).strip("-_") or "run"
        return f"{self.alias(prefix)}-{run[:60]}-{fingerprint[:10]}"

    def template(self, prefix: str, replicas: int = 0) -> dict[str, Any]:
        """The composable index template body (``PUT _index_template/<alias>``)."""
        return {
            "index_patterns": [self.pattern(prefix)],
            "priority": 100,
            "version": TEMPLATE_VERSION,
            "_meta": {"owner": "stockbatch", "dataset": self.name},
            "template": {
                "settings": {
                    "index": {
                        "number_of_shards": 1,
                        "number_of_replicas": replicas,
                        "refresh_interval": "1s",
                    },
                    **self.settings,
                },
                "mappings": self.mappings,
            },
        }


def _double(names: tuple[str, ...] | list[str]) -> dict[str, Any]:
    return {n: {"type": "double"} for n in names}


# Symbols and names: `symbol.prefix` holds every prefix of the lower-cased ticker (one
# token: "brk-b" -> b, br, brk, brk-, brk-b); `name.prefix` every prefix of every word
# ("Apple Inc." -> a, ap, ... inc). Queries use the plain analyzers, so a query is
# never n-grammed itself. asciifolding: "Nestle" finds "Nestlé".
_INSTRUMENT_ANALYSIS = {
    "analysis": {
        "filter": {
            "prefix_edge": {"type": "edge_ngram", "min_gram": 1, "max_gram": 20},
        },
        "normalizer": {
            "folded": {"type": "custom", "filter": ["lowercase", "asciifolding"]},
        },
        "analyzer": {
            "symbol_prefix": {
                "type": "custom",
                "tokenizer": "keyword",
                "filter": ["lowercase", "asciifolding", "prefix_edge"],
            },
            "symbol_search": {
                "type": "custom",
                "tokenizer": "keyword",
                "filter": ["lowercase", "asciifolding"],
            },
            "name_text": {
                "type": "custom",
                "tokenizer": "standard",
                "filter": ["lowercase", "asciifolding"],
            },
            "name_prefix": {
                "type": "custom",
                "tokenizer": "standard",
                "filter": ["lowercase", "asciifolding", "prefix_edge"],
            },
        },
    }
}

INSTRUMENTS = Dataset(
    name="instruments",
    settings=_INSTRUMENT_ANALYSIS,
    mappings={
        "dynamic": "strict",
        "properties": {
            "symbol": {
                "type": "keyword",
                "fields": {
                    "folded": {"type": "keyword", "normalizer": "folded"},
                    "prefix": {
                        "type": "text",
                        "analyzer": "symbol_prefix",
                        "search_analyzer": "symbol_search",
                    },
                },
            },
            "name": {
                "type": "text",
                "analyzer": "name_text",
                "fields": {
                    "prefix": {
                        "type": "text",
                        "analyzer": "name_prefix",
                        "search_analyzer": "name_text",
                    },
                    # Exact name for sorting and terms aggregations; a name past 1,024
                    # characters is still stored and full-text searchable, just not here.
                    "raw": {"type": "keyword", "ignore_above": 1024},
                },
            },
            "exchange": {"type": "keyword"},
            "is_etf": {"type": "boolean"},
            "source": {"type": "keyword"},
        },
    },
)

_QUARTERLY_INT = ("q_trading_days", "q_expected_days", "q_missing_days")

QUARTERLY = Dataset(
    name="quarterly-features",
    settings={},
    mappings={
        "dynamic": "strict",
        "properties": {
            "symbol": {"type": "keyword"},
            "quarter": {"type": "keyword"},
            "quarter_start": {"type": "date", "format": "strict_date"},
            "quarter_end": {"type": "date", "format": "strict_date"},
            **_double([c for c in schema.QUARTERLY_FEATURE_COLUMNS if c not in _QUARTERLY_INT]),
            **{c: {"type": "integer"} for c in _QUARTERLY_INT},
            "available_at": {"type": "date", "format": "strict_date"},
            "q_complete": {"type": "boolean"},
            "feature_set_version": {"type": "integer"},
            "label_next_q_return": {"type": "double"},
            # From the instruments, so a quarter can be filtered by exchange / ETF-ness.
            "exchange": {"type": "keyword"},
            "is_etf": {"type": "boolean"},
        },
    },
)

DAILY_BARS = Dataset(
    name="daily-bars",
    settings={},
    mappings={
        "dynamic": "strict",
        "properties": {
            "symbol": {"type": "keyword"},
            "trade_date": {"type": "date", "format": "strict_date"},
            **_double(["open", "high", "low", "close", "adj_close", "volume"]),
            "source": {"type": "keyword"},
            **_double(list(DAILY_FEATURE_FIELDS)),
        },
    },
)

DATASETS: tuple[Dataset, ...] = (INSTRUMENTS, QUARTERLY, DAILY_BARS)
"""Every dataset, in load order."""
