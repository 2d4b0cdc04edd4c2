"""Read queries: exact Arrow types back, ordering, streaming, filters."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import sqlalchemy as sa

from stockbatch import schema
from stockbatch.warehouse import loader, queries

D = dt.date


def quarterly_input() -> pa.Table:
    """Hand-made quarterly rows in schema.QUARTERLY_FEATURES, deliberately unsorted.

    Covers nulls in every kind of column, both booleans, int32 and date32, and
    floats whose last bits matter.
    """
    rows = [
        {
            "symbol": "ZZZ",
            "quarter": "2017Q4",
            "quarter_start": D(2017, 10, 1),
            "quarter_end": D(2017, 12, 31),
            "q_trading_days": 29,
            "q_expected_days": 63,
            "q_missing_days": 34,
            "available_at": D(2018, 1, 2),
            "q_complete": False,
            "feature_set_version": 1,
            "label_next_q_return": None,
        },
        {
            "symbol": "AAA",
            "quarter": "2017Q3",
            "quarter_start": D(2017, 7, 1),
            "quarter_end": D(2017, 9, 30),
            "q_trading_days": 63,
            "q_expected_days": 63,
            "q_missing_days": 0,
            "available_at": D(2017, 10, 2),
            "q_complete": True,
            "feature_set_version": 1,
            "label_next_q_return": 0.1 + 0.2,
        },
        {
            "symbol": "AAA",
            "quarter": "2017Q2",
            "quarter_start": D(2017, 4, 1),
            "quarter_end": D(2017, 6, 30),
            "q_trading_days": None,
            "q_expected_days": None,
            "q_missing_days": None,
            "available_at": None,
            "q_complete": None,
            "feature_set_version": 1,
            "label_next_q_return": -0.0123456789012345,
        },
    ]
    for i, row in enumerate(rows):
        for j, name in enumerate(schema.QUARTERLY_FEATURE_COLUMNS):
            if name in row:
                continue
            # Distinct, awkward doubles; one null per row in a different column.
            row[name] = None if j == i * 5 else (i + 1) * 1.1 ** (j + 1) - 1 / 3
    return pa.Table.from_pylist(rows, schema=schema.QUARTERLY_FEATURES)


def test_quarterly_round_trip_is_exact(engine: sa.Engine) -> None:
    table = quarterly_input()
    stats = loader.load_table(engine, "quarterly_features", [table], key=("symbol", "quarter"))
    assert stats == loader.LoadStats(3, 0, 0)
    got = queries.quarterly_table(engine)
    assert got.schema == schema.QUARTERLY_FEATURES
    expected = table.sort_by([("symbol", "ascending"), ("quarter", "ascending")])
    assert got.equals(expected)
    assert got["quarter"].to_pylist() == ["2017Q2", "2017Q3", "2017Q4"]
    assert got.schema.field("q_trading_days").type == pa.int32()
    assert got.schema.field("available_at").type == pa.date32()
    assert got.schema.field("q_complete").type == pa.bool_()


def test_quarterly_filters_and_empty(engine: sa.Engine) -> None:
    empty = queries.quarterly_table(engine)
    assert empty.num_rows == 0 and empty.schema == schema.QUARTERLY_FEATURES
    loader.load_table(engine, "quarterly_features", [quarterly_input()], key=("symbol", "quarter"))
    assert queries.quarterly_table(engine, quarters=["2017Q3"])["symbol"].to_pylist() == ["AAA"]
    assert queries.quarterly_table(engine, symbols=["ZZZ"])["quarter"].to_pylist() == ["2017Q4"]


def _bars_and_features() -> tuple[pa.Table, pa.Table]:
    """Hand-made: 3 symbols x 4 days of bars; features for all but the last bar of BBB."""
    symbols, dates = ["CCC", "AAA", "BBB"], [D(2021, 3, d) for d in (1, 2, 3, 4)]
    bar_rows, feat_rows = [], []
    for s_i, sym in enumerate(symbols):
        for d_i, day in enumerate(dates):
            price = 10.0 * (s_i + 1) + d_i
            bar_rows.append(
                {
                    "symbol": sym,
                    "trade_date": day,
                    "open": price,
                    "high": price + 1,
                    "low": price - 1,
                    "close": price + 0.5,
                    "adj_close": None if sym == "AAA" else price,
                    "volume": 1000.0 * d_i,
                    "source": "yahoo",
                }
            )
            if not (sym == "BBB" and d_i == 3):
                feat_rows.append(
                    {
                        "symbol": sym,
                        "trade_date": day,
                        **{
                            n: (None if d_i == 0 else price / (k + 1))
                            for k, n in enumerate(schema.DAILY_FEATURE_COLUMNS)
                        },
                    }
                )
    bar_schema = pa.schema([schema.DAILY_FEATURES.field(n) for n in schema.DAILY_BAR_COLUMNS])
    feat_schema = pa.schema(
        [schema.DAILY_FEATURES.field(n) for n in ("symbol", "trade_date")]
        + [schema.DAILY_FEATURES.field(n) for n in schema.DAILY_FEATURE_COLUMNS]
    )
    return (
        pa.Table.from_pylist(bar_rows, schema=bar_schema),
        pa.Table.from_pylist(feat_rows, schema=feat_schema),
    )


def test_daily_table_joins_orders_and_streams(engine: sa.Engine) -> None:
    bars, feats = _bars_and_features()
    loader.load_table(engine, "daily_bars", [bars], key=("symbol", "trade_date"))
    loader.load_table(engine, "daily_features", [feats], key=("symbol", "trade_date"))

    parts = list(queries.daily_table(engine, batch_rows=5))
    assert [p.num_rows for p in parts] == [5, 5, 2]
    assert all(p.schema == schema.DAILY_FEATURES for p in parts)
    got = pa.concat_tables(parts)
    assert got["symbol"].to_pylist() == ["AAA"] * 4 + ["BBB"] * 4 + ["CCC"] * 4
    assert got["trade_date"].to_pylist()[:4] == [D(2021, 3, d) for d in (1, 2, 3, 4)]

    # Expected: the input bars left-joined with the input features, sorted.
    expected_rows = []
    feat_by_key = {(r["symbol"], r["trade_date"]): r for r in feats.to_pylist()}
    for bar in sorted(bars.to_pylist(), key=lambda r: (r["symbol"], r["trade_date"])):
        f = feat_by_key.get((bar["symbol"], bar["trade_date"]), {})
        expected_rows.append({**bar, **{n: f.get(n) for n in schema.DAILY_FEATURE_COLUMNS}})
    assert got.equals(pa.Table.from_pylist(expected_rows, schema=schema.DAILY_FEATURES))
    # The bar without features is there, with null features.
    last_bbb = got.slice(7, 1).to_pylist()[0]
    assert last_bbb["symbol"] == "BBB" and last_bbb["rsi_14"] is None
    assert last_bbb["close"] == 33.5


def test_daily_table_filters(engine: sa.Engine) -> None:
    bars, feats = _bars_and_features()
    loader.load_table(engine, "daily_bars", [bars], key=("symbol", "trade_date"))
    loader.load_table(engine, "daily_features", [feats], key=("symbol", "trade_date"))
    got = pa.concat_tables(
        queries.daily_table(engine, ["CCC", "AAA", "NOPE"], start=D(2021, 3, 2), end=D(2021, 3, 3))
    )
    assert list(zip(got["symbol"].to_pylist(), got["trade_date"].to_pylist(), strict=True)) == [
        ("AAA", D(2021, 3, 2)),
        ("AAA", D(2021, 3, 3)),
        ("CCC", D(2021, 3, 2)),
        ("CCC", D(2021, 3, 3)),
    ]
    assert list(queries.daily_table(engine, [])) == []


def test_last_dates(engine: sa.Engine) -> None:
    assert queries.last_dates(engine) == {}
    bars, _ = _bars_and_features()
    loader.load_table(
        engine,
        "daily_bars",
        [bars.filter(pa.compute.field("trade_date") < D(2021, 3, 4))],
        key=("symbol", "trade_date"),
    )
    loader.load_table(
        engine,
        "daily_bars",
        [bars.filter(pa.compute.field("symbol") == "BBB")],
        key=("symbol", "trade_date"),
    )
    assert queries.last_dates(engine) == {
        "AAA": D(2021, 3, 3),
        "BBB": D(2021, 3, 4),
        "CCC": D(2021, 3, 3),
    }


def test_instruments_search(engine: sa.Engine) -> None:
    inst = pa.Table.from_pylist(
        [
            {
                "symbol": "AGM",
                "name": "Federal Agricultural Mortgage",
                "exchange": "N",
                "is_etf": False,
                "source": "kaggle-nasdaq",
            },
            {
                "symbol": "AGM_A",
                "name": "Federal Agricultural Mortgage pref A",
                "exchange": "N",
                "is_etf": False,
                "source": "kaggle-nasdaq",
            },
            {
                "symbol": "AGMXA",
                "name": "Another 100% thing",
                "exchange": "Q",
                "is_etf": True,
                "source": "kaggle-nasdaq",
            },
            {
                "symbol": "SPY",
                "name": "SPDR S&P 500 ETF Trust",
                "exchange": "P",
                "is_etf": True,
                "source": "yahoo",
            },
        ],
        schema=schema.INSTRUMENTS,
    )
    loader.load_table(engine, "instruments", [inst], key=("symbol",))
    sym = lambda t: t["symbol"].to_pylist()  # noqa: E731
    assert sym(queries.instruments(engine)) == ["AGM", "AGMXA", "AGM_A", "SPY"]
    assert sym(queries.instruments(engine, search="agm")) == ["AGM", "AGMXA", "AGM_A"]
    # "_" is literal, not a LIKE wildcard: AGMXA must not match "agm_".
    assert sym(queries.instruments(engine, search="agm_")) == ["AGM_A"]
    assert sym(queries.instruments(engine, search="100%")) == ["AGMXA"]
    assert sym(queries.instruments(engine, search="s&p")) == ["SPY"]
    assert sym(queries.instruments(engine, search="agm", limit=1)) == ["AGM"]
