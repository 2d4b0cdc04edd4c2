"""Exports for the ML application: the quarterly table and daily bars + features.

Both read the warehouse (the reader role on PostgreSQL) and carry their lineage:
Parquet metadata, or a ``.meta.json`` beside a CSV.
"""

from __future__ import annotations

import datetime as dt
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


def lineage(settings: Settings, *, labels: bool = True) -> dict[str, str]:
    """Where an export comes from: the process run, as-of date, versions (and, for the
    quarterly table, which columns are labels). The API's downloads carry the same."""
    state = gold.process_state(settings)
    out = {
        "stockbatch.process_run_id": str(state.get("run_id", "")),
        "stockbatch.as_of": str(state.get("as_of", "")),
        "stockbatch.dataset_last_date": str(state.get("dataset_last_date", "")),
        "stockbatch.feature_set_version": str(schema.FEATURE_SET_VERSION),
        "stockbatch.code_version": __version__,
        "stockbatch.label_columns": ",".join(schema.QUARTERLY_LABEL_COLUMNS),
    }
    if not labels:
        del out["stockbatch.label_columns"]
    return out


def quarterly_rows(
    settings: Settings,
    *,
    quarters: list[str] | None = None,
    complete_only: bool = False,
    as_of: dt.date | None = None,
) -> pa.Table:
    """The rows of the quarterly export (by symbol and quarter), read from the warehouse.

    ``quarters`` restricts them to those quarters; ``complete_only`` and ``as_of``
    as in :func:`export_quarterly`. The quarterly snapshots read the same rows.
    """
    from stockbatch.warehouse import db, queries

    engine = db.loaded_reader(settings)
    table = queries.quarterly_table(engine, quarters, as_of=as_of)
    if complete_only:
        table = table.filter(pc.equal(table.column("q_complete"), True))
    return table


def export_quarterly(
    settings: Settings,
    path: Path,
    suffix: str,
    *,
    complete_only: bool = False,
    as_of: dt.date | None = None,
) -> int:
    """Write the quarterly ML table from the warehouse; returns the row count.

    ``as_of``: point-in-time (``queries.quarterly_table``): only rows available on
    that date, labels nulled where the next quarter was not available yet.
    """
    table = quarterly_rows(settings, complete_only=complete_only, as_of=as_of)
    meta = lineage(settings)
    if as_of is not None:
        meta["stockbatch.point_in_time"] = as_of.isoformat()
    _write_table(table, path, suffix, meta)
    return int(table.num_rows)


def export_daily(settings: Settings, path: Path, suffix: str, symbols: list[str] | None) -> int:
    """Write daily bars + features from the warehouse; returns the row count."""
    from stockbatch.warehouse import db, queries

    engine = db.loaded_reader(settings)
    parts = list(queries.daily_table(engine, symbols))
    table = pa.concat_tables(parts) if parts else schema.DAILY_FEATURES.empty_table()
    if symbols and table.num_rows == 0:
        raise PipelineError(f"no daily rows for {', '.join(symbols)}; check the symbols")
    meta = lineage(settings, labels=False)
    _write_table(table, path, suffix, meta)
    return int(table.num_rows)
