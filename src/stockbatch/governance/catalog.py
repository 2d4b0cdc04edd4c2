"""The data catalog: every dataset stockbatch holds, read from what exists.

One entry per dataset of the lake (bronze, silver, gold), of the warehouse (each data
table), of the search node (each alias) and per quarterly snapshot: its columns with a
description each, owner, upstream datasets, the run that last wrote it, freshness, row
count and a checksum with what it covers.

Nothing big is read: row counts and newest dates come from Parquet footers (row-group
statistics), the warehouse answers one ``count``/``max`` query per table, checksums are
the ones the stages already record (``gold/_state.json``, ``gold/_loaded.json``, the
bronze catalog, index ``_meta``, snapshot manifests), and "last written by" comes from
the run manifests (:func:`stockbatch.runs.iter_manifests`). A warehouse or search node
that cannot be reached makes its entries ``unreachable``; the catalog is still built.
Design: docs/design/catalog.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from stockbatch import dictionary, lake, runs, schema, snapshots
from stockbatch.errors import PipelineError
from stockbatch.lake import bronze, gold
from stockbatch.settings import Settings, mask_secrets

OK = "ok"
EMPTY = "empty"
"""The dataset's place exists but holds no rows yet (e.g. before the first run)."""
MISSING = "missing"
DAMAGED = "damaged"
"""A file of the dataset (or a snapshot manifest) cannot be read; the note says which."""
UNREACHABLE = "unreachable"
NOT_CONFIGURED = "not_configured"

KINDS = ("lake", "warehouse", "search", "snapshot")

TEAM = "stockbatch data platform"
OWNERS: Mapping[str, str] = {
    "bronze": "stockbatch ingest / collect",
    "silver": "stockbatch process",
    "gold": "stockbatch process",
    "warehouse": "stockbatch load",
    "search": "stockbatch load (search sync)",
    "snapshot": "stockbatch export snapshot / quarterly DAG",
}
"""Who writes each layer (the stage command); every dataset's team is :data:`TEAM`."""

# ----------------------------------------------------------------------------- column text
# What docs/data.md does not describe (dictionary.py covers the exports, quarantine and
# the run record); kept here, next to the only reader, so every column has a line.

INSTRUMENT_COLUMNS: Mapping[str, str] = {
    "symbol": "the instrument, Yahoo spelling",
    "name": "the instrument's name where a source provides it, else null",
    "exchange": "listing exchange where a source provides it, else null",
    "is_etf": "whether the instrument is an ETF (null when unknown)",
    "source": "the source whose rows won for this symbol (kaggle-huge, ..., yahoo)",
    "updated_at": "when the load last inserted or changed the row (UTC)",
}

SILVER_EXTRA: Mapping[str, str] = {
    "is_adjusted": dictionary.QUARANTINE_COLUMNS["is_adjusted"],
    "superseded": "true when a higher-priority source has a row for the same symbol and day"
    " (kept for lineage, left out of gold)",
    "source_file": dictionary.QUARANTINE_COLUMNS["source_file"],
    "line_no": dictionary.QUARANTINE_COLUMNS["line_no"],
}

BRONZE_EXTRA: Mapping[str, str] = {
    "bucket": "crc32(symbol) mod lake.buckets: the partition folder the row lands in",
}

WAREHOUSE_QUARANTINE: Mapping[str, str] = {
    "id": "row number given by the warehouse (surrogate key)",
    "run_id": "the process run that refused the row",
    "reasons": "every reason code that fired, comma-joined",
}

RUN_ROW: Mapping[str, str] = {
    **dictionary.RUN_RECORD,
    "finished_at": "UTC, when the run ended",
    "params": "the command's parameters (JSON)",
    "counts": "the validation counts of the run (JSON, as in the manifest)",
    "manifest": "the whole run manifest (JSON): inputs, checksums, versions",
}

DATA_QUALITY: Mapping[str, str] = {
    "run_id": "the run the metric belongs to (pipeline_runs.run_id)",
    "metric": "metric name, e.g. reasons.duplicate or health.zero_volume",
    "kind": "metric group: count, reasons, health, ...",
    "value": "the metric's value (row counts are whole numbers)",
}

AUDIT_LOG: Mapping[str, str] = {
    "id": "entry number (surrogate key)",
    "at": "when it happened (UTC)",
    "actor": "the OS user of a CLI run, or the API user / token owner",
    "action": "what was done: a command, an API route, a login",
    "detail": "what the action touched (JSON: run id, status, parameters)",
}

SEARCH_EXTRA: Mapping[str, str] = {
    "name_folded": "the name lower-cased without accents, for prefix search (not returned)",
    "exchange": INSTRUMENT_COLUMNS["exchange"] + " (copied from the instruments)",
    "is_etf": INSTRUMENT_COLUMNS["is_etf"] + " (copied from the instruments)",
}


def _bar_lines() -> dict[str, str]:
    return dictionary.describe_columns("daily")


def column_text(dataset: str) -> dict[str, str]:
    """Every known column description of one dataset (see :func:`build_catalog` names)."""
    daily = _bar_lines()
    quarterly = dictionary.describe_columns("quarterly")
    quarantine = dictionary.describe_columns("quarantine")
    texts: dict[str, Mapping[str, str]] = {
        "bronze.bars": {**quarantine, **BRONZE_EXTRA},
        "silver.bars": {**daily, **SILVER_EXTRA},
        "silver.quarantine": quarantine,
        "silver.instruments": INSTRUMENT_COLUMNS,
        "gold.daily_features": daily,
        "gold.quarterly_features": quarterly,
        "warehouse.instruments": INSTRUMENT_COLUMNS,
        "warehouse.daily_bars": daily,
        "warehouse.daily_features": daily,
        "warehouse.quarterly_features": quarterly,
        "warehouse.quarantine": {**quarantine, **WAREHOUSE_QUARANTINE},
        "warehouse.pipeline_runs": RUN_ROW,
        "warehouse.data_quality": DATA_QUALITY,
        "warehouse.audit_log": AUDIT_LOG,
        "search.instruments": {**INSTRUMENT_COLUMNS, **SEARCH_EXTRA},
        "search.quarterly-features": {**quarterly, **SEARCH_EXTRA},
        "search.daily-bars": daily,
    }
    if dataset.startswith("snapshot."):
        return quarterly
    return dict(texts.get(dataset, {}))


# ----------------------------------------------------------------------------- the entries


@dataclass
class Column:
    """One column: name, type as stored, what it means."""

    name: str
    type: str
    description: str


@dataclass
class Checksum:
    """A recorded checksum and what it covers (never computed here over the data)."""

    value: str
    covers: str


@dataclass
class Dataset:
    """One catalog entry."""

    name: str
    kind: str
    """``lake``, ``warehouse``, ``search`` or ``snapshot``."""
    description: str
    location: str
    owner: str
    upstream: list[str]
    columns: list[Column] = field(default_factory=list)
    status: str = OK
    rows: int | None = None
    files: int | None = None
    newest_date: str | None = None
    """Newest trade date (or quarter end) the dataset holds."""
    written_at: str | None = None
    """When it was last written (UTC, ISO 8601)."""
    last_run: str | None = None
    """The run that last wrote it (a run id of ``lake/runs``)."""
    checksum: Checksum | None = None
    team: str = TEAM
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``--json`` and the API return)."""
        return asdict(self)

    def __setattr__(self, name: str, value: Any) -> None:
        # Notes quote backend errors, which may quote a URL with its password.
        super().__setattr__(name, _safe(value) if name == "note" else value)


@dataclass
class Catalog:
    """Every dataset, with when and from which home it was read."""

    generated_at: str
    home: str
    datasets: list[Dataset]
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "generated_at": self.generated_at,
            "home": self.home,
            "seconds": self.seconds,
            "count": len(self.datasets),
            "datasets": [d.to_dict() for d in self.datasets],
        }

    def get(self, name: str) -> Dataset | None:
        """The entry called ``name`` (None if there is none)."""
        return next((d for d in self.datasets if d.name == name), None)


def _safe(text: str | None) -> str | None:
    return None if text is None else mask_secrets(text)


def _columns(dataset: str, fields: Iterable[tuple[str, str]]) -> list[Column]:
    text = column_text(dataset)
    return [Column(name, typ, text.get(name, "")) for name, typ in fields]


def _arrow_type(t: pa.DataType) -> str:
    return {pa.date32(): "date", pa.string(): "string"}.get(t, str(t))


def _arrow_fields(s: pa.Schema) -> list[tuple[str, str]]:
    return [(f.name, _arrow_type(f.type)) for f in s]


def _digest(checksums: Mapping[str, str]) -> str:
    """One SHA-256 over ``path sha256`` lines in path order (a set of file checksums)."""
    text = "\n".join(f"{k} {v}" for k, v in sorted(checksums.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def _to_date_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)[:10]


# ----------------------------------------------------------------------------- Parquet footers


@dataclass
class FileStats:
    """What the footers of a set of Parquet files say (no data page is read)."""

    files: int = 0
    rows: int = 0
    newest: dt.date | None = None
    mtime: float | None = None
    unreadable: list[Path] = field(default_factory=list)
    """Files whose footer cannot be read (damaged, or removed while listed)."""


def parquet_stats(paths: list[Path], date_column: str | None = None) -> FileStats:
    """Rows (footer counts), newest ``date_column`` value (row-group max statistics, for a
    date-typed column) and newest modification time of ``paths``."""
    out = FileStats(files=len(paths))
    for p in paths:
        try:
            meta = pq.read_metadata(p)
            mtime = p.stat().st_mtime
        except (OSError, pa.ArrowException):
            out.unreadable.append(p)
            continue
        out.rows += meta.num_rows
        out.mtime = mtime if out.mtime is None else max(out.mtime, mtime)
        if date_column is None:
            continue
        names = meta.schema.to_arrow_schema().names
        if date_column not in names:
            continue
        idx = names.index(date_column)
        for rg in range(meta.num_row_groups):
            st = meta.row_group(rg).column(idx).statistics
            if st is not None and st.has_min_max and isinstance(st.max, dt.date):
                out.newest = st.max if out.newest is None else max(out.newest, st.max)
    return out


# ----------------------------------------------------------------------------- last writers


def _wrote(doc: dict[str, Any], dataset: str) -> bool:
    """Whether the run of manifest ``doc`` wrote ``dataset`` (a failed run may have
    written nothing that counts: only runs without an error are taken)."""
    if doc.get("error") or doc.get("status") in (runs.RUNNING, runs.FAILED):
        return False
    ingest, collect = doc.get("ingest") or {}, doc.get("collect") or {}
    process, load = doc.get("process") or {}, doc.get("load") or {}
    landed = (ingest.get("transport") != "kafka" and bool(ingest.get("rows"))) or bool(
        collect.get("rows")
    )
    if dataset == "bronze.bars":
        return landed
    if dataset == "silver.instruments":
        return bool(ingest.get("instruments") or collect.get("instruments"))
    if dataset.startswith(("silver.", "gold.")):
        return bool(process) and not process.get("skipped")
    if dataset.startswith("warehouse."):
        if not load or load.get("warehouse_skipped"):
            return False
        table = (load.get("tables") or {}).get(dataset.removeprefix("warehouse."), {})
        return any(table.get(k) for k in ("inserted", "updated", "deleted"))
    return False


def last_writers(settings: Settings, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """For each dataset name, the newest run whose manifest says it wrote that dataset:
    ``{"run_id", "finished_at"}``."""
    wanted = list(names)
    found: dict[str, dict[str, Any]] = {}
    for doc in runs.iter_manifests(settings):  # oldest first: later runs overwrite
        for name in wanted:
            if _wrote(doc, name):
                found[name] = {"run_id": str(doc["run_id"]), "finished_at": doc.get("finished_at")}
    return found


# ----------------------------------------------------------------------------- the lake


def _lake_entry(
    name: str,
    description: str,
    location: Path,
    arrow_schema: pa.Schema,
    upstream: list[str],
    paths: list[Path],
    date_column: str | None,
    root: Path,
) -> Dataset:
    # Instrument metadata comes with the landing, not from the process stage.
    layer = "bronze" if name == "silver.instruments" else name.split(".", 1)[0]
    st = parquet_stats(paths, date_column)
    entry = Dataset(
        name=name,
        kind="lake",
        description=description,
        location=str(location.relative_to(root))
        if location.is_relative_to(root)
        else str(location),
        owner=OWNERS[layer],
        upstream=upstream,
        columns=_columns(name, _arrow_fields(arrow_schema)),
        status=OK if st.files else MISSING,
        rows=st.rows if st.files else None,
        files=st.files,
        newest_date=_to_date_text(st.newest),
        written_at=_iso(st.mtime),
    )
    if st.unreadable:
        entry.status = DAMAGED
        shown = ", ".join(str(p.relative_to(root)) for p in st.unreadable[:3])
        entry.note = f"{len(st.unreadable)} file(s) unreadable ({shown}); rows count the others"
    return entry


def lake_datasets(settings: Settings) -> list[Dataset]:
    """The lake's datasets, from the layout and the Parquet footers, with the checksums
    the stages recorded."""
    paths = lake.layout(settings)
    root = paths.root
    state = gold.process_state(settings)
    sums: dict[str, str] = state.get("gold_checksums", {})
    daily_glob = paths.gold_daily.relative_to(root).as_posix() + "/"
    out = [
        _lake_entry("bronze.bars", "rows exactly as they arrived, one batch folder per landing",
                    paths.bronze_bars, schema.BRONZE_BARS, [],
                    lake.parquet_files(paths.bronze_bars), None, root),
        _lake_entry("silver.bars", "validated bars in canonical types (superseded rows flagged)",
                    paths.silver_bars, schema.SILVER_BARS, ["bronze.bars"],
                    lake.parquet_files(paths.silver_bars), "trade_date", root),
        _lake_entry("silver.quarantine", "refused rows as they arrived, with every reason",
                    paths.quarantine, schema.QUARANTINE, ["bronze.bars"],
                    lake.parquet_files(paths.quarantine), None, root),
        _lake_entry("silver.instruments", "instrument metadata of every source (newest wins)",
                    paths.instruments, schema.INSTRUMENTS, [],
                    [paths.instruments] if paths.instruments.exists() else [], None, root),
        _lake_entry("gold.daily_features", "one row per symbol and session: bars + daily "
                    "features", paths.gold_daily, schema.DAILY_FEATURES, ["silver.bars"],
                    lake.parquet_files(paths.gold_daily), "trade_date", root),
        _lake_entry("gold.quarterly_features", "the quarterly ML table: one row per symbol "
                    "and quarter", paths.gold_quarterly, schema.QUARTERLY_FEATURES,
                    ["gold.daily_features"],
                    [paths.gold_quarterly] if paths.gold_quarterly.exists() else [],
                    "quarter_end", root),
    ]  # fmt: skip
    by = {d.name: d for d in out}
    units = bronze.active_units(settings)
    if len(units):
        by["bronze.bars"].checksum = Checksum(
            _digest(
                {f"{r['source']}:{r['ref']}": r["sha256"] for r in units.iter_rows(named=True)}
            ),
            f"SHA-256 of the {len(units)} active source units' bytes as landed "
            "(bronze/_catalog.parquet), combined in (source:ref) order",
        )
    if state.get("fingerprint"):
        fp = Checksum(
            state["fingerprint"],
            "the process fingerprint (gold/_state.json): active bronze units, as-of date, "
            "configuration and engine that produced this content",
        )
        by["silver.bars"].checksum = by["silver.quarantine"].checksum = fp
    daily_sums = {k: v for k, v in sums.items() if k.startswith(daily_glob)}
    if daily_sums:
        by["gold.daily_features"].checksum = Checksum(
            _digest(daily_sums),
            f"SHA-256 of each of the {len(daily_sums)} gold daily files (recorded in "
            "gold/_state.json), combined in path order",
        )
    quarterly_rel = paths.relative(paths.gold_quarterly)
    if quarterly_rel in sums:
        by["gold.quarterly_features"].checksum = Checksum(
            sums[quarterly_rel], "SHA-256 of the file's bytes (recorded in gold/_state.json)"
        )
    for d in out:
        if d.rows == 0 and d.status == OK:
            d.status = EMPTY
    return out


# ----------------------------------------------------------------------------- the warehouse

WAREHOUSE_TABLES: Mapping[str, tuple[str, list[str], str | None]] = {
    # table: (description, upstream, the column whose max is the table's freshness)
    "instruments": ("instrument metadata, one row per symbol",
                    ["gold.daily_features", "silver.instruments"], None),
    "daily_bars": ("bars of every symbol and session", ["gold.daily_features"], "trade_date"),
    "daily_features": ("daily features of every symbol and session", ["gold.daily_features"],
                       "trade_date"),
    "quarterly_features": ("the quarterly ML table", ["gold.quarterly_features"], "quarter_end"),
    "quarantine": ("refused rows with their reasons", ["silver.quarantine"], None),
    "pipeline_runs": ("one row per recorded run: status, counts, manifest", [], "started_at"),
    "data_quality": ("quality metrics per run (reasons, health flags, counts)",
                     ["warehouse.pipeline_runs"], None),
    "audit_log": ("who did what: CLI runs, API requests, logins", [], "at"),
}  # fmt: skip
"""Every data table (the account tables are not data and are never listed)."""


def _sql_type(column: sa.Column[Any]) -> str:
    try:
        return str(column.type)
    except Exception:  # a type without a generic rendering (none today): name it
        return type(column.type).__name__


def _warehouse_shells() -> list[Dataset]:
    from stockbatch.warehouse import models

    out = []
    for table, (text, upstream, _) in WAREHOUSE_TABLES.items():
        name = f"warehouse.{table}"
        cols = [(c.name, _sql_type(c)) for c in models.metadata.tables[table].columns]
        out.append(
            Dataset(
                name=name,
                kind="warehouse",
                description=text,
                location=table,
                owner=OWNERS["warehouse"],
                upstream=list(upstream),
                columns=_columns(name, cols),
                status=MISSING,
            )
        )
    return out


def _open_reader(settings: Settings) -> tuple[sa.Engine | None, str, str | None]:
    """(engine, status, note): the reader role's engine, or why there is none. A SQLite
    file that does not exist is ``missing`` (not created by reading it)."""
    from stockbatch.warehouse import db

    try:
        url = db.resolve_urls(settings).reader
    except PipelineError as exc:
        return None, NOT_CONFIGURED, str(exc)
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        file = parsed.database
        if file and file != ":memory:" and not file.startswith("file:") and not Path(file).exists():
            return None, MISSING, "no warehouse yet: run `stockbatch load`"
    try:
        return db.engine_for(url), OK, None
    except (db.WarehouseUnavailable, PipelineError, sa.exc.SQLAlchemyError, OSError) as exc:
        return None, UNREACHABLE, str(exc).splitlines()[0][:300]


def _table_facts(conn: sa.Connection, table: sa.Table, fresh: str | None) -> tuple[int, Any]:
    """Rows and newest ``fresh`` value in one scan."""
    cols: list[Any] = [sa.func.count()]
    if fresh is not None:
        cols.append(sa.func.max(table.c[fresh]))
    row = conn.execute(sa.select(*cols).select_from(table)).one()
    return int(row[0]), (row[1] if fresh is not None else None)


def warehouse_datasets(settings: Settings, engine: sa.Engine | None = None) -> list[Dataset]:
    """Each data table of the warehouse: rows, freshness, the load that last wrote it and the
    gold checksums it holds (``gold/_loaded.json``); ``unreachable`` when the server does
    not answer. ``engine``: a reader engine to reuse (the API's pool)."""
    from stockbatch.warehouse import models

    out = _warehouse_shells()
    own = engine is None
    status, note = OK, None
    if engine is None:
        engine, status, note = _open_reader(settings)
    if engine is None:
        for d in out:
            d.status, d.note = status, note
        return out
    try:
        existing = set(sa.inspect(engine).get_table_names())
        with engine.connect() as conn:
            for d in out:
                table = models.metadata.tables[d.location]
                if d.location not in existing:
                    d.note = "table not created yet: run `stockbatch load`"
                    continue
                rows, newest = _table_facts(conn, table, WAREHOUSE_TABLES[d.location][2])
                d.rows, d.status = rows, OK if rows else EMPTY
                if isinstance(newest, dt.datetime):
                    # SQLite keeps no zone; the warehouse stores UTC.
                    aware = newest if newest.tzinfo else newest.replace(tzinfo=dt.UTC)
                    d.written_at = aware.isoformat(timespec="seconds")
                else:
                    d.newest_date = _to_date_text(newest)
            runs_t, q = models.pipeline_runs, models.data_quality
            if "pipeline_runs" in existing:
                last = conn.execute(sa.select(sa.func.max(runs_t.c.run_id))).scalar_one()
                _set_run(out, "warehouse.pipeline_runs", last)
            if "data_quality" in existing:
                last = conn.execute(sa.select(sa.func.max(q.c.run_id))).scalar_one()
                _set_run(out, "warehouse.data_quality", last)
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        for d in out:
            d.status, d.note = UNREACHABLE, str(exc).splitlines()[0][:300]
        return out
    finally:
        if own:
            engine.dispose()
    _warehouse_checksums(settings, out)
    return out


def _set_run(out: list[Dataset], name: str, run_id: Any) -> None:
    for d in out:
        if d.name == name and run_id is not None:
            d.last_run = str(run_id)


def _warehouse_checksums(settings: Settings, out: list[Dataset]) -> None:
    """The gold checksums the last warehouse load recorded, per table they fed."""
    paths = lake.layout(settings)
    loaded = lake.read_json(paths.loaded_state)
    sums: dict[str, str] = loaded.get("checksums") or {}
    if not sums:
        return
    current = gold.process_state(settings).get("gold_checksums") or {}
    behind = "" if sums == current else "; gold has changed since: run `stockbatch load`"
    daily_prefix = paths.gold_daily.relative_to(paths.root).as_posix() + "/"
    daily = {k: v for k, v in sums.items() if k.startswith(daily_prefix)}
    quarterly = sums.get(paths.relative(paths.gold_quarterly))
    whose = f"recorded in gold/_loaded.json by load run {loaded.get('run_id')}"
    for d in out:
        if d.location in ("daily_bars", "daily_features") and daily:
            d.checksum = Checksum(
                _digest(daily),
                f"the SHA-256 of each gold daily file loaded ({whose}), combined in path "
                f"order; equals gold.daily_features' checksum when current{behind}",
            )
        elif d.location == "quarterly_features" and quarterly:
            d.checksum = Checksum(quarterly, f"SHA-256 of the gold quarterly file loaded ({whose})"
                                  f"{behind}")  # fmt: skip
        elif d.location == "instruments":
            d.checksum = Checksum(
                _digest(sums), f"SHA-256 of every gold file loaded ({whose}), combined{behind}"
            )


# ----------------------------------------------------------------------------- search

SEARCH_UPSTREAM: Mapping[str, list[str]] = {
    "instruments": ["gold.daily_features", "silver.instruments"],
    "quarterly-features": ["gold.quarterly_features", "silver.instruments"],
    "daily-bars": ["gold.daily_features"],
}


def _search_shells(settings: Settings) -> list[Dataset]:
    from stockbatch.search import DATASETS

    prefix = settings.search.index_prefix
    out = []
    for ds in DATASETS:
        name = f"search.{ds.name}"
        props = ds.mappings.get("properties", {})
        cols = [(k, str(v.get("type", "object"))) for k, v in props.items()]
        out.append(
            Dataset(
                name=name,
                kind="search",
                description=f"search index (alias {ds.alias(prefix)})",
                location=ds.alias(prefix),
                owner=OWNERS["search"],
                upstream=list(SEARCH_UPSTREAM.get(ds.name, [])),
                columns=_columns(name, cols),
                status=NOT_CONFIGURED,
            )
        )
    return out


def search_datasets(settings: Settings, connect: Callable[[], Any] | None = None) -> list[Dataset]:
    """Each search alias: the index behind it, its documents and the ``_meta`` the load
    recorded (run, content hash, time). ``not_configured`` without ``search.kind``;
    ``unreachable`` (never an error) when the node does not answer. ``connect``: returns
    a backend to reuse (the API's), else one is made and closed here."""
    from stockbatch import search

    out = _search_shells(settings)
    if settings.search.kind == "none":
        for d in out:
            d.note = "no search backend configured (search.kind=none)"
        return out
    own = connect is None
    backend: Any = None
    try:
        backend = connect() if connect is not None else search.connect_settings(settings, 3.0)
        status = search.index_status(backend, prefix=settings.search.index_prefix)
    except search.SearchError as exc:
        for d in out:
            d.status, d.note = UNREACHABLE, str(exc).splitlines()[0][:300]
        return out
    finally:
        if own and backend is not None:
            backend.close()
    for d in out:
        entry = status.get(d.location) or {}
        if not entry.get("index"):
            d.status, d.note = MISSING, "alias not created yet: run `stockbatch load`"
            continue
        meta = entry.get("meta") or {}
        d.rows = int(entry.get("docs") or 0)
        d.status = OK if d.rows else EMPTY
        d.note = f"index {entry['index']}"
        d.last_run = meta.get("run_id")
        d.written_at = meta.get("loaded_at")
        if meta.get("fingerprint"):
            d.checksum = Checksum(
                str(meta["fingerprint"]),
                "content hash of the documents loaded (gold checksums + template version), "
                "recorded in the index's _meta",
            )
    return out


# ----------------------------------------------------------------------------- snapshots


def snapshot_datasets(settings: Settings) -> list[Dataset]:
    """One entry per quarter's latest snapshot version (its manifest holds everything)."""
    out: list[Dataset] = []
    try:
        all_versions = snapshots.list_snapshots(settings)
    except PipelineError as exc:  # a damaged manifest: say so, list the rest of the catalog
        return [
            Dataset(
                name="snapshot.quarterly",
                kind="snapshot",
                description="immutable snapshots of the quarterly ML table",
                location=str(snapshots.quarterly_root(settings)),
                owner=OWNERS["snapshot"],
                upstream=["warehouse.quarterly_features"],
                columns=_columns("snapshot.quarterly", _arrow_fields(schema.QUARTERLY_FEATURES)),
                status=DAMAGED,
                note=str(exc),
            )
        ]
    for snap in all_versions:
        if not snap.latest:
            continue
        name = f"snapshot.quarterly.{snap.quarter}"
        m = snap.manifest
        versions = sum(1 for s in all_versions if s.quarter == snap.quarter)
        cols = [(c["name"], _arrow_type_name(c["type"])) for c in m.get("columns", [])]
        exists = snap.path.exists()
        out.append(
            Dataset(
                name=name,
                kind="snapshot",
                description=f"immutable snapshot of {snap.quarter}'s quarterly ML table "
                f"(version {snap.version}, {versions} version(s))",
                location=str(snap.path.relative_to(settings.home))
                if snap.path.is_relative_to(settings.home)
                else str(snap.path),
                owner=OWNERS["snapshot"],
                upstream=["warehouse.quarterly_features"],
                columns=_columns(name, cols),
                status=OK if exists else MISSING,
                rows=snap.rows,
                files=1 if exists else 0,
                newest_date=m.get("dataset_last_date"),
                written_at=m.get("created_at"),
                last_run=snap.version,
                checksum=Checksum(
                    snap.sha256, "SHA-256 of the snapshot file's bytes (its manifest)"
                ),
            )
        )
    return out


def _arrow_type_name(text: str) -> str:
    return {"date32[day]": "date"}.get(text, text)


# ----------------------------------------------------------------------------- the whole


def build_catalog(
    settings: Settings,
    *,
    engine: sa.Engine | None = None,
    search_connect: Callable[[], Any] | None = None,
) -> Catalog:
    """The catalog of the home ``settings`` points at (every dataset, in data-flow order).

    ``engine`` / ``search_connect``: the API's reader engine and search backend, reused
    instead of opening new ones.
    """
    import time

    t0 = time.perf_counter()
    datasets = [
        *lake_datasets(settings),
        *warehouse_datasets(settings, engine),
        *search_datasets(settings, search_connect),
        *snapshot_datasets(settings),
    ]
    writers = last_writers(settings, [d.name for d in datasets if d.last_run is None])
    state_run = gold.process_state(settings).get("run_id")
    for d in datasets:
        writer = writers.get(d.name) if d.last_run is None else None
        if writer is not None:
            d.last_run = writer["run_id"]
            # A table's rows carry no write time: the writing run's end is the closest fact.
            d.written_at = d.written_at or writer["finished_at"]
        derived = d.name.startswith(("silver.", "gold.")) and d.name != "silver.instruments"
        if d.last_run is None and derived and d.status == OK:
            d.last_run = state_run  # manifests pruned: the state still names the run
    return Catalog(
        generated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        home=str(settings.home),
        datasets=datasets,
        seconds=round(time.perf_counter() - t0, 3),
    )
