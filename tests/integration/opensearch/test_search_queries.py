"""The read side: instrument search (exact, prefix, fuzzy, odd strings verbatim) and
quarter aggregates checked against Polars on the same gold."""

from __future__ import annotations

import math

import polars as pl
import pyarrow as pa
import pytest
from opensearchpy import OpenSearch

from integration.opensearch.os_support import Gold
from stockbatch import schema
from stockbatch.search import SearchLoadStats, quarterly_stats, search_instruments, sync_search

pytestmark = [pytest.mark.integration, pytest.mark.opensearch]

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
]


@pytest.fixture(scope="module")
def loaded(os_client: OpenSearch, demo_gold: Gold) -> SearchLoadStats:
    return sync_search(
        os_client,
        instruments=demo_gold.instruments,
        quarterly=demo_gold.quarterly,
        daily_files=demo_gold.daily_files,
        run_id="queries",
        checksum=demo_gold.checksums,
    )


@pytest.fixture(scope="module")
def odd_loaded(os_client: OpenSearch) -> list[dict[str, object]]:
    """The odd instruments, in their own prefix (quarterly and daily empty)."""
    rows = [
        {"symbol": s, "name": n, "exchange": "N", "is_etf": False, "source": "test"} for s, n in ODD
    ]
    table = pa.Table.from_pylist(rows, schema=schema.INSTRUMENTS)
    sync_search(
        os_client,
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


def test_exact_symbol_comes_first(os_client: OpenSearch, loaded: SearchLoadStats) -> None:
    hits = search_instruments(os_client, "A")
    assert hits[0]["symbol"] == "A"
    # Then the other symbols starting with A.
    assert {"AAPL", "ACN", "ADM", "AIG-WS", "AON"} <= set(_symbols(hits))
    assert _symbols(search_instruments(os_client, "aapl"))[0] == "AAPL"
    assert _symbols(search_instruments(os_client, "brk-b"))[0] == "BRK-B"


def test_symbol_prefix(os_client: OpenSearch, loaded: SearchLoadStats) -> None:
    assert _symbols(search_instruments(os_client, "BT")) == ["BTU", "BTU_"]
    assert _symbols(search_instruments(os_client, "aig")) == ["AIG-WS"]
    assert search_instruments(os_client, "A", limit=2) == search_instruments(os_client, "A")[:2]
    assert search_instruments(os_client, "   ") == []


def test_name_prefix_and_fuzzy(os_client: OpenSearch, loaded: SearchLoadStats) -> None:
    apple = search_instruments(os_client, "Apple")
    assert apple and apple[0]["symbol"] == "AAPL" and "Apple" in str(apple[0]["name"])
    assert _symbols(search_instruments(os_client, "appl"))[0] == "AAPL"  # name prefix
    assert "AAPL" in _symbols(search_instruments(os_client, "Aplle"))  # one typo
    assert "AAPL" in _symbols(search_instruments(os_client, "Appel"))  # transposition
    assert search_instruments(os_client, "qqqqqqqq") == []


def test_odd_strings_are_stored_and_found_verbatim(
    os_client: OpenSearch, odd_loaded: list[dict[str, object]]
) -> None:
    for row in odd_loaded:
        hits = search_instruments(os_client, str(row["symbol"]), prefix=ODD_PREFIX)
        assert hits, row["symbol"]
        first = dict(hits[0])
        first.pop("score")
        assert first == row, row["symbol"]
    # `*` is a character here, not a wildcard: it finds the `*` symbol only.
    assert _symbols(search_instruments(os_client, "*", prefix=ODD_PREFIX)) == ["*"]
    # A query that is a JSON document is text, not a query.
    hits = search_instruments(os_client, '{"query":{"match_all":{}}}', prefix=ODD_PREFIX)
    assert len(hits) < len(odd_loaded)
    # Unicode and accents: folded, so plain ASCII finds them too.
    assert _symbols(search_instruments(os_client, "Société", prefix=ODD_PREFIX))[0] == "SOCGEN"
    assert _symbols(search_instruments(os_client, "generale", prefix=ODD_PREFIX))[0] == "SOCGEN"
    assert _symbols(search_instruments(os_client, "株式会社", prefix=ODD_PREFIX)) == ["SOCGEN"]
    # A very long name: stored whole, and its last word is searchable.
    long_hits = search_instruments(os_client, "zebracorp", prefix=ODD_PREFIX)
    assert long_hits[0]["name"] == LONG_NAME
    assert search_instruments(os_client, LONG_NAME, prefix=ODD_PREFIX)[0]["symbol"] == "LONG"
    # Exact symbol beats a name that merely starts with the query.
    assert _symbols(search_instruments(os_client, "APPL", prefix=ODD_PREFIX))[0] == "APPL"


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
    os_client: OpenSearch, loaded: SearchLoadStats, demo_gold: Gold, quarter: str
) -> None:
    frame = _polars_quarter(demo_gold, quarter)
    assert frame.height > 0
    got = quarterly_stats(os_client, quarter, top=3)

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


def test_unknown_quarter_is_empty(os_client: OpenSearch, loaded: SearchLoadStats) -> None:
    got = quarterly_stats(os_client, "1899Q1")
    assert got["count"] == 0 and got["top"] == [] and got["q_return"]["count"] == 0
