"""Quarterly snapshots (stockbatch.snapshots) on the demo data run through the real pipeline:
the rows of `export quarterly`, byte-identical reruns, new versions beside old ones,
closed-quarter checks, the `latest` pointer and the CLI."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from stockbatch import export, snapshots
from stockbatch.cli import app
from stockbatch.errors import PipelineError
from stockbatch.settings import Settings

QUARTER = "2017Q4"
runner = CliRunner()


def sb(home: Path, *args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args), env={"STOCKBATCH_HOME": str(home)})
    return res.exit_code, res.output


def run_pipeline(home: Path, data: Path) -> None:
    code, output = sb(home, "run", "--source", "kaggle", "--path", str(data),
                      "--as-of", "2023-06-30", "-q")  # fmt: skip
    assert code == 0, output


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_rows(home: Path, tmp: Path, quarter: str) -> pl.DataFrame:
    """`stockbatch export quarterly`, filtered to one quarter (the independent reference)."""
    out = tmp / f"export-{quarter}.parquet"
    code, output = sb(home, "export", "quarterly", "--out", str(out))
    assert code == 0, output
    return pl.read_parquet(out).filter(pl.col("quarter") == quarter)


def files_of(home: Path) -> dict[str, str]:
    root = home / "exports"
    return {str(p.relative_to(root)): sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Path:
    """A home with the demo pipeline run (changes are made on copies)."""
    home = tmp_path_factory.mktemp("snap") / "home"
    run_pipeline(home, demo_data)
    return home


@pytest.fixture(scope="module")
def first(home: Path) -> snapshots.Snapshot:
    return snapshots.write_snapshot(Settings(home=home), QUARTER, run_id="v1-first")


def test_snapshot_is_the_export_of_the_quarter(
    home: Path, first: snapshots.Snapshot, tmp_path: Path
) -> None:
    assert first.new and first.latest and first.version == "v1-first"
    assert first.path == home / "exports" / "quarterly" / QUARTER / "v1-first.parquet"
    snap = pl.read_parquet(first.path)
    expected = export_rows(home, tmp_path, QUARTER)
    assert snap.height == expected.height == first.rows > 0
    assert snap.equals(expected)  # same rows, values, types and order (symbol)
    assert snap["symbol"].is_sorted()

    doc = json.loads(first.manifest_path.read_text())
    assert doc["sha256"] == sha(first.path) == first.sha256
    assert doc["bytes"] == first.path.stat().st_size
    assert doc["rows"] == snap.height and doc["quarter"] == QUARTER
    assert [c["name"] for c in doc["columns"]] == snap.columns
    assert doc["feature_set_version"] == 2
    state = json.loads((home / "lake" / "gold" / "_state.json").read_text())
    assert doc["process_run_id"] == state["run_id"]
    assert doc["source_run_ids"][0] == state["run_id"]
    assert doc["code_version"] and doc["created_at"] and doc["previous_version"] is None
    pointer = json.loads((first.path.parent / "latest.json").read_text())
    assert pointer["version"] == "v1-first" and pointer["sha256"] == first.sha256


def test_rerun_with_unchanged_data_is_the_same_version(
    home: Path, first: snapshots.Snapshot, demo_data: Path
) -> None:
    s = Settings(home=home)
    before = files_of(home)
    mtime = first.path.stat().st_mtime_ns
    again = snapshots.write_snapshot(s, QUARTER, run_id="v2-again")
    assert (again.version, again.sha256, again.new) == ("v1-first", first.sha256, False)
    # The pipeline run again on the same data: still nothing new.
    run_pipeline(home, demo_data)
    third = snapshots.write_snapshot(s, QUARTER, run_id="v3-after-rerun")
    assert third.version == "v1-first" and not third.new
    assert files_of(home) == before
    assert first.path.stat().st_mtime_ns == mtime
    assert not (first.path.parent / "v2-again.parquet").exists()
    # Byte-identical: the bytes built from the warehouse now are the file's.
    table = export.quarterly_rows(s, quarters=[QUARTER])
    assert snapshots.parquet_bytes(table, QUARTER) == first.path.read_bytes()


def test_changed_data_writes_a_new_version_beside_the_old(
    home: Path, first: snapshots.Snapshot, demo_data: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    acn = data / "huge" / "acn.us.txt"
    text = acn.read_text()
    row = "2017-11-08,143.76,145,143,144.89,1208312,0"
    assert row in text
    acn.write_text(text.replace(row, "2017-11-08,143.76,145,143,144.5,1208312,0"))
    run_pipeline(copy, data)

    s = Settings(home=copy)
    old_path = copy / "exports" / "quarterly" / QUARTER / "v1-first.parquet"
    new = snapshots.write_snapshot(s, QUARTER, run_id="v4-changed", source_run_ids=["dag-run-1"])
    assert new.new and new.version == "v4-changed" and new.sha256 != first.sha256
    assert new.path.parent == old_path.parent
    assert sha(old_path) == first.sha256  # the old version is untouched
    assert pl.read_parquet(new.path).equals(export_rows(copy, tmp_path, QUARTER))
    pointer = json.loads((new.path.parent / "latest.json").read_text())
    assert pointer["version"] == "v4-changed" and pointer["sha256"] == new.sha256
    doc = new.manifest
    assert doc["previous_version"] == "v1-first"
    state = json.loads((copy / "lake" / "gold" / "_state.json").read_text())
    assert doc["source_run_ids"][0] == state["run_id"] != first.manifest["process_run_id"]
    assert doc["source_run_ids"][-1] == "dag-run-1"
    listed = snapshots.list_snapshots(s, QUARTER)
    assert [(x.version, x.latest) for x in listed] == [("v1-first", False), ("v4-changed", True)]
    latest = snapshots.latest_snapshot(s, QUARTER)
    assert latest is not None and latest.version == "v4-changed"
    # The original home is untouched by the copy's new version.
    assert not (home / "exports" / "quarterly" / QUARTER / "v4-changed.parquet").exists()


def test_a_quarter_not_closed_is_refused_with_a_reason(home: Path, tmp_path: Path) -> None:
    s = Settings(home=home)
    # The demo data ends on 2023-04-14: 2023Q2 has ended (today) but is not covered.
    ready = snapshots.quarter_closed(s, "2023Q2")
    assert not ready and ready.last_session == dt.date(2023, 6, 30)
    assert ready.dataset_last_date == dt.date(2023, 4, 14)
    assert "2023-04-14" in ready.reason and "stockbatch run" in ready.reason
    with pytest.raises(snapshots.SnapshotNotReady, match="not covered"):
        snapshots.write_snapshot(s, "2023Q2", run_id="never")
    assert not (home / "exports" / "quarterly" / "2023Q2").exists()
    # Covered, but not ended on that day.
    early = snapshots.quarter_closed(s, QUARTER, today=dt.date(2017, 12, 31))
    assert not early and "has not ended" in early.reason
    assert snapshots.quarter_closed(s, QUARTER, today=dt.date(2018, 1, 1))
    # The last session of 2017Q4 was Friday 2017-12-29 (XNYS).
    assert snapshots.quarter_closed(s, QUARTER).last_session == dt.date(2017, 12, 29)
    # A home without gold.
    empty = snapshots.quarter_closed(Settings(home=tmp_path / "empty"), QUARTER)
    assert not empty and "no gold data" in empty.reason and "stockbatch run" in empty.reason
    with pytest.raises(ValueError, match="2017Q4"):
        snapshots.quarter_closed(s, "2017-Q4")


def test_warehouse_behind_gold_is_not_ready(home: Path, tmp_path: Path) -> None:
    copy = tmp_path / "home"
    shutil.copytree(home, copy)  # _loaded.json names the other home's warehouse
    ready = snapshots.quarter_closed(Settings(home=copy), QUARTER)
    assert not ready and "stockbatch load" in ready.reason


def test_a_version_is_never_replaced(home: Path, first: snapshots.Snapshot) -> None:
    s = Settings(home=home)
    # Other content (the point-in-time table) under an existing version id: refused.
    with pytest.raises(PipelineError, match="never replaced"):
        snapshots.write_snapshot(s, QUARTER, run_id="v1-first", as_of=dt.date(2018, 1, 2))
    assert sha(first.path) == first.sha256
    latest = snapshots.latest_snapshot(s, QUARTER)
    assert latest is not None and latest.version == "v1-first"


def test_retry_after_a_crash_completes_the_version(home: Path) -> None:
    """A crash after the file was linked, before its manifest: the retry finishes it."""
    s = Settings(home=home)
    quarter = "2020Q1"
    folder = snapshots.quarter_dir(s, quarter)
    data = snapshots.parquet_bytes(export.quarterly_rows(s, quarters=[quarter]), quarter)
    snapshots._create_once(folder / "crashed.parquet", data)
    snap = snapshots.write_snapshot(s, quarter, run_id="crashed")
    assert snap.new and snap.version == "crashed" and snap.sha256 == sha(snap.path)
    latest = snapshots.latest_snapshot(s, quarter)
    assert latest is not None and (latest.version, latest.sha256) == ("crashed", snap.sha256)
    assert json.loads(snap.manifest_path.read_text())["sha256"] == snap.sha256


def test_files_are_whole_read_only_and_no_temp_files_remain(
    home: Path, first: snapshots.Snapshot
) -> None:
    s = Settings(home=home)
    root = snapshots.quarterly_root(s)
    assert not [p for p in root.rglob(".tmp-*")]
    for snap in snapshots.list_snapshots(s):
        snapshots.verify_snapshot(snap)
        assert snap.path.stat().st_mode & 0o222 == 0
        assert snap.manifest_path.stat().st_mode & 0o222 == 0
        pointer = json.loads((snap.path.parent / "latest.json").read_text())
        assert (snap.path.parent / pointer["file"]).exists()


def test_cli_snapshot_and_listing(home: Path, first: snapshots.Snapshot) -> None:
    code, output = sb(home, "export", "snapshot", "--quarter", "2017q4")
    assert code == 0, output
    assert "unchanged" in output and "v1-first" in output and "nothing written" in output
    code, output = sb(home, "export", "snapshot", "--quarter", "2023Q2")
    assert code == 1 and "not covered" in output and "stockbatch run" in output
    code, output = sb(home, "export", "snapshot", "--quarter", "2023Q5")
    assert code == 2 and "like 2017Q4" in output
    code, output = sb(home, "export", "snapshot", "--quarter", "2019Q3", "--run-id", "cli-1")
    assert code == 0 and "written" in output and "cli-1" in output
    code, output = sb(home, "export", "snapshots", "--json")
    assert code == 0, output
    listed = {(r["quarter"], r["version"]): r for r in json.loads(output)}
    assert listed[("2019Q3", "cli-1")]["latest"]
    assert listed[(QUARTER, "v1-first")]["sha256"] == first.sha256
    code, output = sb(home, "export", "snapshots")
    assert code == 0 and "2019Q3" in output and "latest" in output
