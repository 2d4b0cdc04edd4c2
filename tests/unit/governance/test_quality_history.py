"""The quality history: every run's counts kept, thresholds from settings marking a run,
``stockbatch quality --since`` / ``--json``, and the Airflow gate on the same limit.

Real runs through the CLI (in-process) on files of the demo sample plus a file of
refused rows, into a temporary home.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stockbatch.cli import app
from stockbatch.governance import quality
from stockbatch.orchestrate import tasks
from stockbatch.settings import Settings

runner = CliRunner()

BAD = (
    "Date,Open,High,Low,Close,Volume,OpenInt\n"
    "2017-01-03,10,11,9,10.5,1000,0\n"  # clean
    "2017-01-04,10,11,9\n"  # wrong arity: unparseable
    "2017-01-05,ten,11,9,10.5,1000,0\n"  # unparseable
    "2017-01-06,x,11,9,10.5,1000,0\n"  # unparseable
    "2017-01-10,10,9,11,10,1000,0\n"  # high < low
)
STRICT = {"STOCKBATCH_QUALITY__MAX_REASON_RATE": '{"unparseable": 0.001}'}
"""Marks a run with more than 0.1 % unparseable rows: the second run (3 of 526)."""


def sb(home: Path, *args: str, **env: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args), env={"STOCKBATCH_HOME": str(home), **env})
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Path:
    """Three runs: clean files, then more files with refused rows, then a no-op rerun."""
    root = tmp_path_factory.mktemp("quality-history")
    first, second = root / "in1", root / "in2"
    first.mkdir()
    second.mkdir()
    shutil.copy(demo_data / "huge" / "btu.us.txt", first)
    shutil.copy(demo_data / "huge" / "evstc.us.txt", second)
    (second / "zzbad.us.txt").write_text(BAD)
    h = root / "home"
    for folder in (first, second, second):
        code, output = sb(h, "run", "--path", str(folder), "--as-of", "2023-06-30", "-q")
        assert code == 0, output
    return h


def test_every_run_is_kept_with_its_counts(home: Path) -> None:
    found = quality.lake_history(Settings(home=home))
    assert len(found) == 3
    clean, bad, rerun = found
    assert clean.rows_quarantined == 0 and clean.quarantine_rate == 0
    assert bad.reasons["unparseable"] == 3 and bad.reasons["high_below_low"] == 1
    assert bad.rows_quarantined > 0
    assert bad.quarantine_rate == pytest.approx(bad.rows_quarantined / bad.rows_in)
    assert set(bad.health) >= {"zero_volume", "off_calendar", "suspect_jump", "open_missing"}
    assert rerun.run_id > bad.run_id > clean.run_id  # oldest first
    # The defaults mark none of them (4 % quarantined is under the 5 % limit).
    assert not any(r.marked for r in found)


def test_a_threshold_from_settings_marks_the_run(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in STRICT.items():
        monkeypatch.setenv(k, v)
    found = quality.lake_history(Settings(home=home))
    assert [r.marked for r in found] == [False, True, True]
    [breach] = found[1].breaches
    assert breach.threshold == "reason:unparseable"
    assert breach.limit == 0.001 and breach.value == pytest.approx(3 / found[1].rows_in)
    assert breach.text().startswith("reason:unparseable 0.")


def test_quarantine_rate_limit_falls_back_to_the_gate_limit() -> None:
    s = Settings()
    assert quality.thresholds(s).max_quarantine_rate == s.schedule.max_quarantine_rate
    s.schedule.max_quarantine_rate = 0.2
    assert quality.thresholds(s).max_quarantine_rate == 0.2
    s.quality.max_quarantine_rate = 0.01
    assert quality.thresholds(s).max_quarantine_rate == 0.01  # set here: it wins
    s.quality.max_reason_rate = {"unparsable": 0.1}  # a typo is refused, not ignored
    with pytest.raises(ValueError, match="unknown"):
        quality.thresholds(s)


def test_history_since_and_runs_without_counts() -> None:
    docs = [
        {"run_id": "a", "started_at": "2024-01-01T10:00:00+00:00", "counts": {"rows_in": 10}},
        {"run_id": "b", "started_at": "2024-02-01T10:00:00+00:00"},  # ingest only: no checks
        {
            "run_id": "c",
            "started_at": dt.datetime(2024, 3, 1, 10, tzinfo=dt.UTC),  # a warehouse row
            "counts": {"rows_in": 10, "rows_quarantined": 5, "reasons": {"duplicate": 5}},
        },
    ]
    limits = quality.Thresholds(max_quarantine_rate=0.4, max_reason_rate={"duplicate": 0.6})
    assert [r.run_id for r in quality.history(docs, limits)] == ["a", "c"]
    [c] = quality.history(docs, limits, since=dt.date(2024, 2, 1))
    assert [b.threshold for b in c.breaches] == ["quarantine_rate"]  # 50 % > 40 %; 50 % < 60 %
    t = quality.trend(quality.history(docs, limits))
    assert t["direction"] == "worse" and t["marked"] == 1 and t["last"]["quarantine_rate"] == 0.5


def test_quality_command_prints_the_table_and_the_trend(home: Path) -> None:
    code, output = sb(home, "quality", **STRICT)
    assert code == 0, output
    assert "trend: 3 runs: quarantine rate 0.00% ->" in output
    assert "(worse)" in output and "2 marked" in output
    # The table wraps its cells at the runner's 80 columns: look for the words.
    assert output.count("reason:unparseable") == 2 and "weekend_date 18" in output
    tomorrow = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)).isoformat()
    code, output = sb(home, "quality", "--since", tomorrow)
    assert code == 0 and "no run counted rows since" in output
    code, output = sb(home, "quality", "--since", "30-11-2017")
    assert code == 2 and "--since must be a date" in output


def test_quality_json(home: Path) -> None:
    today = dt.datetime.now(dt.UTC).date().isoformat()
    code, output = sb(home, "quality", "--since", today, "--json", **STRICT)
    assert code == 0, output
    doc = json.loads(output)
    assert doc["since"] == today
    assert doc["thresholds"]["max_reason_rate"] == {"unparseable": 0.001}
    assert [r["marked"] for r in doc["runs"]] == [False, True, True]
    bad = doc["runs"][1]
    assert bad["breaches"][0]["threshold"] == "reason:unparseable"
    assert bad["reason_rates"]["unparseable"] == pytest.approx(3 / bad["rows_in"], abs=1e-6)
    assert doc["trend"]["runs"] == 3 and doc["trend"]["marked"] == 2


def test_the_airflow_gate_uses_the_same_limit(home: Path, tmp_path: Path) -> None:
    """The gate task called directly (no Airflow): the quarantine limit is the history's."""
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    run_id = quality.lake_history(Settings(home=copy))[1].run_id
    strict = Settings(home=copy)
    strict.schedule.max_quarantine_rate = 0.0
    with pytest.raises(tasks.GateFailed, match="quality gate: quarantine rate"):
        tasks.quality_gate(strict, run_id, "stockbatch_daily", dt.date(2017, 1, 10))
    lenient = Settings(home=copy)
    lenient.schedule.max_quarantine_rate = 0.0
    lenient.quality.max_quarantine_rate = 0.5  # the history's limit, set, is the gate's too
    facts = tasks.quality_gate(lenient, run_id, "stockbatch_daily", dt.date(2017, 1, 10))
    assert facts["max_quarantine_rate"] == 0.5 and facts["status"] == "succeeded"
    assert facts["quality_marks"] == []
