"""The whole pipeline from Yahoo, replaying real recorded responses at the HTTP layer."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from stockbatch import pipeline
from stockbatch.lake import bronze
from stockbatch.settings import Settings
from stockbatch.sources.yahoo import YahooSource
from support.yahoo_replay import NOT_FOUND, SPY_OK, ReplaySession

AFTER_CLOSE = dt.datetime(2026, 2, 21, 12, 0, tzinfo=dt.UTC)  # the Saturday after the last bar


@pytest.fixture(autouse=True)
def _yfinance_cache(tmp_path: Path) -> None:
    import yfinance

    yfinance.set_tz_cache_location(str(tmp_path / "yfinance-cache"))


def yahoo(settings: Settings, symbols: list[str], start: dt.date | None = None) -> YahooSource:
    session = ReplaySession({"SPY": [SPY_OK], "NOPE": [NOT_FOUND]})
    return YahooSource(
        symbols,
        start,
        None,
        bronze.last_dates(settings),
        settings.yahoo,
        session=session,
        sleep=lambda s: None,
        now=lambda: AFTER_CLOSE,
    )


def test_yahoo_run_incremental_and_partial(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    first = pipeline.run(
        settings, yahoo(settings, ["SPY", "NOPE"], dt.date(2026, 2, 1)), as_of=dt.date(2026, 2, 21)
    )
    # The unknown symbol fails alone, with a clear message; SPY goes all the way through.
    assert first.status == "partial"
    assert first.ingest is not None and first.process is not None
    assert [r["ref"].split("/")[1] for r in first.ingest.rejected] == ["NOPE"]
    assert "NOPE" in first.ingest.rejected[0]["error"]
    assert first.process.counts["rows_in"] == 5
    assert first.process.counts["rows_clean"] == 5
    daily = pl.read_parquet(tmp_path / "lake" / "gold" / "daily_features", hive_partitioning=False)
    assert daily["symbol"].to_list() == ["SPY"] * 5
    assert daily["close"][-1] == pytest.approx(689.4299926757812, rel=0, abs=0)
    assert daily["ret_1d"][1] == pytest.approx(682.8499755859375 / 681.75 - 1, rel=1e-12)
    assert bronze.last_dates(settings) == {"SPY": dt.date(2026, 2, 20)}

    # The next day (a Saturday): SPY is fetched from the day after its last stored
    # bar only; no new session means nothing lands and nothing changes.
    second = pipeline.run(settings, yahoo(settings, ["SPY"]), as_of=dt.date(2026, 2, 21))
    assert second.status == "succeeded"
    assert second.ingest is not None
    assert second.ingest.units == [] and second.ingest.rows == 0
    assert second.ingest.empty_units == 1
    assert not second.changed
