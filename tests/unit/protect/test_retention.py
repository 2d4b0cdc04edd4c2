"""``stockbatch gc``: superseded bronze batches and unreferenced run manifests go; what the
current gold, the incremental state and the snapshots need stays."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from stockbatch.lake import bronze
from stockbatch.settings import Settings
from unit.protect.protect_support import (
    append_day,
    change_old_line,
    exports,
    files_of,
    landing_copy,
    last_run,
    ok,
    run,
    sb,
)


def _three_runs(home: Path, landing: Path) -> list[str]:
    """Run ids of: the first landing; ACN's next day (a delta batch holding ACN only);
    a corrected old ACN line (a new whole version, so the delta batch is superseded)."""
    ids = [str(run(home, landing)["run_id"])]
    append_day(landing, 0)
    ids.append(str(run(home, landing)["run_id"]))
    change_old_line(landing)
    ids.append(str(run(home, landing)["run_id"]))
    ok(home, "export", "snapshot", "--quarter", "2023Q1")
    return ids


@pytest.fixture
def homes(demo_data: Path, tmp_path: Path) -> tuple[Path, Path, Path, list[str]]:
    """(landing, home, control, run ids of home): two homes with the same three runs."""
    first, second = landing_copy(demo_data, tmp_path / "a"), landing_copy(demo_data, tmp_path / "b")
    home, control = tmp_path / "home", tmp_path / "control"
    ids = _three_runs(home, first)
    _three_runs(control, second)
    return first, home, control, ids


def test_gc_removes_superseded_batches_and_old_manifests_only(
    homes: tuple[Path, Path, Path, list[str]], tmp_path: Path
) -> None:
    landing, home, control, (first, delta, corrected) = homes
    lake = home / "lake"
    batches = lake / "bronze" / "bars"
    assert (batches / f"batch={delta}").is_dir()
    catalog = bronze.read_catalog(Settings(home=home))
    assert catalog.filter(pl.col("batch") == delta)["ref"].to_list() == ["huge/acn.us.txt"]

    before = {**files_of(home / "lake"), **files_of(home / "exports")}
    code, output = sb(home, "gc", "--keep-runs", "1", "--dry-run")
    assert code == 0, output
    assert f"would remove {batches / f'batch={delta}'}" in output
    assert f"would remove {lake / 'runs' / f'{delta}.json'}" in output
    assert "gc would remove 1 superseded bronze batches" in output
    assert "and 1 run manifests" in output
    assert {**files_of(lake), **files_of(home / "exports")} == before  # a dry run removes nothing

    code, output = sb(home, "gc", "--keep-runs", "1")
    assert code == 0, output
    assert "gc removed 1 superseded bronze batches" in output
    assert not (batches / f"batch={delta}").exists()
    assert not (lake / "runs" / f"{delta}.json").exists()
    # Kept: the partly active first batch and its run, the newest run (gold, state,
    # the warehouse load and the snapshot name it).
    assert (batches / f"batch={first}").is_dir() and (batches / f"batch={corrected}").is_dir()
    assert (lake / "runs" / f"{first}.json").exists()
    assert (lake / "runs" / f"{corrected}.json").exists()
    gone = {k for k in before if k not in {**files_of(lake), **files_of(home / "exports")}}
    assert gone and all(f"batch={delta}" in k or k == f"runs/{delta}.json" for k in gone)

    # Again: nothing left to remove.
    assert "gc removed 0 superseded bronze batches" in ok(home, "gc", "--keep-runs", "1")

    # Process (incremental) and the exports work as in the control home that kept everything.
    assert "unchanged" in ok(home, "export", "snapshot", "--quarter", "2023Q1")
    append_day(landing, 1)
    append_day(tmp_path / "b" / "landing", 1)
    got, want = run(home, landing), run(control, tmp_path / "b" / "landing")
    assert got["status"] == want["status"] == "succeeded"
    for key in ("rows_landed", "rows_in", "rows_clean", "rows_changed_in_warehouse"):
        assert got[key] == want[key], key
    modes = [
        json.loads((h / "lake" / "runs" / f"{r['run_id']}.json").read_text())["process"][
            "recomputed"
        ]["mode"]
        for h, r in ((home, got), (control, want))
    ]
    assert modes[0] == modes[1] != "full"
    got_x, want_x = exports(home, tmp_path / "g"), exports(control, tmp_path / "w")
    assert pl.read_parquet(got_x[0]).equals(pl.read_parquet(want_x[0]))
    assert got_x[1].equals(want_x[1])
    ok(home, "process", "--full", "-q")  # a full rebuild needs only what gc kept
    assert last_run(home)["rows_in"] == last_run(control)["rows_in"]


def test_gc_keeps_the_newest_runs_and_refuses_zero(
    homes: tuple[Path, Path, Path, list[str]],
) -> None:
    _, home, _, (_, delta, _) = homes
    before = files_of(home / "lake")
    output = ok(home, "gc", "--keep-runs", "3")
    assert "gc removed 0 superseded bronze batches" in output and "0 run manifests" in output
    assert files_of(home / "lake") == before
    assert (home / "lake" / "bronze" / "bars" / f"batch={delta}").is_dir()
    code, output = sb(home, "gc", "--keep-runs", "0")
    assert code == 2
    assert "Traceback" not in output
