"""The DAG tasks' plain parts: which session a run covers, which quarter is snapshotted."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from stockbatch.errors import PipelineError
from stockbatch.orchestrate import tasks
from stockbatch.settings import Settings


def _utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def test_a_scheduled_run_covers_its_interval_end() -> None:
    assert tasks.session_of(_utc(2023, 4, 14, 22), _utc(2023, 4, 14, 22, 5)) == dt.date(2023, 4, 14)


@pytest.mark.parametrize(
    ("run_after", "session"),
    [
        (_utc(2023, 4, 14, 23), dt.date(2023, 4, 14)),  # Friday after the close
        (_utc(2023, 4, 14, 15), dt.date(2023, 4, 13)),  # Friday before it: Thursday
        (_utc(2023, 4, 16, 12), dt.date(2023, 4, 14)),  # Sunday: Friday
        (_utc(2023, 4, 10, 9), dt.date(2023, 4, 6)),  # Monday morning after Good Friday
    ],
)
def test_a_manual_run_without_interval_covers_the_last_closed_session(
    run_after: dt.datetime, session: dt.date
) -> None:
    assert tasks.session_of(None, run_after) == session


def test_holidays_are_not_sessions() -> None:
    assert tasks.is_session(dt.date(2023, 4, 6))
    assert not tasks.is_session(dt.date(2023, 4, 7))  # Good Friday
    assert not tasks.is_session(dt.date(2023, 4, 8))  # Saturday


def test_daily_conf_overrides_the_schedule_and_refuses_unknown_keys() -> None:
    settings = Settings()
    conf = tasks.DailyConf.of(settings, {"source": "yahoo", "symbols": "aapl, msft"})
    assert (conf.source, conf.symbols) == ("yahoo", ("AAPL", "MSFT"))
    assert tasks.DailyConf.of(settings, None).symbols == tuple(settings.schedule.symbols)
    with pytest.raises(PipelineError, match="unknown conf keys"):
        tasks.DailyConf.of(settings, {"sources": "kaggle"})


def test_a_retried_ingest_drops_what_a_killed_attempt_left(tmp_path: Path, demo_data: Path) -> None:
    from stockbatch import runs
    from stockbatch.lake import bronze
    from stockbatch.lake.layout import layout

    settings = Settings(home=tmp_path)
    run_id = tasks.begin(settings, "d", "manual__x", {})
    orphan = layout(settings).bronze_batch(run_id) / "bucket=0000" / "part-0099.parquet"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"half a file")  # what a SIGKILL mid-write could leave
    conf = tasks.DailyConf.of(settings, {"source": "kaggle", "path": str(demo_data)})
    done = tasks.ingest(settings, run_id, "d", conf, dt.date(2023, 4, 14))
    assert done["rows"] > 0 and not orphan.exists()
    assert run_id in set(bronze.read_catalog(settings)["batch"].to_list())
    assert runs.read_manifest(settings, run_id)["status"] == runs.PENDING
    # Once catalogued, a landing is never dropped: a rerun skips every unit instead.
    again = tasks.ingest(settings, run_id, "d", conf, dt.date(2023, 4, 14))
    assert again["rows"] == 0
    assert layout(settings).bronze_batch(run_id).exists()
