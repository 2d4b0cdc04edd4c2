"""Lake helpers: stable buckets, atomic writes, manifests."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stockbatch import lake, runs
from stockbatch.settings import Settings


def test_symbol_bucket_is_stable_and_in_range() -> None:
    # crc32(b"AAPL") = 0xB665575C is fixed by the algorithm, not by the process
    # (Python's own hash() is salted per process and would move symbols around).
    assert lake.symbol_bucket("AAPL", 1 << 32) == 0xB665575C
    assert lake.symbol_bucket("AAPL", 8) == 0xB665575C % 8
    assert lake.symbol_bucket("AAPL", 8) == lake.symbol_bucket("AAPL", 8)
    assert {lake.symbol_bucket(s, 8) for s in ("A", "B", "C", "D", "E", "F", "G", "H", "I")} <= set(
        range(8)
    )


def test_atomic_parquet_write_leaves_no_temp_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "x" / "part.parquet"
    table = pa.table({"a": [1, 2, 3]})
    lake.write_parquet_atomic(table, target)
    assert pq.read_table(target).equals(table)

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        lake.write_parquet_atomic(pa.table({"a": [9]}), target)
    # The old file is intact and no temp file is left behind.
    assert pq.read_table(target).equals(table)
    assert [p.name for p in target.parent.iterdir()] == ["part.parquet"]


def test_manifest_round_trip(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    layout = lake.layout(settings)
    lake.write_json_atomic(layout.manifest("20260101T000000000Z-aaaaaa"), {"run_id": "r1", "n": 1})
    lake.write_json_atomic(layout.manifest("20260102T000000000Z-bbbbbb"), {"run_id": "r2", "n": 2})
    assert [m["run_id"] for m in runs.iter_manifests(settings)] == ["r1", "r2"]
    assert runs.read_manifest(settings, "20260101T000000000Z-aaaaaa")["n"] == 1
