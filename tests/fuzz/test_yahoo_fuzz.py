"""Structure-level fuzzing of the Yahoo chart JSON mapping (``YahooSource``).

tests/unit/sources/test_yahoo_source.py replays a real response and a few hand-made
error answers. Here the chart JSON is generated: the documented shape
(``chart.result[0].{meta, timestamp, indicators.quote[0], indicators.adjclose[0],
events}``) with any node replaced by the wrong type, arrays of unequal lengths, and
values that are NaN, infinite, huge integers, strings, booleans, nested objects,
timestamps out of any calendar, bogus time zones; plus arbitrary JSON and non-JSON
bodies and HTTP statuses. The HTTP layer is bypassed (``_request`` answers the
generated response through the module's own ``_chart_result``).

- ``test_any_chart_answer_is_bars_or_a_source_error``: ``read``/``events``/
  ``instruments`` either return tables of their schemas (dates inside the unit's range,
  ``line_no`` within the arrays, numbers as text) or raise ``SourceError``; never
  another exception. Then the bars go through ``validate``: every row accounted for,
  no clean value nor feature infinite.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from fuzz.budget import fuzz_settings, tried
from fuzz.check import assert_features_finite, bronze_frame, validate_accounted
from stockbatch.settings import YahooSettings
from stockbatch.sources.base import BRONZE_SOURCE_SCHEMA, SourceError
from stockbatch.sources.yahoo import YAHOO_EVENTS, YahooSource, _chart_result

START, END = dt.date(2026, 2, 9), dt.date(2026, 2, 20)
NOW = dt.datetime(2026, 2, 21, 12, 0, tzinfo=dt.UTC)
BASE_TS = 1770820200  # 2026-02-11 14:30 UTC, a session's opening time

json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
json_any = st.recursive(
    json_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
timestamp = st.one_of(
    st.integers(BASE_TS - 20 * 86400, BASE_TS + 20 * 86400),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(BASE_TS - 86400, BASE_TS + 86400).map(str),
    json_scalar,
)
price = st.one_of(
    st.floats(min_value=1, max_value=1000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**80), 2**80),
    st.sampled_from([0, 0.0, -0.0, 1e-7, 1e9, 1.1e9, 1e13, 1.1e13, 1e308, None]),
    json_scalar,
)


def maybe_wrong(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually the right shape, sometimes any JSON at all in its place."""
    return st.one_of(value, value, value, json_any)


@st.composite
def chart_result(draw: st.DrawFn) -> Any:
    n = draw(st.integers(0, 8))
    series = {
        name: draw(maybe_wrong(st.lists(price, min_size=0, max_size=n + 2)))
        for name in ("open", "high", "low", "close", "volume")
    }
    meta = draw(
        maybe_wrong(
            st.fixed_dictionaries(
                {},
                optional={
                    "exchangeTimezoneName": st.one_of(
                        st.sampled_from(["America/New_York", "Asia/Tokyo", "UTC", "../../x", ""]),
                        json_scalar,
                    ),
                    "gmtoffset": st.one_of(st.integers(-(2**40), 2**40), json_scalar),
                    "currentTradingPeriod": maybe_wrong(
                        st.fixed_dictionaries(
                            {"regular": maybe_wrong(st.fixed_dictionaries({"end": timestamp}))}
                        )
                    ),
                    "longName": json_scalar,
                    "shortName": json_scalar,
                    "exchangeName": json_scalar,
                    "instrumentType": st.one_of(st.just("ETF"), json_scalar),
                },
            )
        )
    )
    event = maybe_wrong(
        st.fixed_dictionaries(
            {},
            optional={
                "date": timestamp,
                "amount": price,
                "numerator": price,
                "denominator": price,
                "splitRatio": json_scalar,
            },
        )
    )
    events = draw(
        maybe_wrong(
            st.fixed_dictionaries(
                {},
                optional={
                    k: maybe_wrong(st.dictionaries(st.one_of(timestamp.map(str)), event))
                    for k in ("dividends", "splits", "capitalGains")
                },
            )
        )
    )
    return draw(
        maybe_wrong(
            st.fixed_dictionaries(
                {
                    "meta": st.just(meta),
                    "timestamp": maybe_wrong(st.lists(timestamp, min_size=n, max_size=n)),
                    "indicators": maybe_wrong(
                        st.fixed_dictionaries(
                            {
                                "quote": maybe_wrong(st.just([series])),
                                "adjclose": maybe_wrong(
                                    st.lists(price, max_size=n + 1).map(
                                        lambda xs: [{"adjclose": xs}]
                                    )
                                ),
                            }
                        )
                    ),
                    "events": st.just(events),
                }
            )
        )
    )


@st.composite
def answer(draw: st.DrawFn) -> tuple[int, str]:
    """(HTTP status, body text) of one chart request."""
    status = draw(st.sampled_from([200, 200, 200, 200, 400, 404]))
    kind = draw(st.sampled_from(["chart", "chart", "chart", "error", "json", "text"]))
    if kind == "chart":
        payload: Any = {"chart": {"result": [draw(chart_result())], "error": None}}
    elif kind == "error":
        payload = {"chart": {"result": None, "error": draw(json_any)}}
    elif kind == "json":
        payload = draw(json_any)
    else:
        return status, draw(st.text(max_size=40))
    return status, json.dumps(payload)  # NaN/Infinity as JSON allows in Python


class FakeResponse:
    def __init__(self, status: int, body: str) -> None:
        self.status_code = status
        self._body = body

    def json(self) -> Any:
        return json.loads(self._body)


@fuzz_settings()
@given(answer())
def test_any_chart_answer_is_bars_or_a_source_error(case: tuple[int, str]) -> None:
    tried("yahoo: any chart answer")
    status, body = case
    source = YahooSource(["SPY"], START, END, {}, YahooSettings(), now=lambda: NOW)

    def request(symbol: str, start: dt.date, end: dt.date, ref: str) -> dict[str, Any]:
        return _chart_result(FakeResponse(status, body), symbol, ref)

    source._request = request  # type: ignore[method-assign]
    (unit,) = list(source.units())
    try:
        bars = source.read(unit)
        events = source.events(unit)
        source.instruments()
    except SourceError as exc:
        assert exc.ref == unit.ref
        return
    assert bars.schema == BRONZE_SOURCE_SCHEMA
    assert events.schema == YAHOO_EVENTS
    result = json.loads(body)["chart"]["result"][0]
    stamps = result.get("timestamp") if isinstance(result, dict) else None
    n = len(stamps) if isinstance(stamps, list) else 0
    for row in bars.to_pylist():
        assert 1 <= row["line_no"] <= n
        assert (
            row["trade_date"] is None or START.isoformat() <= row["trade_date"] <= END.isoformat()
        )
        assert row["source"] == "yahoo" and row["symbol"] == "SPY"
    for row in events.to_pylist():
        assert START.isoformat() <= row["event_date"] <= END.isoformat()
    res = validate_accounted(bronze_frame(bars))
    assert_features_finite(res)
