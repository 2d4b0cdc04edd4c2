"""The Parquet lake: where every file lives (:mod:`.layout`), how it is written
(:mod:`.files`), the bronze component (:mod:`.bronze`) and the gold readers
(:mod:`.gold`)."""

from __future__ import annotations

from stockbatch.lake.files import (
    atomic_write_bytes,
    conform,
    file_sha256,
    parquet_files,
    polars_schema,
    read_canonical,
    read_json,
    write_json_atomic,
    write_parquet_atomic,
)
from stockbatch.lake.layout import (
    BRONZE,
    FIRST_PART,
    GOLD,
    RUNS,
    SILVER,
    LakeLayout,
    bucket_dir,
    layout,
    part_name,
    symbol_bucket,
)

__all__ = [
    "BRONZE",
    "FIRST_PART",
    "GOLD",
    "RUNS",
    "SILVER",
    "LakeLayout",
    "atomic_write_bytes",
    "bucket_dir",
    "conform",
    "file_sha256",
    "layout",
    "parquet_files",
    "part_name",
    "polars_schema",
    "read_canonical",
    "read_json",
    "symbol_bucket",
    "write_json_atomic",
    "write_parquet_atomic",
]
