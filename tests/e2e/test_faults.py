"""Faults a user or the machine can cause (issue 11: cases 4, 5, 6, 9, 10), with real
processes and signals: passwords never recorded, crash logs kept private, one run at a
time per home, killed runs recorded as interrupted and their leftovers removed, clear
errors for a full disk, a damaged warehouse, a bad manifest and an impossible as-of."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stockbatch import runs
from stockbatch.cli import app
from stockbatch.lake import bronze
from stockbatch.settings import Settings

AS_OF = "2023-06-30"
SECRET = "S3cret-pa55"


def sb(
    home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "stockbatch.cli", *args],
        env={**os.environ, "STOCKBATCH_HOME": str(home), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start(home: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "stockbatch.cli", *args],
        env={**os.environ, "STOCKBATCH_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def demo_run_args(demo_data: Path) -> list[str]:
    return ["run", "--source", "kaggle", "--path", str(demo_data), "--as-of", AS_OF, "-q"]


def manifests(home: Path) -> list[dict[str, object]]:
    return list(runs.iter_manifests(Settings(home=home)))


# ----------------------------------------------------------------------------- 4. secrets


def test_passwords_in_urls_are_never_recorded_or_printed(tmp_path: Path, demo_data: Path) -> None:
    home = tmp_path / "home"
    env = {
        "STOCKBATCH_WAREHOUSE__KIND": "postgresql",
        # Port 9 on loopback: nothing listens, the load fails fast, after ingest/process.
        "STOCKBATCH_WAREHOUSE__URL": f"postgresql+psycopg://loader:{SECRET}@127.0.0.1:9/wh",
        "STOCKBATCH_WAREHOUSE__OWNER_URL": f"postgresql+psycopg://owner:{SECRET}@127.0.0.1:9/wh",
        "STOCKBATCH_WAREHOUSE__READER_URL": f"postgresql://reader:{SECRET}@127.0.0.1:9/wh",
        "STOCKBATCH_SEARCH__URL": f"http://admin:{SECRET}@127.0.0.1:9",
    }
    outputs = [sb(home, *demo_run_args(demo_data), env=env, timeout=120)]
    assert outputs[0].returncode == 1, outputs[0].stdout + outputs[0].stderr
    outputs.append(sb(home, "runs", "--json", env=env))
    recorded = [
        p.read_text() for p in home.rglob("*") if p.is_file() and p.suffix in (".json", ".log")
    ]
    assert recorded, "the failed run recorded nothing"
    for text in [o.stdout + o.stderr for o in outputs] + recorded:
        assert SECRET not in text
    doc = manifests(home)[-1]
    assert doc["status"] == "failed"
    assert "loader:***@127.0.0.1" in json.dumps(doc["settings"])


# ----------------------------------------------------------------------------- 5. crash log


def test_an_internal_error_is_logged_privately_in_the_home(
    tmp_path: Path, demo_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    from stockbatch import pipeline

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"unexpected state (password={SECRET})")

    monkeypatch.setattr(pipeline, "run", boom)
    before = set(Path("/tmp").glob("stockbatch-error-*"))
    res = CliRunner().invoke(app, [*demo_run_args(demo_data), "--home", str(home)])
    assert res.exit_code == 1
    assert "internal error" in res.output and SECRET not in res.output
    [log] = list((home / "logs").glob("error-*.log"))
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    assert "RuntimeError" in log.read_text() and SECRET not in log.read_text()
    assert set(Path("/tmp").glob("stockbatch-error-*")) == before


# ----------------------------------------------------------------------------- 6. one run per home


def test_a_second_run_waits_or_with_no_wait_exits_4(tmp_path: Path, demo_data: Path) -> None:
    home, log = tmp_path / "home", tmp_path / "waiting.err"
    settings = Settings(home=home)
    with runs.home_lock(settings, "test holder"):  # a real flock held by this process
        busy = sb(home, *demo_run_args(demo_data), "--no-wait", timeout=60)
        assert busy.returncode == runs.EXIT_BUSY, busy.stdout + busy.stderr
        assert "stockbatch test holder" in busy.stderr and "--no-wait" in busy.stderr
        with log.open("w") as err:
            waiting = subprocess.Popen(
                [sys.executable, "-m", "stockbatch.cli", *demo_run_args(demo_data)],
                env={**os.environ, "STOCKBATCH_HOME": str(home)},
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        deadline = time.monotonic() + 120
        while "waiting for it to finish" not in log.read_text() and time.monotonic() < deadline:
            assert waiting.poll() is None, log.read_text()
            time.sleep(0.1)
        assert "waiting for it to finish" in log.read_text()
        time.sleep(1)
        assert waiting.poll() is None, "the second run did not wait"
        assert not (home / "lake" / "bronze").exists()  # it has not started any work
    assert waiting.wait(timeout=300) == 0, log.read_text()
    assert [d["status"] for d in manifests(home)] == ["succeeded"]


def test_two_runs_started_together_land_the_data_once(tmp_path: Path, demo_data: Path) -> None:
    home = tmp_path / "home"
    procs = [start(home, *demo_run_args(demo_data)) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    docs = [d for d in manifests(home) if d["command"] == "run"]
    assert [d["status"] for d in docs] == ["succeeded", "succeeded"]
    landed = sorted(d["ingest"]["rows"] for d in docs)  # type: ignore[index]
    assert landed[0] == 0 and landed[1] > 0  # the second found everything landed already
    batches = list((home / "lake" / "bronze" / "bars").iterdir())
    assert len(batches) == 1
    for d in docs:
        c = d["counts"]
        assert c["rows_in"] == c["rows_clean"] + c["rows_quarantined"] + c["rows_deduplicated"]  # type: ignore[index]


# ----------------------------------------------------------------------------- 10. kill -9


def _lake_files(home: Path) -> dict[str, bytes]:
    gold = home / "lake" / "gold"
    return {str(p.relative_to(gold)): p.read_bytes() for p in sorted(gold.rglob("*.parquet"))}


def _wait_for_manifest(home: Path) -> float:
    """Wait until a run has written its manifest; return when (monotonic)."""
    deadline = time.monotonic() + 60
    while not list((home / "lake" / "runs").glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    return time.monotonic()


@pytest.mark.parametrize("fraction", [0.15, 0.6])
def test_a_killed_run_is_recorded_as_interrupted_and_cleaned_up(
    tmp_path: Path, demo_data: Path, fraction: float
) -> None:
    home, clean = tmp_path / "home", tmp_path / "clean"
    # The clean run is needed for the comparison at the end; timing it first lets
    # the kill land at the same point of the run on a fast or a slow machine.
    reference = start(clean, *demo_run_args(demo_data))
    began = _wait_for_manifest(clean)
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, out + err
    run_s = time.monotonic() - began
    victim = start(home, *demo_run_args(demo_data))
    _wait_for_manifest(home)
    time.sleep(fraction * run_s)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    [killed] = [d for d in manifests(home) if d["command"] == "run"]
    if killed["status"] != "running":
        pytest.fail(f"the run ended before the kill ({killed['status']}, run took {run_s:.1f} s)")
    nxt = sb(home, *demo_run_args(demo_data))
    assert nxt.returncode == 0, nxt.stdout + nxt.stderr
    docs = {d["run_id"]: d for d in manifests(home)}
    assert docs[killed["run_id"]]["status"] == "interrupted"
    assert list(home.rglob(".tmp-*")) == []
    folders = {p.name.removeprefix("batch=") for p in (home / "lake" / "bronze" / "bars").iterdir()}
    catalogued = set(bronze.read_catalog(Settings(home=home))["batch"].to_list())
    assert folders <= catalogued  # no orphan landing left
    assert catalogued <= set(docs)  # and every landing names a run that has a manifest
    assert _lake_files(home) == _lake_files(clean)
    state = json.loads((home / "lake" / "gold" / "_state.json").read_text())
    assert state["run_id"] in docs  # exports name a run that has a manifest


# ----------------------------------------------------------------------------- 9. clear errors


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"cannot mount a small tmpfs for the disk-full test (needs root): {done.stderr}"
        )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_says_so_and_the_rerun_completes(small_disk: Path, demo_data: Path) -> None:
    full = sb(small_disk / "home", *demo_run_args(demo_data))
    assert full.returncode == 1, full.stdout + full.stderr
    assert "the disk is full" in full.stderr and "This is a bug" not in full.stderr
    subprocess.run(["mount", "-o", "remount,size=256m", str(small_disk)], check=True)
    again = sb(small_disk / "home", *demo_run_args(demo_data))
    assert again.returncode == 0, again.stdout + again.stderr
    c = manifests(small_disk / "home")[-1]["counts"]
    assert c["rows_in"] == c["rows_clean"] + c["rows_quarantined"] + c["rows_deduplicated"]  # type: ignore[index]


def test_a_damaged_warehouse_says_what_to_do(tmp_path: Path, demo_data: Path) -> None:
    home = tmp_path / "home"
    assert sb(home, *demo_run_args(demo_data)).returncode == 0
    db = home / "warehouse.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600  # the lake's rule
    for extra in home.glob("warehouse.db-*"):
        extra.unlink()
    db.write_bytes(b"this is not a database" * 1000)
    bad = sb(home, "load")
    assert bad.returncode == 1 and "damaged" in bad.stderr and "load --force" in bad.stderr
    assert "This is a bug" not in bad.stderr
    shutil.move(db, home / "warehouse.db.bad")
    assert sb(home, "load", "--force").returncode == 0
    assert sb(home, "export", "quarterly", "--out", str(tmp_path / "q.parquet")).returncode == 0


def test_a_bad_file_in_runs_is_skipped_with_a_warning(tmp_path: Path, demo_data: Path) -> None:
    home = tmp_path / "home"
    assert sb(home, *demo_run_args(demo_data)).returncode == 0
    (home / "lake" / "runs" / "zz-garbage.json").write_text("{not json")
    listed = sb(home, "runs")
    assert listed.returncode == 0, listed.stderr
    assert "zz-garbage.json" in listed.stderr and "Traceback" not in listed.stderr


@pytest.mark.parametrize("as_of", ["3000-01-01", "1700-01-01"])
def test_an_impossible_as_of_is_a_usage_error(tmp_path: Path, demo_data: Path, as_of: str) -> None:
    res = sb(tmp_path / "home", "run", "--path", str(demo_data), "--as-of", as_of, "-q")
    assert res.returncode == 2 and "--as-of must be between" in res.stderr
