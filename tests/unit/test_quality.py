"""Validation bronze -> silver (FEATURES.md sections 4 and 5).

Every row in the hand-made tests below is a HAND-MADE EDGE CASE (not market
data): `row()` builds a valid Monday bar and each test overrides the fields it
is about. The last tests run on real files of the shared Kaggle Huge sample.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import random
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from stockbatch import quality, schema
from stockbatch.quality import RULES, ValidationInvariantError, rules, validate
from stockbatch.quality import polars as polars_quality
from support.bronze_rows import bronze_frame as frame
from support.bronze_rows import row, wrong_arity

AS_OF = dt.date(2017, 11, 10)  # a Friday
PRIORITY = ["yahoo", "kaggle-nasdaq", "kaggle-huge", "kaggle-sp500"]


def run(
    rows: list[dict[str, Any]],
    *,
    as_of: dt.date = AS_OF,
    is_session: Any = None,
    priority: list[str] | None = None,
) -> quality.ValidationResult:
    res = validate(
        frame(rows),
        as_of=as_of,
        is_session=is_session,
        source_priority=PRIORITY if priority is None else priority,
    )
    assert_reconciles(res.counts)
    return res


def assert_reconciles(counts: dict[str, Any]) -> None:
    parts = ("rows_clean", "rows_quarantined", "rows_deduplicated")
    assert counts["rows_in"] == sum(counts[p] for p in parts)
    for name, c in counts["per_file"].items():
        assert c["rows_in"] == sum(c[p] for p in parts), name


def reasons_of(res: quality.ValidationResult) -> list[list[str]]:
    return res.quarantine["reasons"].to_list()


# ---------------------------------------------------------------------------------------
# Declarations
# ---------------------------------------------------------------------------------------


def test_rules_follow_reason_codes_and_are_plain_data() -> None:
    assert tuple(r.code for r in RULES) == schema.REASON_CODES

    def plain(value: Any) -> bool:
        if dataclasses.is_dataclass(value):
            return all(plain(getattr(value, f.name)) for f in dataclasses.fields(value))
        if isinstance(value, tuple):
            return all(plain(v) for v in value)
        return isinstance(value, (str, int, float, dt.date))

    for r in RULES:
        assert plain(r), f"{r.code} holds something that is not plain data"
        assert r.description


def test_compiler_gives_one_boolean_column_per_rule() -> None:
    work = polars_quality.parse(frame([row()])).with_columns(
        pl.lit(False).alias(rules.DUP), pl.lit(False).alias(rules.COLLAPSED)
    )
    out = work.select(polars_quality.compile_rule(r, as_of=AS_OF) for r in RULES)
    assert out.columns == [rules.flag_col(c) for c in schema.REASON_CODES]
    assert out.row(0) == (False,) * len(RULES)


# ---------------------------------------------------------------------------------------
# One test per reason code (HAND-MADE rows); `expected` is the full reason list
# ---------------------------------------------------------------------------------------

REASON_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("unparseable", {"trade_date": "2017-02-30"}, ["unparseable"]),
    ("unparseable", {"trade_date": "2017-1-6"}, ["unparseable"]),
    ("unparseable", {"trade_date": "06/11/2017"}, ["unparseable"]),
    ("unparseable", {"trade_date": ""}, ["unparseable"]),
    ("unparseable", {"trade_date": None}, ["unparseable"]),
    ("unparseable", {"open": "ten"}, ["unparseable"]),
    ("unparseable", {"close": "nan"}, ["unparseable"]),
    ("unparseable", {"high": "inf"}, ["unparseable"]),
    ("unparseable", {"volume": "1e400"}, ["unparseable"]),
    ("unparseable", {"volume": "1,000"}, ["unparseable"]),
    ("unparseable", {"low": " 9"}, ["unparseable"]),
    ("unparseable", {"adj_close": "n/a"}, ["unparseable"]),
    ("unparseable", {"symbol": ""}, ["unparseable"]),
    ("unparseable", {"source": None}, ["unparseable"]),
    ("missing_price", {"open": ""}, ["missing_price"]),
    ("missing_price", {"close": None}, ["missing_price"]),
    # high missing: the rules that need high (range, high < low) do not fire
    ("missing_price", {"high": "", "open": "50", "low": "60"}, ["missing_price"]),
    ("missing_volume", {"volume": ""}, ["missing_volume"]),
    ("missing_volume", {"volume": None}, ["missing_volume"]),
    ("non_positive_price", {"low": "0", "open": "1", "close": "1"}, ["non_positive_price"]),
    ("non_positive_price", {"adj_close": "-0.5"}, ["non_positive_price"]),
    (
        "non_positive_price",
        {"open": "-1", "high": "-1", "low": "-1", "close": "-1"},
        ["non_positive_price"],
    ),
    # high < low leaves no room for open/close: both are outside [low, high] too
    (
        "high_below_low",
        {"high": "9", "low": "11"},
        ["high_below_low", "open_outside_range", "close_outside_range"],
    ),
    ("open_outside_range", {"open": "11.5"}, ["open_outside_range"]),
    ("open_outside_range", {"open": "8.9"}, ["open_outside_range"]),
    ("close_outside_range", {"close": "12"}, ["close_outside_range"]),
    ("close_outside_range", {"close": "1.05"}, ["close_outside_range"]),
    ("negative_volume", {"volume": "-5"}, ["negative_volume"]),
    ("weekend_date", {"trade_date": "2017-11-04"}, ["weekend_date"]),  # Saturday
    ("weekend_date", {"trade_date": "2017-11-05"}, ["weekend_date"]),  # Sunday
    ("future_date", {"trade_date": "2017-11-13"}, ["future_date"]),  # Monday after as_of
    # contract v2: a date before 1885-01-01 is a typo; it never stops a run
    ("date_out_of_range", {"trade_date": "1800-01-02"}, ["date_out_of_range"]),
    ("date_out_of_range", {"trade_date": "1884-12-31"}, ["date_out_of_range"]),
    ("date_out_of_range", {"trade_date": "0001-01-01"}, ["date_out_of_range"]),
    # contract v2: a positive price below 1e-6 or above 1e9, a volume above 1e13
    (
        "implausible_value",
        {"open": "1e-7", "high": "1e-7", "low": "1e-7", "close": "1e-7"},
        ["implausible_value"],
    ),
    (
        "implausible_value",
        {"open": "1e10", "high": "1e10", "low": "1e10", "close": "1e10"},
        ["implausible_value"],
    ),
    ("implausible_value", {"adj_close": "1e-7"}, ["implausible_value"]),
    ("implausible_value", {"adj_close": "2e9"}, ["implausible_value"]),
    ("implausible_value", {"volume": "1e14"}, ["implausible_value"]),
    # a negative open is still non-positive (contract v2; an empty one: missing_price above)
    ("non_positive_price", {"open": "-1"}, ["non_positive_price", "open_outside_range"]),
    ("non_positive_price", {"open": "-0.5e-7"}, ["non_positive_price", "open_outside_range"]),
]


@pytest.mark.parametrize(("code", "over", "expected"), REASON_CASES)
def test_each_reason_code(code: str, over: dict[str, Any], expected: list[str]) -> None:
    res = run([row(**over)])
    assert code in expected
    assert reasons_of(res) == [expected]
    assert res.clean.height == 0
    assert res.counts["reasons"] == {c: int(c in expected) for c in schema.REASON_CODES}


def test_every_reason_code_has_a_case() -> None:
    covered = {code for code, _, _ in REASON_CASES} | {"duplicate"}  # duplicate: below
    assert covered == set(schema.REASON_CODES)


def test_wrong_arity_is_only_unparseable_and_kept_verbatim() -> None:
    line = "2017-11-06,10,11,9,10.5"
    res = run([wrong_arity(line)])
    assert reasons_of(res) == [["unparseable"]]
    q = res.quarantine.row(0, named=True)
    assert q["raw_line"] == line
    assert q["n_fields"] == 5
    assert q["open"] is None


def test_valid_edge_values_are_clean() -> None:
    rows = [
        row(trade_date="2017-11-10"),  # == as_of: not future
        row(trade_date="2017-11-07", volume="0"),  # zero volume is allowed
        row(trade_date="2017-11-08", open="+1.0e1", high="11.", low=".9e1", close="10.50"),
        row(trade_date="2017-11-09", open="9", close="11"),  # on the bounds
        row(trade_date="2017-11-03", high="10", low="10", open="10", close="10"),
    ]
    res = run(rows)
    assert res.quarantine.height == 0
    assert res.clean["open"].to_list() == [10.0, 10.0, 10.0, 9.0, 10.0]
    assert res.clean["low"].to_list() == [10.0, 9.0, 9.0, 9.0, 9.0]
    assert res.clean["volume"].to_list() == [1000.0, 0.0, 1000.0, 1000.0, 1000.0]


# ---------------------------------------------------------------------------------------
# Contract v2: zero open ("not recorded"), dates before 1885, implausible values
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("zero", ["0", "0.0", "-0", "+0e5", ".0", "0000"])
def test_zero_open_is_not_recorded_and_the_row_stays_clean(zero: str) -> None:
    res = run([row(open=zero), row(trade_date="2017-11-07")])
    assert res.quarantine.height == 0
    assert res.clean["open"].to_list() == [None, 10.0]
    assert res.clean["high"].to_list() == [11.0, 11.0]  # the rest of the bar as usual
    assert res.counts["health"]["open_missing"] == 1
    assert res.counts["reasons"] == dict.fromkeys(schema.REASON_CODES, 0)


def test_zero_open_other_fields_checked_as_usual() -> None:
    res = run(
        [
            row(trade_date="2017-11-06", open="0", high="9", low="11"),  # high < low
            row(trade_date="2017-11-07", open="0", low="0"),  # low 0: still non-positive
            row(trade_date="2017-11-08", open="0", close="12"),  # close above high
            row(trade_date="2017-11-09", open="0", volume=""),
            row(trade_date="2017-11-04", open="0"),  # Saturday
            row(trade_date="2017-11-10", open="0", volume="1e14"),
        ]
    )
    # no reason because of the open: not missing, not non-positive, not outside the range
    assert reasons_of(res) == [
        ["high_below_low", "close_outside_range"],
        ["non_positive_price"],
        ["close_outside_range"],
        ["missing_volume"],
        ["weekend_date"],
        ["implausible_value"],
    ]
    assert res.counts["health"]["open_missing"] == 0  # counted on clean rows only
    # the quarantine keeps the text as arrived
    assert res.quarantine["open"].to_list() == ["0"] * 6


def test_open_missing_counts_live_rows_only() -> None:
    rows = [
        row(symbol="AAA", source="yahoo", source_file="y/AAA", open="0"),
        row(symbol="AAA", source="kaggle-huge", source_file="h/aaa", open="0"),  # superseded
        row(symbol="BBB", open="0", trade_date="2017-11-07"),
        row(symbol="BBB", open="10", trade_date="2017-11-08"),
    ]
    res = run(rows)
    assert res.counts["rows_superseded"] == 1
    assert res.counts["health"]["open_missing"] == 2


def test_zero_open_twins_and_conflicts() -> None:
    rows = [
        # '0' and '-0.0' are one value: identical twins, collapsed, the kept one clean
        row(trade_date="2017-11-06", line_no=2, open="0"),
        row(trade_date="2017-11-06", line_no=3, open="-0.0"),
        # '0' (not recorded) and '' (missing) disagree: a conflicting pair
        row(trade_date="2017-11-07", line_no=4, open="0"),
        row(trade_date="2017-11-07", line_no=5, open=""),
        # '0' and '10' disagree
        row(trade_date="2017-11-08", line_no=6, open="0"),
        row(trade_date="2017-11-08", line_no=7, open="10"),
    ]
    res = run(rows)
    assert res.counts["rows_deduplicated"] == 1
    assert res.clean["line_no"].to_list() == [2]
    assert reasons_of(res) == [
        ["duplicate"],
        ["missing_price", "duplicate"],
        ["duplicate"],
        ["duplicate"],
    ]


def test_date_out_of_range_boundary() -> None:
    res = run(
        [
            row(trade_date="1884-12-31"),  # Wednesday
            row(trade_date="1885-01-01"),  # Thursday: the first valid date
            row(trade_date="1885-01-03"),  # Saturday: weekend only
            row(trade_date="1884-12-27"),  # Saturday before: both reasons
            row(trade_date="1961-12-29"),  # before the old calendar start: clean
        ]
    )
    assert res.clean["trade_date"].to_list() == [dt.date(1885, 1, 1), dt.date(1961, 12, 29)]
    assert reasons_of(res) == [
        ["date_out_of_range"],
        ["weekend_date"],
        ["weekend_date", "date_out_of_range"],
    ]


def test_implausible_value_bounds_to_the_last_float() -> None:
    lo, hi, vol = 1e-6, 1e9, 1e13
    below, above = math.nextafter(lo, 0.0), math.nextafter(hi, math.inf)
    flat = {"open", "high", "low", "close"}

    def bar(day: str, price: float, **over: str) -> dict[str, Any]:
        return row(trade_date=day, **dict.fromkeys(flat, repr(price)), **over)

    res = run(
        [
            bar("2017-11-06", lo, volume=repr(vol)),  # every bound itself: clean
            bar("2017-11-07", hi, adj_close=repr(lo)),
            bar("2017-11-08", below),
            bar("2017-11-09", above),
            bar("2017-11-10", 10.0, volume=repr(math.nextafter(vol, math.inf))),
            bar("2017-11-03", 10.0, adj_close=repr(above)),
        ]
    )
    assert res.clean["trade_date"].to_list() == [dt.date(2017, 11, 6), dt.date(2017, 11, 7)]
    assert reasons_of(res) == [["implausible_value"]] * 4
    assert res.counts["reasons"]["implausible_value"] == 4


def test_multiple_reasons_on_one_row_in_reason_code_order() -> None:
    res = run(
        [
            row(
                trade_date="2017-11-18",  # a Saturday after as_of
                open="",
                high="8",
                low="9",
                close="12",
                volume="-1",
            ),
            row(trade_date="2017-11-12", open="abc", volume="-3", low="0"),  # Sunday
        ]
    )
    assert reasons_of(res) == [
        [
            "missing_price",
            "high_below_low",
            "close_outside_range",
            "negative_volume",
            "weekend_date",
            "future_date",
        ],
        ["unparseable", "non_positive_price", "negative_volume", "weekend_date", "future_date"],
    ]
    assert res.counts["reasons"]["negative_volume"] == 2
    assert res.counts["reasons"]["future_date"] == 2
    assert res.counts["reasons"]["unparseable"] == 1


def test_quarantine_keeps_the_bronze_row_as_arrived() -> None:
    r = row(open="010.50", high="1.2e1", close="x", adj_close="10.4")
    res = run([r])
    q = res.quarantine.row(0, named=True)
    for name in quality.QUARANTINE_SCHEMA.names():
        if name != "reasons":
            assert q[name] == r[name], name
    assert q["reasons"] == ["unparseable"]


# ---------------------------------------------------------------------------------------
# Tolerance of open/close_outside_range
# ---------------------------------------------------------------------------------------


def test_tolerance_hand_worked() -> None:
    # low 9, high 11: tol = 1e-6 * max(9, 11) = 1.1e-5, so the limits are 8.999989 / 11.000011.
    res = run(
        [
            row(trade_date="2017-11-06", open="11.00001"),  # inside the tolerance
            row(trade_date="2017-11-07", open="11.00002"),  # beyond
            row(trade_date="2017-11-08", close="8.99999"),  # inside
            row(trade_date="2017-11-09", close="8.99998"),  # beyond
        ]
    )
    assert res.clean["trade_date"].to_list() == [dt.date(2017, 11, 6), dt.date(2017, 11, 8)]
    assert res.clean["open"].to_list() == [11.00001, 10.0]  # kept as is, not clipped
    assert reasons_of(res) == [["open_outside_range"], ["close_outside_range"]]


def test_tolerance_boundary_to_the_last_float() -> None:
    lo, hi = 123.45, 130.01
    tol = 1e-6 * max(abs(lo), abs(hi))
    upper, lower = hi + tol, lo - tol
    rows = [
        row(trade_date="2017-11-06", low=repr(lo), high=repr(hi), open=repr(upper), close="125"),
        row(
            trade_date="2017-11-07",
            low=repr(lo),
            high=repr(hi),
            open=repr(math.nextafter(upper, math.inf)),
            close="125",
        ),
        row(trade_date="2017-11-08", low=repr(lo), high=repr(hi), close=repr(lower), open="125"),
        row(
            trade_date="2017-11-09",
            low=repr(lo),
            high=repr(hi),
            close=repr(math.nextafter(lower, -math.inf)),
            open="125",
        ),
    ]
    res = run(rows)
    assert res.clean["trade_date"].to_list() == [dt.date(2017, 11, 6), dt.date(2017, 11, 8)]
    assert reasons_of(res) == [["open_outside_range"], ["close_outside_range"]]


# ---------------------------------------------------------------------------------------
# Duplicates
# ---------------------------------------------------------------------------------------


def test_identical_twins_collapse_to_the_first_by_file_and_line() -> None:
    rows = [
        row(source_file="b.txt", line_no=2, open="4", high="4.5", low="3.5", close="4"),
        row(source_file="a.txt", line_no=9, open="4.0", high="4.50", low="3.5", close="4e0"),
        row(source_file="a.txt", line_no=7, open="+4", high="4.5", low="3.50", close="4.000"),
        row(trade_date="2017-11-07", source_file="b.txt", line_no=3),
    ]
    res = run(rows)
    assert res.counts["rows_deduplicated"] == 2
    assert res.counts["rows_clean"] == 2
    assert res.quarantine.height == 0
    first = res.clean.row(0, named=True)
    assert (first["source_file"], first["line_no"]) == ("a.txt", 7)
    assert res.counts["per_file"] == {
        "a.txt": {"rows_in": 2, "rows_clean": 1, "rows_quarantined": 0, "rows_deduplicated": 1},
        "b.txt": {"rows_in": 2, "rows_clean": 1, "rows_quarantined": 0, "rows_deduplicated": 1},
    }


def test_conflicting_duplicates_are_all_quarantined() -> None:
    rows = [
        row(line_no=2, close="10.5"),
        row(line_no=3, close="10.5"),  # the same as line 2 ...
        row(line_no=4, close="10.6"),  # ... but line 4 disagrees: all three go
        row(trade_date="2017-11-07", line_no=5, adj_close="10"),
        row(trade_date="2017-11-07", line_no=6),  # adj_close missing vs 10: disagree
    ]
    res = run(rows)
    assert res.clean.height == 0
    assert res.counts["rows_deduplicated"] == 0
    assert res.quarantine["line_no"].to_list() == [2, 3, 4, 5, 6]
    assert reasons_of(res) == [["duplicate"]] * 5
    assert res.counts["reasons"]["duplicate"] == 5


def test_duplicates_keep_their_other_reasons() -> None:
    rows = [
        row(trade_date="2017-11-04", line_no=2, volume="5"),  # Saturday
        row(trade_date="2017-11-04", line_no=3, volume="6"),
        # identical invalid twins: collapse, the kept one is quarantined once
        row(trade_date="2017-11-07", line_no=4, high="8"),
        row(trade_date="2017-11-07", line_no=5, high="8.0"),
    ]
    res = run(rows)
    assert res.quarantine["line_no"].to_list() == [2, 3, 4]
    assert reasons_of(res) == [
        ["weekend_date", "duplicate"],
        ["weekend_date", "duplicate"],
        ["high_below_low", "open_outside_range", "close_outside_range"],
    ]
    assert res.counts["rows_deduplicated"] == 1


def test_duplicate_comparison_of_unparseable_and_signed_zero() -> None:
    rows = [
        # 'abc' vs '': both null once parsed, but garbage is not an identical twin
        row(trade_date="2017-11-06", line_no=2, open="abc"),
        row(trade_date="2017-11-06", line_no=3, open=""),
        # the same garbage twice is a twin: kept once, quarantined once
        row(trade_date="2017-11-07", line_no=4, open="abc"),
        row(trade_date="2017-11-07", line_no=5, open="abc"),
        # -0 equals 0
        row(trade_date="2017-11-08", line_no=6, volume="0"),
        row(trade_date="2017-11-08", line_no=7, volume="-0"),
    ]
    res = run(rows)
    assert reasons_of(res) == [
        ["unparseable", "duplicate"],
        ["missing_price", "duplicate"],
        ["unparseable"],
    ]
    assert res.counts["rows_deduplicated"] == 2
    assert res.clean["line_no"].to_list() == [6]


def test_same_day_from_other_source_or_symbol_is_not_a_duplicate() -> None:
    rows = [
        row(line_no=2),
        row(line_no=3, source="yahoo", close="10.6"),
        row(line_no=4, symbol="OTHER", close="10.7"),
        wrong_arity("x,y", line_no=5),
        wrong_arity("x,y", line_no=6),
    ]
    res = run(rows)
    assert res.clean.height == 3
    assert reasons_of(res) == [["unparseable"], ["unparseable"]]


# ---------------------------------------------------------------------------------------
# Several sources (section 5)
# ---------------------------------------------------------------------------------------


def test_superseded_selection_over_three_sources() -> None:
    rows = [
        # AAA: yahoo wins over kaggle-huge and kaggle-sp500
        row(symbol="AAA", source="kaggle-sp500", source_file="sp/AAA.csv", close="10.1"),
        row(symbol="AAA", source="kaggle-huge", source_file="huge/aaa.txt"),
        row(symbol="AAA", source="yahoo", source_file="y/AAA", trade_date="2017-11-07"),
        row(
            symbol="AAA", source="kaggle-huge", source_file="huge/aaa.txt", trade_date="2017-11-07"
        ),
        # BBB: yahoo has only a refused row, so kaggle-huge (next with a clean row) wins
        row(symbol="BBB", source="yahoo", source_file="y/BBB", volume="-1"),
        row(symbol="BBB", source="kaggle-huge", source_file="huge/bbb.txt", volume="0"),
        row(symbol="BBB", source="kaggle-sp500", source_file="sp/BBB.csv", volume="0"),
        # CCC: a listed source beats unlisted ones; unlisted ones rank by name
        row(symbol="CCC", source="zeta", source_file="z/CCC"),
        row(symbol="CCC", source="alpha", source_file="a/CCC"),
        row(symbol="CCC", source="kaggle-sp500", source_file="sp/CCC.csv"),
        row(symbol="DDD", source="zeta", source_file="z/DDD"),
        row(symbol="DDD", source="alpha", source_file="a/DDD"),
    ]
    res = run(rows)
    assert res.winners == {
        "AAA": "yahoo",
        "BBB": "kaggle-huge",
        "CCC": "kaggle-sp500",
        "DDD": "alpha",
    }
    got = res.clean.select("symbol", "trade_date", "source", "superseded").rows()
    d6, d7 = dt.date(2017, 11, 6), dt.date(2017, 11, 7)
    assert got == [
        ("AAA", d6, "kaggle-huge", True),
        ("AAA", d6, "kaggle-sp500", True),
        ("AAA", d7, "kaggle-huge", True),
        ("AAA", d7, "yahoo", False),
        ("BBB", d6, "kaggle-huge", False),
        ("BBB", d6, "kaggle-sp500", True),
        ("CCC", d6, "alpha", True),
        ("CCC", d6, "kaggle-sp500", False),
        ("CCC", d6, "zeta", True),
        ("DDD", d6, "alpha", False),
        ("DDD", d6, "zeta", True),
    ]
    c = res.counts
    assert (c["rows_in"], c["rows_clean"], c["rows_quarantined"]) == (12, 11, 1)
    assert c["rows_superseded"] == 7
    # health reads only the winners: BBB's zero volume counts once (the sp500 row is superseded)
    assert c["health"]["zero_volume"] == 1


def test_source_priority_order_decides_and_is_deterministic() -> None:
    rows = [
        row(symbol="AAA", source="kaggle-huge"),
        row(symbol="AAA", source="yahoo"),
    ]
    a = run(rows, priority=["kaggle-huge", "yahoo"])
    b = run(list(reversed(rows)), priority=["kaggle-huge", "yahoo"])
    assert a.winners == b.winners == {"AAA": "kaggle-huge"}
    assert a.clean.equals(b.clean)
    assert run(rows, priority=[]).winners == {"AAA": "kaggle-huge"}  # none listed: by name


# ---------------------------------------------------------------------------------------
# Counts, reconciliation, per file
# ---------------------------------------------------------------------------------------


def test_reconciliation_and_per_file_counts() -> None:
    rows = [
        row(source_file="f1", trade_date="2017-11-06"),
        row(source_file="f1", trade_date="2017-11-07"),
        row(source_file="f1", trade_date="2017-11-07"),  # twin of the previous: deduplicated
        row(source_file="f1", trade_date="2017-11-04"),  # Saturday: quarantined
        row(source_file="f2", trade_date="2017-11-08", symbol="XYZ"),
        wrong_arity("oops", source_file="f2"),
        row(source_file="f3", trade_date="2017-11-08", symbol="XYZ", close="10.4"),
        row(source_file="f3", trade_date="2017-11-09", symbol="XYZ"),
    ]
    res = run(rows)
    c = res.counts
    assert {
        k: c[k] for k in ("rows_in", "rows_clean", "rows_quarantined", "rows_deduplicated")
    } == {
        "rows_in": 8,
        "rows_clean": 3,
        "rows_quarantined": 4,
        "rows_deduplicated": 1,
    }
    assert c["per_file"] == {
        "f1": {"rows_in": 4, "rows_clean": 2, "rows_quarantined": 1, "rows_deduplicated": 1},
        "f2": {"rows_in": 2, "rows_clean": 0, "rows_quarantined": 2, "rows_deduplicated": 0},
        "f3": {"rows_in": 2, "rows_clean": 1, "rows_quarantined": 1, "rows_deduplicated": 0},
    }
    assert c["reasons"] == {
        **dict.fromkeys(schema.REASON_CODES, 0),
        "unparseable": 1,
        "weekend_date": 1,
        "duplicate": 2,
    }


def test_reconcile_raises_on_a_lost_row() -> None:
    counts: dict[str, Any] = {
        "rows_in": 3,
        "rows_clean": 2,
        "rows_quarantined": 0,
        "rows_deduplicated": 0,
        "per_file": {
            "f": {"rows_in": 3, "rows_clean": 2, "rows_quarantined": 0, "rows_deduplicated": 0}
        },
    }
    with pytest.raises(ValidationInvariantError, match="rows_in=3"):
        rules.reconcile(counts)
    counts["rows_clean"] = 3
    with pytest.raises(ValidationInvariantError, match="file 'f'"):
        rules.reconcile(counts)
    counts["per_file"]["f"]["rows_clean"] = 3
    rules.reconcile(counts)  # consistent now


def test_empty_input() -> None:
    res = run([])
    assert res.clean.schema == quality.SILVER_SCHEMA
    assert res.quarantine.schema == quality.QUARANTINE_SCHEMA
    assert res.counts == {
        "rows_in": 0,
        "rows_clean": 0,
        "rows_quarantined": 0,
        "rows_deduplicated": 0,
        "rows_superseded": 0,
        "reasons": dict.fromkeys(schema.REASON_CODES, 0),
        "health": {"zero_volume": 0, "off_calendar": None, "suspect_jump": 0, "open_missing": 0},
        "per_file": {},
    }
    assert res.winners == {}


def test_output_schemas_and_sort_order() -> None:
    rows = [
        row(symbol=s, trade_date=d, source=src, source_file=f"{src}/{s}")
        for s in ("MSFT", "AAPL", "A")
        for d in ("2017-11-08", "2017-11-06", "2017-11-07")
        for src in ("yahoo", "kaggle-huge")
    ]
    random.Random(7).shuffle(rows)
    res = run(rows)
    assert res.clean.schema == quality.SILVER_SCHEMA
    assert res.clean.columns == schema.SILVER_BARS.names
    keys = res.clean.select("symbol", "trade_date", "source").rows()
    assert keys == sorted(keys)
    res.clean.to_arrow().cast(schema.SILVER_BARS)  # what the lake writes; raises on mismatch
    bad = run([row(open="x")])
    assert bad.quarantine.schema == quality.QUARANTINE_SCHEMA
    bad.quarantine.to_arrow().cast(schema.QUARANTINE)


def test_packed_key_fallback_gives_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [
        row(symbol=s, trade_date=d, source=src, close=c, line_no=i)
        for i, (s, d, src, c) in enumerate(
            [
                ("B", "2017-11-07", "yahoo", "10.5"),
                ("A", "2017-11-07", "kaggle-huge", "10.5"),
                ("B", "2017-11-06", "kaggle-huge", "10.5"),
                ("B", "2017-11-07", "yahoo", "10.5"),  # twin
                ("A", "2017-11-06", "yahoo", "10.5"),
                ("A", "2017-11-06", "yahoo", "10.4"),  # conflict
                ("A", "2017-11-08", "kaggle-huge", "10.5"),
            ],
            start=2,
        )
    ]
    packed = run(rows)
    monkeypatch.setattr(polars_quality, "KEY_BITS", 0)  # forces the dense-rank key
    ranked = run(rows)
    assert packed.clean.equals(ranked.clean)
    assert packed.quarantine.equals(ranked.quarantine)
    assert packed.counts == ranked.counts
    assert packed.clean["line_no"].to_list() == [3, 8, 4, 2]
    assert packed.quarantine["line_no"].to_list() == [6, 7]


def test_missing_bronze_column_is_refused() -> None:
    with pytest.raises(ValueError, match="raw_line"):
        validate(frame([row()]).drop("raw_line"), as_of=AS_OF, is_session=None, source_priority=[])


# ---------------------------------------------------------------------------------------
# Health report
# ---------------------------------------------------------------------------------------


def test_health_flags() -> None:
    def bar(sym: str, day: str, close: str, adj: str | None = None, volume: str = "100") -> dict:
        c = float(close)
        return row(
            symbol=sym,
            trade_date=day,
            open=close,
            high=repr(c * 1.01),
            low=repr(c * 0.99),
            close=close,
            adj_close=adj,
            volume=volume,
        )

    rows = [
        bar("AAA", "2017-11-20", "10"),
        bar("AAA", "2017-11-21", "51"),  # x5.1: jump
        bar("AAA", "2017-11-22", "50", volume="0"),
        bar("AAA", "2017-11-23", "9.9"),  # /5.05: jump; Thanksgiving: off calendar
        bar("AAA", "2017-11-24", "49.5"),  # exactly x5: not beyond
        # BBB: a 1:5 split seen through adj_close (10 -> 2 raw, 10 -> 10 adjusted): no jump
        bar("BBB", "2017-11-20", "100", adj="10"),
        bar("BBB", "2017-11-21", "20", adj="10"),
        bar("BBB", "2017-11-22", "20", volume="0"),  # no adj_close: factor 1 -> c 20 vs 10
        bar("CCC", "2017-11-20", "1000"),  # first row of a symbol: no previous bar
        {**bar("CCC", "2017-11-21", "1001"), "open": "0"},  # not recorded (contract v2)
    ]

    def is_session(days: pl.Series) -> pl.Series:
        return days != dt.date(2017, 11, 23)

    res = run(rows, is_session=is_session, as_of=dt.date(2017, 12, 1))
    assert res.quarantine.height == 0
    assert res.counts["health"] == {
        "zero_volume": 2,
        "off_calendar": 1,
        "suspect_jump": 2,
        "open_missing": 1,
    }
    assert tuple(res.counts["health"]) == schema.HEALTH_FLAGS
    assert run(rows, as_of=dt.date(2017, 12, 1)).counts["health"]["off_calendar"] is None


def test_is_session_must_answer_per_date() -> None:
    with pytest.raises(TypeError, match="is_session"):
        run([row()], is_session=lambda days: pl.Series([True, False]))


# ---------------------------------------------------------------------------------------
# Real data: the shared Kaggle Huge sample
# ---------------------------------------------------------------------------------------


def huge_bronze(root: Path, files: list[Path]) -> pl.DataFrame:
    """Bronze rows of Huge-layout files by plain line splitting (independent of the adapters)."""
    names: list[str] = []
    symbols: list[str] = []
    lines: list[str] = []
    line_nos: list[int] = []
    for f in files:
        text = f.read_text().splitlines()
        body = text[1:]  # header: Date,Open,High,Low,Close,Volume,OpenInt
        names += [str(f.relative_to(root))] * len(body)
        symbols += [f.name.split(".")[0].upper()] * len(body)
        line_nos += range(2, len(body) + 2)
        lines += body
    parts = pl.Series("line", lines, dtype=pl.String).str.split(",")
    ok = parts.list.len() == 7
    field = {n: i for i, n in enumerate(["trade_date", "open", "high", "low", "close", "volume"])}
    df = pl.DataFrame({"line": lines, "parts": parts, "ok": ok})
    return df.select(
        pl.Series("symbol", symbols, dtype=pl.String),
        *[
            pl.when("ok").then(pl.col("parts").list.get(i, null_on_oob=True)).alias(n)
            for n, i in field.items()
        ],
        pl.lit(None, dtype=pl.String).alias("adj_close"),
        pl.lit("kaggle-huge").alias("source"),
        pl.lit(True).alias("is_adjusted"),
        pl.Series("source_file", names, dtype=pl.String),
        pl.Series("line_no", line_nos, dtype=pl.Int32),
        pl.col("parts").list.len().cast(pl.Int16).alias("n_fields"),
        pl.when(~pl.col("ok")).then(pl.col("line")).alias("raw_line"),
        pl.lit("run-real").alias("ingest_run_id"),
        pl.lit(0, dtype=pl.Int16).alias("bucket"),
    ).select(quality.BRONZE_SCHEMA.names())


# Found with awk over the sample (see the helper report); (file, line) -> reasons.
KNOWN_QUIRKS = {
    ("Stocks/epr.us.txt", 450): ["open_outside_range"],  # open 4.0682 vs low 40.243
    ("Stocks/epr.us.txt", 453): ["high_below_low", "open_outside_range", "close_outside_range"],
    ("Stocks/epr.us.txt", 531): ["close_outside_range"],  # close 4.0682
    ("Stocks/epr.us.txt", 953): ["high_below_low", "open_outside_range", "close_outside_range"],
    ("Stocks/bxmt.us.txt", 611): ["close_outside_range"],  # close 9.819 vs low 96.255
    ("Stocks/bxmt.us.txt", 793): ["open_outside_range"],
    ("Stocks/nue.us.txt", 5896): ["close_outside_range"],
    ("Stocks/stag.us.txt", 449): ["close_outside_range"],
    ("Stocks/husa.us.txt", 1354): ["non_positive_price"],  # low 0
    ("Stocks/wmlp.us.txt", 19): ["non_positive_price"],
    ("Stocks/sptl.us.txt", 2): ["non_positive_price"],  # open and low 0
    ("Stocks/evstc.us.txt", 2): ["weekend_date"],  # 2016-02-27, a Saturday
    ("Stocks/evstc.us.txt", 8): ["weekend_date"],
}


def test_real_huge_files_quirks_are_quarantined(shared_data: Path) -> None:
    root = shared_data / "kaggle" / "huge-stock-market-sample"
    names = ["epr", "bxmt", "nue", "stag", "husa", "wmlp", "sptl", "evstc", "sbt", "vist"]
    files = [root / "Stocks" / f"{n}.us.txt" for n in names]
    bronze = huge_bronze(root, files)
    res = validate(bronze, as_of=dt.date(2018, 1, 1), is_session=None, source_priority=PRIORITY)
    assert_reconciles(res.counts)
    assert res.counts["rows_in"] == bronze.height > 10_000
    got = {
        (f, n): r
        for f, n, r in res.quarantine.select("source_file", "line_no", "reasons").iter_rows()
    }
    for key, reasons in KNOWN_QUIRKS.items():
        assert got.get(key) == reasons, key
    # the rest: the other three zero-price sptl days and evstc's 16 other weekend bars
    assert len(got) == len(KNOWN_QUIRKS) + 3 + 16
    assert res.counts["reasons"] == {
        **dict.fromkeys(schema.REASON_CODES, 0),
        "non_positive_price": 6,
        "high_below_low": 2,
        "open_outside_range": 4,
        "close_outside_range": 6,
        "weekend_date": 18,
    }
    # sbt and vist are real empty files: no rows, no error, no per-file entry
    assert set(res.counts["per_file"]) == {
        f"Stocks/{n}.us.txt" for n in names if n not in ("sbt", "vist")
    }
    assert res.clean.schema == quality.SILVER_SCHEMA
    assert res.winners == {n.upper(): "kaggle-huge" for n in names if n not in ("sbt", "vist")}


@pytest.mark.slow
def test_real_huge_sample_in_full(shared_data: Path) -> None:
    root = shared_data / "kaggle" / "huge-stock-market-sample"
    bronze = huge_bronze(root, sorted(root.glob("*/*.txt")))
    res = validate(bronze, as_of=dt.date(2018, 1, 1), is_session=None, source_priority=PRIORITY)
    c = res.counts
    assert_reconciles(c)
    assert c["rows_in"] == 1_883_044  # 898 non-empty files (2 are empty) minus headers
    assert len(c["per_file"]) == 898
    # counted independently with awk over the raw files (tolerance 1e-6 * max(|low|, |high|))
    assert c["reasons"] == {
        **dict.fromkeys(schema.REASON_CODES, 0),
        "non_positive_price": 6,
        "high_below_low": 2,
        "open_outside_range": 4,
        "close_outside_range": 6,
        "weekend_date": 18,
    }
    assert c["rows_quarantined"] == 32
    assert c["rows_deduplicated"] == 0
    # 3,141 zero-volume lines, 4 of them on quarantined sptl rows
    assert c["health"]["zero_volume"] == 3137
