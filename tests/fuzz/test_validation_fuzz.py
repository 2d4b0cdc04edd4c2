"""Structure-level fuzzing of the validation rules (``quality.rules`` + ``quality.polars``).

tests/unit/test_quality_properties.py checks ``validate`` row by row against an oracle
on mostly ordinary field texts. This one aims at the edges the oracle sampling rarely
reaches: number spellings at and beyond the float range (``1e308``, ``1e309``,
``-0``, ``nan``, ``inf``, 400-digit integers, subnormals, the implausible-value
bounds ``1e-6``/``1e9``/``1e13`` and their neighbours, hex, underscores, non-ASCII
digits), dates out of the calendar (``2017-02-29``, year 0, 1884/1885, 9999, ``+``),
and *structure*: many rows on few keys, so that exact repeats (collapsed), conflicting
repeats (``duplicate``), mixed sources for one symbol (superseded) and wrong-arity rows
collide in one frame, in any order.

- ``test_any_bar_frame_is_fully_accounted_for``: ``validate`` never raises (in
  particular not ``ValidationInvariantError``); every input row ends clean,
  quarantined with reason codes of FEATURES.md, or collapsed, each exactly once; no clean
  value is NaN or infinite, and neither is any daily or quarterly feature computed from
  the clean rows.
- ``test_validation_does_not_depend_on_row_order``: the same rows shuffled give the same
  clean rows, quarantine and counts (the silver and quarantine sort orders are total).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from fuzz.budget import fuzz_settings, tried
from fuzz.check import AS_OF, assert_features_finite, validate_accounted
from stockbatch import schema

EDGE_NUMBERS = [
    "0", "-0", "0.0", "-0.0", "1e308", "1.7976931348623157e308", "1e309", "-1e309", "1e-400",
    "5e-324", "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "9" * 400, "1e-6", "9.99999e-7",
    "1.000001e-6", "1e9", "1000000000.0000001", "1.1e9", "1e13", "10000000000000.002",
    "1.1e13", "0x1A", "1_000", "\u0661\u0662", "5e", "e5", ".", "-.5", "+5", " 5", "5 ", "",
    "1,5", "1e+05", "1E-05", "00012", "-1", "-1e-300",
]  # fmt: skip
EDGE_DATES = [
    "2017-02-29", "0000-01-01", "0001-01-01", "1884-12-31", "1885-01-01", "1885-01-02",
    "9999-12-31", "+2017-01-05", "2017-1-5", "2017-01-05T00:00", "20170105", "", " 2017-01-05",
    "2017-13-01", "2017-00-10", "2026-02-21", "2026-02-20", "2016-02-29",
]  # fmt: skip
SOURCES = ["kaggle-huge", "kaggle-sp500", "kaggle-nasdaq", "yahoo", "other"]

number_text = st.one_of(
    st.sampled_from(EDGE_NUMBERS),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=0.5, max_value=500).map(lambda x: f"{x:.4f}"),
    st.integers(-(10**30), 10**30).map(str),
    st.none(),
)
date_text = st.one_of(
    st.sampled_from(EDGE_DATES),
    st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31)).map(dt.date.isoformat),
    st.dates(dt.date(2017, 1, 2), dt.date(2017, 1, 31)).map(dt.date.isoformat),
    st.none(),
)


@st.composite
def bar_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Rows on few keys, with exact repeats of earlier rows mixed in."""
    base = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "symbol": st.sampled_from(["A", "B", "", None, "\u202eX"]),
                    "trade_date": date_text,
                    "open": number_text,
                    "high": number_text,
                    "low": number_text,
                    "close": number_text,
                    "adj_close": number_text,
                    "volume": number_text,
                    "source": st.sampled_from([*SOURCES, "", None]),
                    "is_adjusted": st.booleans(),
                    "wrong_arity": st.integers(0, 9).map(lambda k: k == 0),
                }
            ),
            max_size=30,
        )
    )
    repeats = draw(st.lists(st.integers(0, max(len(base) - 1, 0)), max_size=10)) if base else []
    rows = base + [dict(base[i]) for i in repeats]
    order = draw(st.permutations(range(len(rows))))
    files = ["f1.csv", "f2.csv", None]
    out = []
    for line_no, i in enumerate(order, start=2):
        r = rows[i]
        out.append(
            {
                **{k: v for k, v in r.items() if k != "wrong_arity"},
                "source_file": files[line_no % 3],
                "line_no": line_no,
                "n_fields": 3 if r["wrong_arity"] else 7,
                "raw_line": "x,y,z" if r["wrong_arity"] else None,
                "ingest_run_id": "fuzz",
            }
        )
    return out


def frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    bronze = pl.Schema(schema.BRONZE_BARS)
    cols = {n: t for n, t in bronze.items() if n != "bucket"}
    return pl.DataFrame(rows, schema=cols)


@fuzz_settings()
@given(bar_rows())
def test_any_bar_frame_is_fully_accounted_for(rows: list[dict[str, Any]]) -> None:
    tried("validation: any bar frame")
    res = validate_accounted(frame(rows))
    # An independent spot check of the clean layer: every clean number came from a
    # finite text, and its date is a real one no later than the as-of date.
    for row in res.clean.iter_rows(named=True):
        assert dt.date(1885, 1, 1) <= row["trade_date"] <= AS_OF
        for f in ("high", "low", "close", "volume"):
            assert row[f] is not None and math.isfinite(row[f])
    assert_features_finite(res)


@fuzz_settings()
@given(bar_rows(), st.randoms(use_true_random=False))
def test_validation_does_not_depend_on_row_order(rows: list[dict[str, Any]], rnd: Any) -> None:
    tried("validation: row order")
    first = validate_accounted(frame(rows))
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    second = validate_accounted(frame(shuffled))
    assert first.counts == second.counts
    assert first.winners == second.winners
    assert first.clean.equals(second.clean)
    key = ["source_file", "line_no"]
    q1 = first.quarantine.sort(key, nulls_last=True)
    q2 = second.quarantine.sort(key, nulls_last=True)
    assert q1.equals(q2)
