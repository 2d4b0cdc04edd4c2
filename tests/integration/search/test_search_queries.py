"""The read side, on both engines: instrument search (exact, prefix, fuzzy, odd strings
verbatim) and quarter aggregates checked against Polars on the same gold; and both
engines giving the same hits in the same order for the same queries."""

from __future__ import annotations

import math

import polars as pl
import pyarrow as pa
import pytest

from integration.search.search_support import ElasticsearchNode, Gold, OpenSearchNode
from stockbatch import schema
from stockbatch.search import (
    SearchBackend,
    SearchLoadStats,
    quarterly_stats,
    search_instruments,
    sync_search,
)

pytestmark = [pytest.mark.integration, pytest.mark.search]

ODD_PREFIX = "sbodd"
LONG_NAME = "Longname " + " ".join(f"word{i}" for i in range(1_500)) + " Zebracorp"
ODD = [
    # (symbol, name): injection-shaped, quoting, wildcard, unicode and very long values.
    ("'; DROP TABLE x; --", "'; DROP TABLE instruments; -- Holdings"),
    ('{"query":{"match_all":{}}}', '{"query": {"match_all": {}}} Partners'),
    ("*", "* Wildcard Trust"),
    ('\\"', 'Back\\slash "Quoted" Corp'),
    ("SOCGEN", "Société Générale ☃ 株式会社 Ünïcödé"),
    ("LONG", LONG_NAME),
    ("APPL", "Appleton Papers"),
    ("AAPL", "Apple Inc."),
    ("NESN", "Nestlé S.A."),
    ("BERK", "Berkshire Hathaway Inc. Class B"),
]


@pytest.fixture(scope="module")
def loaded(backend: SearchBackend, demo_gold: Gold) -> SearchLoadStats:
    return sync_search(
        backend,
        instruments=demo_gold.instruments,
        quarterly=demo_gold.quarterly,
        daily_files=demo_gold.daily_files,
        run_id="queries",
        checksum=demo_gold.checksums,
    )


@pytest.fixture(scope="module")
def odd_loaded(backend: SearchBackend) -> list[dict[str, object]]:
    """The odd instruments, in their own prefix (quarterly and daily empty)."""
    rows = [
        {"symbol": s, "name": n, "exchange": "N", "is_etf": False, "source": "test"} for s, n in ODD
    ]
    table = pa.Table.from_pylist(rows, schema=schema.INSTRUMENTS)
    sync_search(
        backend,
        instruments=table,
        quarterly=schema.QUARTERLY_FEATURES.empty_table(),
        daily_files=[],
        run_id="odd",
        checksum="odd-v1",
        prefix=ODD_PREFIX,
    )
    return rows


def _symbols(hits: list[dict[str, object]]) -> list[object]:
    return [h["symbol"] for h in hits]


def test_exact_symbol_comes_first(backend: SearchBackend, loaded: SearchLoadStats) -> None:
    hits = search_instruments(backend, "A")
    assert hits[0]["symbol"] == "A"
    # Then the other symbols starting with A.
    assert {"AAPL", "ACN", "ADM", "AIG-WS", "AON"} <= set(_symbols(hits))
    assert _symbols(search_instruments(backend, "aapl"))[0] == "AAPL"
    assert _symbols(search_instruments(backend, "brk-b"))[0] == "BRK-B"


def test_symbol_prefix(backend: SearchBackend, loaded: SearchLoadStats) -> None:
    assert _symbols(search_instruments(backend, "BT")) == ["BTU", "BTU_"]
    assert _symbols(search_instruments(backend, "aig")) == ["AIG-WS"]
    assert search_instruments(backend, "A", limit=2) == search_instruments(backend, "A")[:2]
    assert search_instruments(backend, "   ") == []


def test_name_prefix_and_fuzzy(backend: SearchBackend, loaded: SearchLoadStats) -> None:
    apple = search_instruments(backend, "Apple")
    assert apple and apple[0]["symbol"] == "AAPL" and "Apple" in str(apple[0]["name"])
    assert _symbols(search_instruments(backend, "appl"))[0] == "AAPL"  # name prefix
    assert "AAPL" in _symbols(search_instruments(backend, "Aplle"))  # one typo
    assert "AAPL" in _symbols(search_instruments(backend, "Appel"))  # transposition
    assert search_instruments(backend, "qqqqqqqq") == []


def test_odd_strings_are_stored_and_found_verbatim(
    backend: SearchBackend, odd_loaded: list[dict[str, object]]
) -> None:
    for row in odd_loaded:
        hits = search_instruments(backend, str(row["symbol"]), prefix=ODD_PREFIX)
        assert hits, row["symbol"]
        first = dict(hits[0])
        first.pop("score")
        assert first == row, row["symbol"]
    # `*` is a character here, not a wildcard: it finds the `*` symbol only.
    assert _symbols(search_instruments(backend, "*", prefix=ODD_PREFIX)) == ["*"]
    # A query that is a JSON document is text, not a query.
    hits = search_instruments(backend, '{"query":{"match_all":{}}}', prefix=ODD_PREFIX)
    assert len(hits) < len(odd_loaded)
    # Unicode and accents: folded, so plain ASCII finds them too.
    assert _symbols(search_instruments(backend, "Société", prefix=ODD_PREFIX))[0] == "SOCGEN"
    assert _symbols(search_instruments(backend, "generale", prefix=ODD_PREFIX))[0] == "SOCGEN"
    assert _symbols(search_instruments(backend, "株式会社", prefix=ODD_PREFIX)) == ["SOCGEN"]
    assert _symbols(search_instruments(backend, "gen", prefix=ODD_PREFIX)) == ["SOCGEN"]
    assert _symbols(search_instruments(backend, "Nestle", prefix=ODD_PREFIX)) == ["NESN"]
    assert _symbols(search_instruments(backend, "nest", prefix=ODD_PREFIX)) == ["NESN"]
    # Every word a prefix of some word of the name, in any order.
    assert _symbols(search_instruments(backend, "app pap", prefix=ODD_PREFIX)) == ["APPL"]
    assert _symbols(search_instruments(backend, "hath berk", prefix=ODD_PREFIX)) == ["BERK"]
    assert _symbols(search_instruments(backend, "berk hath", prefix=ODD_PREFIX)) == ["BERK"]
    # Symbols: any letter case, the exact one first.
    assert _symbols(search_instruments(backend, "berk", prefix=ODD_PREFIX))[0] == "BERK"
    assert _symbols(search_instruments(backend, "socgen", prefix=ODD_PREFIX))[0] == "SOCGEN"
    # A very long name: stored whole, and its last word is searchable.
    long_hits = search_instruments(backend, "zebracorp", prefix=ODD_PREFIX)
    assert long_hits[0]["name"] == LONG_NAME
    assert search_instruments(backend, LONG_NAME, prefix=ODD_PREFIX)[0]["symbol"] == "LONG"
    # Exact symbol beats a name that merely starts with the query.
    assert _symbols(search_instruments(backend, "APPL", prefix=ODD_PREFIX))[0] == "APPL"


def _polars_quarter(gold: Gold, quarter: str) -> pl.DataFrame:
    q = pl.from_arrow(gold.quarterly)
    assert isinstance(q, pl.DataFrame)
    return q.filter(pl.col("quarter") == quarter)


def _within_order_statistics(values: list[float], pct: float, got: float) -> bool:
    """A percentile estimate lies between the order statistics around its rank."""
    ordered = sorted(values)
    rank = pct / 100 * (len(ordered) - 1)
    lo = ordered[max(0, math.floor(rank) - 1)]
    hi = ordered[min(len(ordered) - 1, math.ceil(rank) + 1)]
    return lo - 1e-12 <= got <= hi + 1e-12


@pytest.mark.parametrize("quarter", ["2017Q3", "2008Q4", "2023Q2"])
def test_quarterly_stats_equal_polars(
    backend: SearchBackend, loaded: SearchLoadStats, demo_gold: Gold, quarter: str
) -> None:
    frame = _polars_quarter(demo_gold, quarter)
    assert frame.height > 0
    got = quarterly_stats(backend, quarter, top=3)

    assert got["count"] == frame.height
    assert got["complete"] == frame.filter(pl.col("q_complete")).height
    for col in ("q_return", "q_volatility"):
        values = frame[col].drop_nulls().drop_nans()
        stats = got[col]
        assert stats["count"] == values.len()
        assert stats["min"] == values.min() and stats["max"] == values.max()
        assert stats["avg"] == pytest.approx(values.mean(), rel=1e-12)
        assert stats["sum"] == pytest.approx(values.sum(), rel=1e-12)
        for p in (5, 25, 50, 75, 95):
            assert _within_order_statistics(values.to_list(), p, stats[f"p{p}"]), (col, p)

    ranked = frame.filter(pl.col("q_return").is_not_null() & pl.col("q_return").is_not_nan())
    top = ranked.sort(["q_return", "symbol"], descending=[True, False]).head(3)
    bottom = ranked.sort(["q_return", "symbol"]).head(3)
    assert got["top"] == top.select("symbol", "q_return").to_dicts()
    assert got["bottom"] == bottom.select("symbol", "q_return").to_dicts()

    inst = pl.from_arrow(demo_gold.instruments)
    assert isinstance(inst, pl.DataFrame)
    by_exchange = (
        frame.join(inst.select("symbol", "exchange"), on="symbol", how="left")
        .drop_nulls("exchange")
        .group_by("exchange")
        .len()
    )
    assert got["by_exchange"] == dict(by_exchange.iter_rows())


def test_unknown_quarter_is_empty(backend: SearchBackend, loaded: SearchLoadStats) -> None:
    got = quarterly_stats(backend, "1899Q1")
    assert got["count"] == 0 and got["top"] == [] and got["q_return"]["count"] == 0


CROSS_QUERIES = [
    "A", "aapl", "AAPL", "APPL", "Apple", "appl", "Aplle", "Appel", "BT", "aig", "brk-b",
    "Société", "societe", "generale", "gen", "Nestle", "nest", "株式会社", "*", "zebracorp",
    "app pap", "berk hath", "Inc", "qqqqqqqq", '{"query":{"match_all":{}}}', "'; DROP",
    '\\"', "Corp", "word7 word8",
]  # fmt: skip


def test_both_engines_give_the_same_hits_in_the_same_order(
    opensearch_node: OpenSearchNode, elasticsearch_node: ElasticsearchNode, demo_gold: Gold
) -> None:
    odd = {s: n for s, n in ODD}
    rows = [r for r in demo_gold.instruments.to_pylist() if r["symbol"] not in odd] + [
        {"symbol": s, "name": n, "exchange": "N", "is_etf": False, "source": "test"} for s, n in ODD
    ]
    table = pa.Table.from_pylist(rows, schema=schema.INSTRUMENTS)
    answers = {}
    for node in (opensearch_node, elasticsearch_node):
        node.ensure_running()
        backend = node.backend()
        sync_search(
            backend,
            instruments=table,
            quarterly=schema.QUARTERLY_FEATURES.empty_table(),
            daily_files=[],
            run_id="cross",
            checksum="cross-v1",
            prefix="sbcross",
        )
        answers[node.kind] = {
            q: [(h["symbol"], round(float(h["score"]), 4)) for h in search_instruments(
                backend, q, limit=10, prefix="sbcross")]
            for q in CROSS_QUERIES
        }  # fmt: skip
    assert any(answers["opensearch"].values())  # the comparison compares something
    for q in CROSS_QUERIES:
        assert answers["opensearch"][q] == answers["elasticsearch"][q], q
