"""Lake file primitives: atomic writes, Parquet read/write in the canonical types, hashes.

Every file is written to a temporary name in the same directory and renamed
into place, so a reader (or a crash) never sees half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file + fsync + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_parquet_atomic(
    table: pa.Table | pl.DataFrame,
    path: Path,
    compression: str = "zstd",
    row_group_size: int = 256_000,
) -> None:
    """Write one Parquet file atomically (temp file in the same folder, then rename).

    Polars frames go through Polars' own writer: measured here it writes the
    28-column gold table 2-3x faster than ``pyarrow.parquet`` (it compresses
    column chunks in parallel); zstd level 1 keeps files within 10% of the
    default level's size at less than half its time.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".parquet")
    os.close(fd)
    try:
        if isinstance(table, pl.DataFrame):
            table.write_parquet(
                tmp,
                compression="uncompressed" if compression == "none" else compression,  # type: ignore[arg-type]
                compression_level=1 if compression == "zstd" else None,
                row_group_size=row_group_size,
            )
        else:
            pq.write_table(
                table,
                tmp,
                compression=None if compression == "none" else compression,
                compression_level=1 if compression == "zstd" else None,
                row_group_size=row_group_size,
            )
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_canonical(path: Path, arrow_schema: pa.Schema) -> pa.Table:
    """Read one lake file as the canonical Arrow types (Polars writes large_string etc.)."""
    return pq.read_table(path, columns=arrow_schema.names).cast(arrow_schema)


def polars_schema(arrow_schema: pa.Schema) -> pl.Schema:
    """The Polars schema of one of the canonical Arrow schemas.

    (Not via ``arrow_schema.empty_table()``: that imports pandas, ~0.5 s per process.)
    """
    return pl.Schema(arrow_schema)


def conform(frame: pl.DataFrame, arrow_schema: pa.Schema) -> pl.DataFrame:
    """Select and cast ``frame`` to a canonical schema (a no-op when it already fits)."""
    target = polars_schema(arrow_schema)
    return frame.select(pl.col(name).cast(dtype) for name, dtype in target.items())


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def parquet_files(root: Path) -> list[Path]:
    """All committed Parquet files below ``root`` (temp files excluded), sorted."""
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*.parquet") if not p.name.startswith(".tmp-"))


def write_json_atomic(path: Path, doc: Any, *, sort_keys: bool = True) -> None:
    """Write a JSON document atomically (indented, ``default=str``)."""
    atomic_write_bytes(path, json.dumps(doc, indent=2, sort_keys=sort_keys, default=str).encode())


def read_json(path: Path) -> dict[str, Any]:
    """A JSON record of the lake, or ``{}`` when it does not exist yet."""
    return json.loads(path.read_text()) if path.exists() else {}
