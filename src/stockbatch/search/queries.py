"""Read side of the search indices: what the API and the dashboard call.

User text only ever goes into ``term``, ``prefix`` and ``match`` queries as a value, never
into a query string: ``*``, quotes, ``AND``/``OR`` or a JSON document typed into
the search box are matched as the characters they are.
"""

from __future__ import annotations

from typing import Any

from stockbatch.search.backend import IndexMissing, SearchBackend, SearchError
from stockbatch.search.indices import DATASETS, INSTRUMENTS, QUARTERLY, fold
from stockbatch.search.load import index_meta

MAX_QUERY_CHARS = 256
"""Longer queries are cut: no ticker or company name is longer, and every word of a query
becomes clauses (Lucene refuses a query of over 1,024 of them)."""

MAX_FUZZY_WORDS = 6
"""Fuzzy name matching only for short queries: each fuzzy word expands to up to 50 terms."""

PERCENTS = (5.0, 25.0, 50.0, 75.0, 95.0)


def instrument_query(text: str) -> dict[str, Any]:
    """The query of :func:`search_instruments` for (already cut, non-blank) ``text``.

    Scores, highest first: the exact symbol, any letter case (x100); a symbol starting
    with ``text`` (x10); names whose words start with the words of ``text``, accents
    and case ignored (x3); names matching every word with a typo or two (x1, short
    queries only). Every clause is a term, prefix or match query with ``text`` as a
    value: works the same on OpenSearch and Elasticsearch, no analysis plugin needed.
    """
    folded = fold(text)
    words = folded.split()
    short = len(words) <= MAX_FUZZY_WORDS
    # "app pap" -> Appleton Papers: every word a prefix of some word of the name. The
    # match_bool_prefix beside it covers what the standard tokenizer splits further
    # than whitespace does (CJK names, "brk-b").
    prefixes: list[dict[str, Any]] = [
        {"match_bool_prefix": {"name_folded": {"query": folded, "operator": "and"}}}
    ]
    if short and words:
        prefixes.append(
            {"bool": {"must": [{"prefix": {"name_folded": {"value": w}}} for w in words]}}
        )
    should: list[dict[str, Any]] = [
        {"term": {"symbol": {"value": text, "case_insensitive": True, "boost": 100.0}}},
        {"prefix": {"symbol": {"value": text, "case_insensitive": True, "boost": 10.0}}},
        {"dis_max": {"queries": prefixes, "boost": 3.0}},
    ]
    # One or two typos per word ("AUTO"), but the first letter must be right: far fewer
    # candidate terms, and nobody mistypes the first letter of a company they look for.
    fuzzy = {"fuzziness": "AUTO", "prefix_length": 1} if short else {}
    should.append(
        {"match": {"name_folded": {"query": folded, "operator": "and", **fuzzy, "boost": 1.0}}}
    )
    return {"bool": {"should": should, "minimum_should_match": 1}}


def search_instruments(
    backend: SearchBackend, q: str, limit: int = 10, *, prefix: str = "stockbatch"
) -> list[dict[str, Any]]:
    """Instruments matching ``q``, best first (see :func:`instrument_query`). ``q`` is
    cut to 256 characters. Each hit is the stored document plus ``score``. Blank ``q``
    returns []."""
    text = q.strip()[:MAX_QUERY_CHARS]
    if not text or limit <= 0:
        return []
    body = {
        "query": instrument_query(text),
        "size": limit,
        # Ties (same score) in a stable order.
        "sort": [{"_score": "desc"}, {"symbol": "asc"}],
    }
    alias = INSTRUMENTS.alias(prefix)
    try:
        result = backend.search(alias, body)
    except IndexMissing as exc:
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
    backend: SearchBackend, quarter: str, *, top: int = 5, prefix: str = "stockbatch"
) -> dict[str, Any]:
    """Aggregates over one quarter (e.g. ``"2017Q3"``) of the quarterly features.

        Returns ``count`` (rows of the quarter), ``complete`` (rows with
        ``q_complete``), ``q_return`` and ``q_volatility`` (count/min/max/avg/sum of the
        non-null values, and percentiles p5..p95 — the engine's t-digest estimates, which
    differ slightly between OpenSearch and Elasticsearch),
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
    result = backend.search(QUARTERLY.alias(prefix), body)
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


def index_status(backend: SearchBackend, *, prefix: str = "stockbatch") -> dict[str, Any]:
    """Per dataset alias: the index it points at, its document count, stockbatch's
    ``_meta`` record (content hash, run id, load time) and the other indices kept.
    An alias that does not exist yet has ``index: None``."""
    out: dict[str, Any] = {}
    for ds in DATASETS:
        alias = ds.alias(prefix)
        targets = backend.alias_targets(alias)
        others = sorted(set(backend.list_indices(ds.pattern(prefix))) - set(targets))
        entry: dict[str, Any] = {"index": None, "docs": 0, "meta": {}, "others": others}
        if targets:
            index = targets[0]
            entry |= {
                "index": index,
                "docs": backend.count(index),
                "meta": index_meta(backend, index),
            }
            if len(targets) > 1:  # never made by stockbatch: someone edited the alias
                entry["also"] = targets[1:]
        out[alias] = entry
    return out
