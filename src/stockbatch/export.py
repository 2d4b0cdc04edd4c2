"""Exports for the ML application: the quarterly table and daily bars + features.

Both read the warehouse (the reader role on PostgreSQL) and carry their lineage:
Parquet metadata, or a ``.meta.json`` beside a CSV.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from stockbatch import __version__, lake, schema
from stockbatch.errors import PipelineError
from stockbatch.lake import gold
from stockbatch.settings import Settings


def _write_table(table: pa.Table, path: Path, suffix: str, meta: dict[str, str]) -> None:
    """Write an export atomically; lineage goes into Parquet metadata or a CSV sidecar."""
    import pyarrow.csv as pacsv

    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        md = {**(table.schema.metadata or {}), **{k.encode(): v.encode() for k, v in meta.items()}}
        lake.write_parquet_atomic(table.replace_schema_metadata(md), path)
    else:
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink)
        lake.atomic_write_bytes(path, sink.getvalue().to_pybytes())
        lake.atomic_write_bytes(
            path.with_name(path.name + ".meta.json"), json.dumps(meta, indent=2).encode()
        )


def _lineage(settings: Settings) -> dict[str, str]:
    state = gold.process_state(settings)
    return {
        "stockbatch.process_run_id": str(state.get("run_id", "")),
        "stockbatch.as_of": str(state.get("as_of", "")),
        "stockbatch.dataset_last_date": str(state.get("dataset_last_date", "")),
        "stockbatch.feature_set_version": str(schema.FEATURE_SET_VERSION),
        "stockbatch.code_version": __version__,
        "stockbatch.label_columns": ",".join(schema.QUARTERLY_LABEL_COLUMNS),
    }


def export_quarterly(
    settings: Settings, path: Path, suffix: str, *, complete_only: bool = False
) -> int:
    """Write the quarterly ML table from the warehouse; returns the row count."""
    from stockbatch.warehouse import db, queries

    engine = db.loaded_reader(settings)
    table = queries.quarterly_table(engine)
    if complete_only:
        table = table.filter(pc.equal(table.column("q_complete"), True))
    _write_table(table, path, suffix, _lineage(settings))
    return int(table.num_rows)


def export_daily(settings: Settings, path: Path, suffix: str, symbols: list[str] | None) -> int:
    """Write daily bars + features from the warehouse; returns the row count."""
    from stockbatch.warehouse import db, queries

    engine = db.loaded_reader(settings)
    parts = list(queries.daily_table(engine, symbols))
    table = pa.concat_tables(parts) if parts else schema.DAILY_FEATURES.empty_table()
    if symbols and table.num_rows == 0:
        raise PipelineError(f"no daily rows for {', '.join(symbols)}; check the symbols")
    meta = {k: v for k, v in _lineage(settings).items() if k != "stockbatch.label_columns"}
    _write_table(table, path, suffix, meta)
    return int(table.num_rows)
