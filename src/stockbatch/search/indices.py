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
import unicodedata
from dataclasses import dataclass
from typing import Any

from stockbatch import schema

TEMPLATE_VERSION = 2
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


def fold(text: str) -> str:
    """Lower case without accents (``"Société"`` -> ``"societe"``): what the instrument
    index stores in ``name_folded`` and what a query is folded to before matching it.

    Done here rather than by an ``asciifolding`` filter because Elastic's minimal
    distribution has no ``analysis-common`` module (docs/design/search-backends.md).
    """
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


# Symbols and names, with mappings both engines accept without analysis plugins:
# `symbol` is a plain keyword, matched by case-insensitive term and prefix queries (no
# normalizer: Elasticsearch 8.19 indexes a normalized keyword sub-field still
# JSON-escaped). `name_folded` is the folded name (see fold()) with index_prefixes, so
# "gen" finds "Générale" fast without edge n-grams; it is never returned (_source
# excludes it), so a hit is the instrument row as it was loaded.
INSTRUMENTS = Dataset(
    name="instruments",
    settings={},
    mappings={
        "dynamic": "strict",
        "_source": {"excludes": ["name_folded"]},
        "properties": {
            "symbol": {"type": "keyword"},
            "name": {
                "type": "text",
                "analyzer": "standard",
                "fields": {
                    # Exact name for sorting and terms aggregations; a name past 1,024
                    # characters is still stored and full-text searchable, just not here.
                    "raw": {"type": "keyword", "ignore_above": 1024},
                },
            },
            "name_folded": {
                "type": "text",
                "analyzer": "standard",
                "index_prefixes": {"min_chars": 1, "max_chars": 19},
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
