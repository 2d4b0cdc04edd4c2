"""Incremental processing == full rebuild, over a sequence of daily appends, a new
symbol, a duplicate line, a future-dated row that a later as-of date makes valid,
one late correction (issue 4), appends into a bucket a late correction rebuilt
and after a full rebuild that followed updates (stale tail parts), and rows
whose open is 0 (contract v2: not recorded, appended like any clean row).

The demo Kaggle files are cut back by HOLD lines; each "day" appends the next
lines to every file (the way a re-downloaded dataset grows), then ``process``
runs incrementally. After every step the lake is copied and rebuilt in full with
the same engine; silver, quarantine, gold daily and quarterly must agree (values
within the FEATURES.md tolerance), and so must the counts, the source choice and
the dataset's last date.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from stockbatch import pipeline
from stockbatch.results import IngestResult, ProcessResult
from stockbatch.settings import Settings
from stockbatch.sources.kaggle import KaggleSource
from stockbatch.sources.versions import SAMPLE_BYTES, sample_ranges
from support.lake_compare import PROVENANCE_ONLY, assert_lakes_equal, process_state

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo" / "kaggle"
HOLD = 15  # lines held back per file: 5 days of 3 lines; crosses the 2023-Q1 end
AS_OF = dt.date(2023, 6, 30)
QUARTER_END = b"2023-03-31"  # the quarter end the daily appends cross


@dataclass
class Lake:
    """A lake grown step by step from a working copy of the demo files."""

    data: Path
    settings: Settings
    work: Path
    held: dict[Path, list[bytes]]
    engine: str
    late: dict[Path, list[bytes]]
    """Short files held back whole: their rows land with :meth:`append_late`."""

    def ingest(self) -> IngestResult:
        return pipeline.ingest(self.settings, KaggleSource(self.data))

    def step(self, as_of: dt.date = AS_OF) -> ProcessResult:
        self.ingest()
        return pipeline.process(self.settings, as_of=as_of)

    def full_copy(self, as_of: dt.date = AS_OF) -> Settings:
        """The same lake rebuilt in full (a copy; the original is untouched)."""
        ref = self.work / f"full-{dt.datetime.now().timestamp()}"
        shutil.copytree(self.settings.lake_path, ref / "lake")
        settings = self.settings.model_copy(update={"home": ref})
        pipeline.process(settings, as_of=as_of, full=True)
        return settings

    def append_day(self, day: int, lines: int = 3, part: slice = slice(None)) -> None:
        for path, held in self.held.items():
            take = held[lines * day : lines * (day + 1)][part]
            if take:
                with path.open("ab") as fh:
                    fh.write(b"\n".join(take) + b"\n")

    def append_late(self) -> None:
        for path, rows in self.late.items():
            with path.open("ab") as fh:
                fh.write(b"\n".join(rows) + b"\n")


def make_lake(tmp: Path, engine: str) -> Lake:
    data = tmp / "data"
    shutil.copytree(DEMO, data)
    held: dict[Path, list[bytes]] = {}
    late: dict[Path, list[bytes]] = {}
    for path in sorted(p for p in data.rglob("*") if p.is_file()):
        if path.name == "symbols_valid_meta.csv":
            continue
        lines = path.read_bytes().split(b"\n")
        if lines and lines[-1] == b"":
            lines = lines[:-1]
        if len(lines) > HOLD + 2:
            held[path] = lines[-HOLD:]
            path.write_bytes(b"\n".join(lines[:-HOLD]) + b"\n")
        elif len(lines) > 1 and lines[-1][:10] > QUARTER_END:
            # A short file with rows after 2023-03-31 (CPAAW: one row, 2023-04-13, open 0,
            # clean since contract v2) would date the dataset past the quarter end from
            # the first run: it lands whole, later (a new symbol appended from nothing).
            late[path] = lines[1:]
            path.write_bytes(lines[0] + b"\n")
    settings = Settings(home=tmp / "home", progress=False)
    settings.process.engine = engine  # type: ignore[assignment]
    return Lake(data=data, settings=settings, work=tmp, held=held, engine=engine, late=late)


def assert_same_as_full(lake: Lake, as_of: dt.date = AS_OF) -> None:
    full = lake.full_copy(as_of)
    assert_lakes_equal(lake.settings.lake_path, full.lake_path, ignore=PROVENANCE_ONLY)
    inc, ref = process_state(lake.settings.lake_path), process_state(full.lake_path)
    assert inc["counts"] == ref["counts"]
    assert inc["winners"] == ref["winners"]
    assert inc["dataset_last_date"] == ref["dataset_last_date"]
    assert inc["quarterly_rows"] == ref["quarterly_rows"]
    assert inc["daily_rows"] == ref["daily_rows"]


@pytest.fixture(
    scope="module",
    params=["polars", pytest.param("spark", marks=[pytest.mark.spark, pytest.mark.slow])],
)
def grown(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lake]:
    """The growing lake, once per engine (Spark: the same sequence, fewer days)."""
    engine = request.param
    if engine == "spark":
        request.getfixturevalue("spark")  # one shared session (tests/conftest.py)
    lake = make_lake(tmp_path_factory.mktemp(f"inc-{engine}"), engine)
    first = lake.step()
    assert first.recomputed["mode"] == "full"
    yield lake


def test_daily_appends_equal_full_rebuild(grown: Lake) -> None:
    lake = grown
    crossed = False
    for day in range(3 if lake.engine == "polars" else 2):
        if day == 1:
            # Two landings before one process: each lands only its appended lines, and
            # the update reads both (a chain of two appends).
            lake.append_day(day, part=slice(0, 2))
            landed = lake.ingest()
            assert landed.rows == 2 * len(lake.held), "only the appended lines are landed"
            # ...read alone: the history of each file is only sampled (issue 15).
            assert {u["read"] for u in landed.units} == {"tail"}
            assert sum(u["bytes_read"] for u in landed.units) < 2 * SAMPLE_BYTES * len(lake.held)
            lake.append_day(day, part=slice(2, 3))
        else:
            lake.append_day(day)
        res = lake.step()
        r = res.recomputed
        assert r["mode"] == "incremental", r
        assert r["rebuilt_buckets"] == [], r
        assert r["new_rows"] == 3 * len(lake.held)  # only the appended lines are read
        assert r["daily_rows_computed"] == r["new_rows"]  # all clean: one daily row each
        crossed = crossed or r["quarters_recomputed_from"] is not None
        assert_same_as_full(lake)
    assert crossed, "the sequence should cross a quarter end (2023-03-31)"


def test_new_symbol_and_duplicate_line_equal_full(grown: Lake) -> None:
    lake = grown
    lake.append_day(2 if lake.engine == "spark" else 3)
    # A new symbol (never seen): appended from nothing, no bucket rebuild.
    (lake.data / "huge" / "newco.us.txt").write_text(
        "Date,Open,High,Low,Close,Volume,OpenInt\n"
        "2017-11-01,10,11,9.5,10.5,1000,0\n"
        "2017-11-02,10.5,10.9,10.1,10.2,0,0\n"
        "2017-11-02,10.5,10.9,10.1,10.2,0,0\n"  # identical twin: deduplicated
        "2017-11-03,10.2,60,10.1,59,500,0\n"  # a x5 jump: kept, flagged
    )
    res = lake.step()
    r = res.recomputed
    assert r["mode"] == "incremental" and r["rebuilt_buckets"] == [], r
    assert res.counts["rows_deduplicated"] >= 1
    assert_same_as_full(lake)


def test_future_row_becomes_valid_with_later_as_of(grown: Lake) -> None:
    lake = grown
    lake.append_day(4)
    lake.append_late()
    (lake.data / "huge" / "later.us.txt").write_text(
        "Date,Open,High,Low,Close,Volume,OpenInt\n"
        "2023-06-29,10,11,9.5,10.5,1000,0\n"
        "2023-07-03,10.5,10.9,10.1,10.2,100,0\n"  # after AS_OF: future_date for now
    )
    res = lake.step()
    assert res.counts["reasons"]["future_date"] >= 1
    assert_same_as_full(lake)
    later = AS_OF + dt.timedelta(days=5)
    res = lake.step(as_of=later)
    r = res.recomputed
    assert r["mode"] == "incremental" and r["rebuilt_buckets"], r  # its bucket revalidated
    assert_same_as_full(lake, later)


def test_late_correction_rebuilds_only_its_bucket(grown: Lake) -> None:
    lake = grown
    path = lake.data / "huge" / "adm.us.txt"
    lines = path.read_bytes().split(b"\n")
    fields = lines[100].split(b",")
    close = float(fields[4]) * 1.01
    fields[4] = b"%.4f" % close
    fields[2] = b"%.4f" % max(float(fields[2]), close)
    lines[100] = b",".join(fields)
    path.write_bytes(b"\n".join(lines))
    as_of = AS_OF + dt.timedelta(days=5)
    res = lake.step(as_of=as_of)
    r = res.recomputed
    assert r["mode"] == "incremental", r
    assert len(r["rebuilt_buckets"]) == 1 and r["new_rows"] == 0, r
    assert_same_as_full(lake, as_of)


ADM_NEW = [
    # HAND-MADE rows (not market data) appended after ADM's last real row (2017-11-10).
    b"2017-11-13,39.9,40.1,39.5,39.8,1000000,0",
    b"2017-11-14,0,40.2,39.6,40.0,900000,0",  # open 0: not recorded (contract v2)
    b"2017-11-15,40.0,40.4,39.9,40.3,800000,0",
    b"2017-11-16,0,40.5,40.1,40.2,700000,0",
]


def append_adm(lake: Lake, lines: list[bytes]) -> None:
    with (lake.data / "huge" / "adm.us.txt").open("ab") as fh:
        fh.write(b"\n" + b"\n".join(lines) + b"\n")


def test_append_after_a_rebuild_equals_full(grown: Lake) -> None:
    """ADM's bucket was rebuilt by the late correction above; its tail folder held parts of
    the earlier appends. Appending to it again must read the rebuilt tail only."""
    lake = grown
    as_of = AS_OF + dt.timedelta(days=5)
    before = process_state(lake.settings.lake_path)["counts"]["health"]["open_missing"]
    append_adm(lake, ADM_NEW[:2])
    res = lake.step(as_of=as_of)
    r = res.recomputed
    assert r["mode"] == "incremental" and r["rebuilt_buckets"] == [], r
    assert r["new_rows"] == 2 and r["daily_rows_computed"] == 2, r  # the zero open is clean
    assert res.counts["health"]["open_missing"] == before + 1
    assert_same_as_full(lake, as_of)


def test_append_after_a_full_rebuild_that_followed_updates_equals_full(grown: Lake) -> None:
    lake = grown
    as_of = AS_OF + dt.timedelta(days=5)
    tails = lake.settings.lake_path / "_state" / "tail"
    assert any(len(list(b.glob("*.parquet"))) > 1 for b in tails.iterdir()), (
        "the updates should have left appended tail parts"
    )
    pipeline.process(lake.settings, as_of=as_of, full=True)
    assert all(len(list(b.glob("*.parquet"))) == 1 for b in tails.iterdir())
    append_adm(lake, ADM_NEW[2:])
    res = lake.step(as_of=as_of)
    r = res.recomputed
    assert r["mode"] == "incremental" and r["rebuilt_buckets"] == [], r
    assert r["new_rows"] == 2 and r["daily_rows_computed"] == 2, r
    assert_same_as_full(lake, as_of)


def test_rerun_without_new_data_skips(grown: Lake) -> None:
    lake = grown
    res = lake.step(as_of=AS_OF + dt.timedelta(days=5))
    assert res.skipped


def test_tampered_lake_falls_back_to_full(tmp_path: Path) -> None:
    lake = make_lake(tmp_path, "polars")
    lake.step()
    gold = next((lake.settings.lake_path / "gold" / "daily_features").rglob("*.parquet"))
    gold.write_bytes(gold.read_bytes())  # same bytes, new mtime: the state cannot vouch
    lake.append_day(0)
    res = lake.step()
    assert res.recomputed["mode"] == "full"
    assert "changed" in res.recomputed["reason"]


def test_feature_set_version_change_rebuilds_in_full_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stockbatch import schema

    lake = make_lake(tmp_path, "polars")
    monkeypatch.setattr(schema, "FEATURE_SET_VERSION", 1)  # a lake built under contract v1
    lake.step()
    monkeypatch.undo()
    state_path = lake.settings.lake_path / "gold" / "_state.json"
    state = json.loads(state_path.read_text())
    assert state["feature_set_version"] == 1
    del state["feature_set_version"]  # states written before v2 do not have the key
    state_path.write_text(json.dumps(state))
    res = lake.step()
    assert not res.skipped  # the process fingerprint holds the version
    assert res.recomputed["mode"] == "full"
    assert res.recomputed["reason"] == "feature set version 1 -> 2"
    assert process_state(lake.settings.lake_path)["feature_set_version"] == 2


OLD_ROWS = (
    # HAND-MADE rows (not market data): typos before 1885 are quarantined; 1885 and the
    # years before 1962 (the old calendar start) are clean and the calendar covers them.
    "Date,Open,High,Low,Close,Volume,OpenInt\n"
    "1800-01-02,5,5.2,4.9,5.1,100,0\n"
    "1884-12-31,5,5.2,4.9,5.1,100,0\n"
    "1885-01-02,5,5.2,4.9,5.1,100,0\n"
    "1961-12-27,5,5.2,4.9,5.1,100,0\n"
    "1961-12-28,0,5.3,5.0,5.2,100,0\n"
    "1961-12-29,5.2,5.4,5.1,5.3,100,0\n"
    "1962-01-02,5.3,5.5,5.2,5.4,100,0\n"
    "1963-01-02,5.4,5.6,5.3,5.5,100,0\n"
)


@pytest.mark.parametrize(
    "engine", ["polars", pytest.param("spark", marks=[pytest.mark.spark, pytest.mark.slow])]
)
def test_old_dates_never_stop_a_run(
    request: pytest.FixtureRequest, tmp_path: Path, engine: str
) -> None:
    if engine == "spark":
        request.getfixturevalue("spark")
    data = tmp_path / "data"
    (data / "huge").mkdir(parents=True)
    path = data / "huge" / "old.us.txt"
    path.write_text(OLD_ROWS)
    settings = Settings(home=tmp_path / "home", progress=False)
    settings.process.engine = engine  # type: ignore[assignment]
    lake = Lake(data=data, settings=settings, work=tmp_path, held={}, engine=engine, late={})
    res = lake.step()
    assert res.recomputed["mode"] == "full"
    assert res.counts["reasons"]["date_out_of_range"] == 2
    assert (res.counts["rows_clean"], res.counts["health"]["open_missing"]) == (6, 1)
    q = pl.read_parquet(settings.lake_path / "gold" / "quarterly_features")
    assert q["quarter"].to_list() == ["1885Q1", "1961Q4", "1962Q1", "1963Q1"]
    assert q["available_at"].to_list()[:2] == [dt.date(1885, 4, 1), dt.date(1962, 1, 2)]
    # a zero open appended to it: like any clean row, and equal to a full rebuild
    with path.open("a") as fh:
        fh.write("1963-01-03,0,5.7,5.4,5.6,100,0\n")
    res = lake.step()
    assert res.recomputed["mode"] == "incremental" and res.recomputed["new_rows"] == 1
    assert res.counts["health"]["open_missing"] == 2
    assert_same_as_full(lake)


def test_verify_catches_a_same_size_edit_then_equals_full(grown: Lake) -> None:
    """A price edited in place (same size, mtime kept) where sampling does not look:
    the cheap ingest skips the file (the documented limit); ``verify`` re-lands it
    whole and the update equals a full rebuild."""
    lake = grown
    path = lake.data / "nasdaq" / "stocks" / "AON.csv"
    data = path.read_bytes()
    st = path.stat()
    covered = {i for o, n in sample_ranges(len(data)) for i in range(o, o + n)}
    mid = data.index(b"\n", len(data) // 2) + 1
    comma = data.index(b",", mid)  # past the date: a digit of the open price
    at = next(
        i for i in range(comma + 1, len(data)) if i not in covered and data[i : i + 1] == b"1"
    )
    path.write_bytes(data[:at] + b"2" + data[at + 1 :])
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert lake.ingest().units_ingested == 0
    landed = pipeline.ingest(lake.settings, KaggleSource(lake.data), verify=True)
    assert [(u["ref"], u["read"]) for u in landed.units] == [("nasdaq/stocks/AON.csv", "whole")]
    as_of = AS_OF + dt.timedelta(days=6)
    res = pipeline.process(lake.settings, as_of=as_of)
    assert res.recomputed["mode"] == "incremental", res.recomputed
    assert len(res.recomputed["rebuilt_buckets"]) == 1, res.recomputed
    assert_same_as_full(lake, as_of)
