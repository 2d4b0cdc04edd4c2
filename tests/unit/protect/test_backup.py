"""``stockbatch backup create|verify|restore`` on the demo sample (embedded SQLite warehouse)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import polars as pl
import pytest

from stockbatch import runs
from stockbatch.settings import Settings
from unit.protect.protect_support import (
    AS_OF,
    append_day,
    exports,
    files_of,
    landing_copy,
    last_run,
    ok,
    run,
    sb,
)


@pytest.fixture
def landing(demo_data: Path, tmp_path: Path) -> Path:
    return landing_copy(demo_data, tmp_path)


def _home_with_data(home: Path, landing: Path) -> None:
    """One run, one quarterly snapshot, and a services record holding secrets."""
    assert run(home, landing)["status"] == "succeeded"
    ok(home, "export", "snapshot", "--quarter", "2023Q1")
    (home / "services.json").write_text(
        json.dumps(
            {
                "postgresql": {
                    "owner_url": "postgresql+psycopg://owner:s3cretOwner@127.0.0.1:5433/sb",
                    "port": 5433,
                },
                "kafka": {"bootstrap_servers": "127.0.0.1:9092", "sasl_password": "s3cretKafka"},
            }
        )
    )


def test_backup_verify_restore_round_trip(landing: Path, tmp_path: Path) -> None:
    home, control = tmp_path / "home", tmp_path / "control"
    _home_with_data(home, landing)
    _home_with_data(control, landing)
    before = exports(home, tmp_path / "before")
    snaps = json.loads(ok(home, "export", "snapshots", "--json"))

    out = tmp_path / "bk"
    line = ok(home, "backup", "create", "--out", str(out), "-q")
    assert f"backup {out}:" in line and "sqlite warehouse dumped" in line
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "stockbatch.backup"
    assert manifest["newest_run_id"] == last_run(home)["run_id"]
    assert manifest["stockbatch_version"] and manifest["created_at"]
    assert manifest["warehouse"]["kind"] == "sqlite"
    wh = manifest["warehouse"]
    assert manifest["files"][wh["file"]]["sha256"] == wh["sha256"]
    names = set(manifest["files"])
    assert any(n.startswith("lake/bronze/bars/") for n in names)
    assert any(n.startswith("lake/runs/") for n in names)
    assert any(n.startswith("lake/_state/") for n in names)
    assert "lake/gold/_state.json" in names
    assert any(n.startswith("exports/quarterly/2023Q1/") for n in names)
    assert not any(n.endswith(".lock") for n in names)
    assert "home/audit/cli.jsonl" in names  # the CLI audit log, copied (it grows in place)
    # Same file system: the lake is hard-linked; only the logs are copied.
    assert manifest["hard_links"] > 0
    assert manifest["copies"] == len([n for n in names if n.startswith("home/")])
    services = (out / "services" / "services.json").read_text()
    assert "s3cret" not in services and "127.0.0.1:5433" in services

    assert "is intact" in ok(home, "backup", "verify", str(out), "-q")

    shutil.rmtree(home)  # the disaster
    restored = tmp_path / "restored"
    line = ok(restored, "backup", "restore", str(out), "-q")
    assert f"into {restored}" in line
    assert not (restored / "services.json").exists()  # secrets masked: nothing to restore
    audit = restored / "audit" / "cli.jsonl"
    assert audit.read_bytes().startswith((out / "home" / "audit" / "cli.jsonl").read_bytes())
    assert audit.stat().st_ino != (out / "home" / "audit" / "cli.jsonl").stat().st_ino
    after = exports(restored, tmp_path / "after")
    assert after[0] == before[0]  # the quarterly export, byte for byte
    assert after[1].equals(before[1])
    assert (
        json.loads(ok(restored, "export", "snapshots", "--json"))[0]["sha256"] == snaps[0]["sha256"]
    )
    assert "unchanged" in ok(restored, "export", "snapshot", "--quarter", "2023Q1")
    # The backup is still intact after the restore and the runs in the restored home.
    append_day(landing, 0)
    got, want = run(restored, landing), run(control, landing)
    assert got["status"] == want["status"] == "succeeded"
    for key in ("rows_landed", "rows_in", "rows_clean", "rows_changed_in_warehouse"):
        assert got[key] == want[key], key
    mode = [
        runs.read_manifest(Settings(home=h), str(r["run_id"]))["process"]["recomputed"]["mode"]
        for h, r in ((restored, got), (control, want))
    ]
    assert mode[0] == mode[1] != "full"
    # Values: each home's Parquet files carry its own run ids in their metadata.
    got_x, want_x = exports(restored, tmp_path / "g"), exports(control, tmp_path / "w")
    assert pl.read_parquet(got_x[0]).equals(pl.read_parquet(want_x[0]))
    assert got_x[1].equals(want_x[1])
    assert "is intact" in ok(restored, "backup", "verify", str(out), "-q")


def test_tampered_backup_fails_verify_and_is_not_restored(landing: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    _home_with_data(home, landing)
    out = tmp_path / "bk"
    ok(home, "backup", "create", "--out", str(out), "-q")
    gold = sorted((out / "lake" / "gold" / "daily_features").rglob("*.parquet"))
    changed, missing = gold[0], gold[1]
    data = bytearray(changed.read_bytes())
    data[len(data) // 2] ^= 0xFF
    changed.unlink()  # a new inode: the home's hard-linked file keeps its bytes
    changed.write_bytes(bytes(data))
    missing.unlink()
    (out / "lake" / "extra.txt").write_text("not from the home")

    code, output = sb(home, "backup", "verify", str(out), "-q")
    assert code == 1
    rel = lambda p: str(p.relative_to(out))  # noqa: E731
    assert f"changed     {rel(changed)}" in output
    assert f"missing     {rel(missing)}" in output
    assert "unexpected  lake/extra.txt" in output
    assert "1 missing, 1 changed, 1 unexpected" in output
    assert "Traceback" not in output

    fresh = tmp_path / "fresh"
    code, output = sb(fresh, "backup", "restore", str(out), "-q")
    assert code == 1 and "nothing was restored" in output
    assert not (fresh / "lake").exists() and not (fresh / "warehouse.db").exists()


def test_restore_refuses_a_home_that_holds_data(landing: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    _home_with_data(home, landing)
    out = tmp_path / "bk"
    ok(home, "backup", "create", "--out", str(out), "-q")
    before = files_of(home / "lake")
    code, output = sb(home, "backup", "restore", str(out), "-q")
    assert code == 1
    assert "is not empty" in output and "new STOCKBATCH_HOME" in output
    assert files_of(home / "lake") == before


def test_backup_to_another_file_system_copies(landing: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    _home_with_data(home, landing)
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.fail("this test needs /dev/shm on another file system than the temp folder")
    out = shm / f"sb-backup-{os.getpid()}-{tmp_path.name}"
    try:
        ok(home, "backup", "create", "--out", str(out), "-q")
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["hard_links"] == 0 and manifest["copies"] > 0
        restored = tmp_path / "restored"
        ok(restored, "backup", "restore", str(out), "-q")
        # Copies keep mtimes: the process state (size, mtime of its files) still vouches
        # for an incremental update. (_loaded.json now names the restored warehouse.)
        got, want = files_of(restored / "lake"), files_of(home / "lake")
        for name in ("gold/_loaded.json", "bronze/.lock"):
            got.pop(name, None), want.pop(name, None)
        assert got == want
        ok(restored, "process", "--as-of", AS_OF, "-q")
        assert last_run(restored)["process_skipped"] is True
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_backup_refuses_a_busy_home_and_bad_targets(landing: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    _home_with_data(home, landing)
    with runs.home_lock(Settings(home=home), "test"):
        code, output = sb(home, "backup", "create", "--out", str(tmp_path / "b1"), "--no-wait")
    assert code == runs.EXIT_BUSY and "running" in output
    assert not (tmp_path / "b1").exists()
    code, output = sb(home, "backup", "create", "--out", str(home / "lake" / "b"), "-q")
    assert code == 1 and "inside" in output
    code, output = sb(home, "backup", "verify", str(tmp_path), "-q")
    assert code == 1 and "no manifest.json" in output
    # Default target: HOME/backups/<timestamp>.
    line = ok(home, "backup", "create", "-q")
    assert str(home / "backups") in line
    (default,) = (home / "backups").iterdir()
    assert pl.read_parquet(default / "lake" / "gold" / "quarterly_features").height
