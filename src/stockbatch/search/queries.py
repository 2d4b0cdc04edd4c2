"""Read side of the search indices: what the API and the dashboard call.

User text only ever goes into ``term`` and ``match`` queries as a value, never
into a query string: ``*``, quotes, ``AND``/``OR`` or a JSON document typed into
the search box are matched as the characters they are.
"""

from __future__ import annotations

from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import NotFoundError

from stockbatch.search.client import SearchError, unavailable_as_error
from stockbatch.search.indices import DATASETS, INSTRUMENTS, QUARTERLY
from stockbatch.search.load import alias_targets, doc_count, index_meta

MAX_QUERY_CHARS = 256
"""Longer queries are cut: no ticker or company name is longer, and every word of a query
becomes clauses (Lucene refuses a query of over 1,024 of them)."""

MAX_FUZZY_WORDS = 6
"""Fuzzy name matching only for short queries: each fuzzy word expands to up to 50 terms."""

PERCENTS = (5.0, 25.0, 50.0, 75.0, 95.0)


def search_instruments(
    client: OpenSearch, q: str, limit: int = 10, *, prefix: str = "stockbatch"
) -> list[dict[str, Any]]:
    """Instruments matching ``q``, best first: the exact symbol, then symbols starting
    with ``q``, then names with words starting with ``q``, then fuzzy name matches
    (one or two typos per word, queries of up to 6 words). ``q`` is cut to 256
    characters. Each hit is the stored document plus ``score``. Blank ``q`` returns []."""
    text = q.strip()[:MAX_QUERY_CHARS]
    if not text or limit <= 0:
        return []
    # One or two typos per word ("AUTO"), but the first letter must be right: far fewer
    # candidate terms, and nobody mistypes the first letter of a company they look for.
    short = len(text.split()) <= MAX_FUZZY_WORDS
    fuzzy = {"fuzziness": "AUTO", "prefix_length": 1} if short else {}
    query = {
        "bool": {
            "should": [
                {"term": {"symbol.folded": {"value": text.lower(), "boost": 100.0}}},
                {"match": {"symbol.prefix": {"query": text, "boost": 10.0}}},
                {"match": {"name.prefix": {"query": text, "operator": "and", "boost": 3.0}}},
                {"match": {"name": {"query": text, "operator": "and", **fuzzy, "boost": 1.0}}},
            ],
            "minimum_should_match": 1,
        }
    }
    body = {
        "query": query,
        "size": limit,
        # Ties (same score) in a stable order.
        "sort": [{"_score": "desc"}, {"symbol": "asc"}],
    }
    alias = INSTRUMENTS.alias(prefix)
    with unavailable_as_error(client):
        try:
            result = client.search(index=alias, body=body)
        except NotFoundError as exc:
            raise SearchError(
                f"the search index {alias} does not exist yet: `stockbatch load --search-only` "
                "(or the next `stockbatch run` with search configured) creates it"
            ) from exc
    return [{**hit["_source"], "score": hit["_score"]} for hit in result["hits"]["hits"]]


def _stats(agg: dict[str, Any], pct: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {k: agg.get(k) for k in ("count", "min", "max", "avg", "sum")}
    if pct is not None:
        for key, value in sorted(pct.get("values", {}).items(), key=lambda kv: float(kv[0])):
            out[f"p{float(key):g}"] = value
    return out


def _ranked(agg: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"symbol": h["_source"]["symbol"], "q_return": h["_source"].get("q_return")}
        for h in agg["hits"]["hits"]
    ]


def quarterly_stats(
    client: OpenSearch, quarter: str, *, top: int = 5, prefix: str = "stockbatch"
) -> dict[str, Any]:
    """Aggregates over one quarter (e.g. ``"2017Q3"``) of the quarterly features.

    Returns ``count`` (rows of the quarter), ``complete`` (rows with
    ``q_complete``), ``q_return`` and ``q_volatility`` (count/min/max/avg/sum of the
    non-null values, and percentiles p5..p95 — OpenSearch's t-digest estimates),
    ``top``/``bottom`` (the ``top`` symbols with the highest/lowest ``q_return``,
    ties by symbol) and ``by_exchange`` (rows per exchange, where known).
    """
    ranked_fields = ["symbol", "q_return"]
    body = {
        "size": 0,
        "track_total_hits": True,
        "query": {"bool": {"filter": [{"term": {"quarter": quarter}}]}},
        "aggs": {
            "q_return": {"stats": {"field": "q_return"}},
            "q_return_pct": {"percentiles": {"field": "q_return", "percents": list(PERCENTS)}},
            "q_volatility": {"stats": {"field": "q_volatility"}},
            "q_volatility_pct": {
                "percentiles": {"field": "q_volatility", "percents": list(PERCENTS)}
            },
            "complete": {"filter": {"term": {"q_complete": True}}},
            "by_exchange": {"terms": {"field": "exchange", "size": 50}},
            "with_return": {
                "filter": {"exists": {"field": "q_return"}},
                "aggs": {
                    "top": {
                        "top_hits": {
                            "size": top,
                            "sort": [{"q_return": "desc"}, {"symbol": "asc"}],
                            "_source": ranked_fields,
                        }
                    },
                    "bottom": {
                        "top_hits": {
                            "size": top,
                            "sort": [{"q_return": "asc"}, {"symbol": "asc"}],
                            "_source": ranked_fields,
                        }
                    },
                },
            },
        },
    }
    with unavailable_as_error(client):
        result = client.search(index=QUARTERLY.alias(prefix), body=body)
    aggs = result["aggregations"]
    return {
        "quarter": quarter,
        "count": result["hits"]["total"]["value"],
        "complete": aggs["complete"]["doc_count"],
        "q_return": _stats(aggs["q_return"], aggs["q_return_pct"]),
        "q_volatility": _stats(aggs["q_volatility"], aggs["q_volatility_pct"]),
        "top": _ranked(aggs["with_return"]["top"]),
        "bottom": _ranked(aggs["with_return"]["bottom"]),
        "by_exchange": {b["key"]: b["doc_count"] for b in aggs["by_exchange"]["buckets"]},
    }


def index_status(client: OpenSearch, *, prefix: str = "stockbatch") -> dict[str, Any]:
    """Per dataset alias: the index it points at, its document count, stockbatch's
    ``_meta`` record (content hash, run id, load time) and the other indices kept.
    An alias that does not exist yet has ``index: None``."""
    out: dict[str, Any] = {}
    with unavailable_as_error(client):
        for ds in DATASETS:
            alias = ds.alias(prefix)
            targets = alias_targets(client, alias)
            try:
                others = sorted(
                    set(client.indices.get(index=ds.pattern(prefix), expand_wildcards="all"))
                    - set(targets)
                )
            except NotFoundError:
                others = []
            entry: dict[str, Any] = {"index": None, "docs": 0, "meta": {}, "others": others}
            if targets:
                index = targets[0]
                entry |= {
                    "index": index,
                    "docs": doc_count(client, index),
                    "meta": index_meta(client, index),
                }
                if len(targets) > 1:  # never made by stockbatch: someone edited the alias
                    entry["also"] = targets[1:]
            out[alias] = entry
    return out
