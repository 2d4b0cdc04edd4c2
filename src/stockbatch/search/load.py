"""Loading gold into the search engine: fresh index, bulk load, atomic alias swap.

For each dataset (:data:`stockbatch.search.indices.DATASETS`) :func:`sync_search`

1. computes the content hash of what would be loaded (the gold checksums, the
   instruments' content and :data:`~stockbatch.search.indices.TEMPLATE_VERSION`)
   and skips the dataset when the index behind its alias records the same hash in
   its mapping ``_meta`` (and holds the recorded number of documents);
2. otherwise creates a fresh index ``<alias>-<run id>-<hash>`` (settings and
   mappings from the index template) with refresh off and no replicas, bulk
   loads it with deterministic ``_id`` values (a retried load overwrites instead
   of duplicating), restores refresh and replicas, refreshes, checks the count;
3. points the alias at it in one ``POST _aliases`` request (remove from the old
   index + add to the new one: readers see the old index or the new one, never
   none and never both), then deletes older indices of the dataset, keeping the
   one just replaced when ``keep_previous`` (one step of rollback).

Step 2-3 is the rebuild. When ``state_dir`` is given and a record of what the live
index holds is there (:mod:`stockbatch.search.upsert`), a changed dataset is
updated in place instead: only the documents of changed gold files are read and
compared, the new or changed ones are upserted by ``_id``, the ones that left gold
deleted; the count is checked. Any doubt about the record (or ``full=True``, or a
mapping change) means a rebuild.

Documents are encoded to JSON by Polars (vectorised, in Rust) and handed to
the backend's bulk helper (``streaming_bulk`` of ``opensearch-py`` or
``elasticsearch``) already serialised; 429 rejections are retried with
exponential back-off. Every call goes through a
:class:`~stockbatch.search.backend.SearchBackend`, so the same code loads
OpenSearch and Elasticsearch. Several ``_bulk`` requests are in flight at
once (``threads``): measured on 2 cores, 2 threads load ~1.5x faster than one
(the client encodes the next request while the node indexes the last one).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc

from stockbatch import schema
from stockbatch.search import upsert
from stockbatch.search.backend import Action, SearchBackend, SearchError, SearchUnavailable
from stockbatch.search.indices import (
    DAILY_BARS,
    DAILY_FEATURE_FIELDS,
    DATASETS,
    INSTRUMENTS,
    QUARTERLY,
    TEMPLATE_VERSION,
    Dataset,
    fold,
)
from stockbatch.settings import SearchSettings

log = logging.getLogger(__name__)

META_KEY = "stockbatch"
"""Key of stockbatch's record in each index's mapping ``_meta``."""

MAX_ID_BYTES = 512
"""The engines' limit on a document ``_id`` (OpenSearch and Elasticsearch alike)."""

LOAD_SETTINGS: dict[str, Any] = {
    "refresh_interval": "-1",
    "number_of_replicas": 0,
    "translog.durability": "async",
    "translog.sync_interval": "30s",
}
"""Index settings while a fresh index is bulk loaded."""

SERVE_SETTINGS: dict[str, Any] = {
    "refresh_interval": "1s",
    "translog.durability": "request",
    "translog.sync_interval": "5s",
}
"""What :data:`LOAD_SETTINGS` are set back to (the engines' defaults) before the swap."""


@dataclass
class IndexLoadStats:
    """What one dataset's sync did."""

    alias: str
    index: str
    """The index the alias points at afterwards."""
    docs: int = 0
    """Documents in that index."""
    docs_indexed: int = 0
    """Documents sent to it by this sync (0 when unchanged)."""
    skipped_unchanged: bool = False
    previous: str | None = None
    """The index the alias pointed at before (None on a first load or when unchanged)."""
    deleted: list[str] = field(default_factory=list)
    seconds: float = 0.0
    updated_in_place: bool = False
    """True when the live index was updated (upserts and deletes) instead of rebuilt."""
    docs_deleted: int = 0
    """Documents deleted from the live index by an in-place update."""

    def change(self) -> str:
        """``unchanged``, ``+N`` (rebuilt with N documents) or ``~N/-M`` (N upserted and
        M deleted in place)."""
        if self.skipped_unchanged:
            return "unchanged"
        if self.updated_in_place:
            return f"~{self.docs_indexed:,}/-{self.docs_deleted:,}"
        return f"+{self.docs_indexed:,}"

    @property
    def docs_per_s(self) -> float:
        """Indexing throughput of this sync (0 when skipped)."""
        return self.docs_indexed / self.seconds if self.seconds and self.docs_indexed else 0.0


@dataclass
class SearchLoadStats:
    """What :func:`sync_search` did, per dataset name."""

    run_id: str
    indices: dict[str, IndexLoadStats] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        """True if some alias now points at a new index."""
        return any(not s.skipped_unchanged for s in self.indices.values())

    def summary(self) -> str:
        """One line for the CLI."""
        parts = [f"{name} {s.change()}" for name, s in self.indices.items()]
        return f"search: {', '.join(parts)} in {self.seconds:.1f}s"


# ----------------------------------------------------------------------------- documents


def _documents(frame: pl.DataFrame, id_expr: pl.Expr, columns: list[str]) -> pl.DataFrame:
    """Serialised documents of ``frame``: columns ``_id``, ``action``
    (``{"index":{"_id":...}}``) and ``doc`` (the document's JSON).

    Polars encodes the JSON (dates as ``YYYY-MM-DD``, NaN and null as ``null``,
    strings escaped verbatim: quotes, backslashes, unicode), far faster than
    ``json.dumps`` per row.
    """
    if frame.is_empty():
        return pl.DataFrame(schema={"_id": pl.String, "action": pl.String, "doc": pl.String})
    ids = frame.select(id_expr.alias("_id"))["_id"]
    long_ids = ids.str.len_bytes() > MAX_ID_BYTES
    if long_ids.any():
        # The engines refuse ids over 512 bytes (the whole request, not one item):
        # such a key gets its SHA-256 instead, still deterministic.
        ids = pl.Series(
            "_id",
            [
                "sha256:" + hashlib.sha256(i.encode()).hexdigest() if long else i
                for i, long in zip(ids.to_list(), long_ids.to_list(), strict=True)
            ],
        )
    id_json = pl.struct(pl.lit(ids).alias("_id")).struct.json_encode()
    return frame.select(
        pl.lit(ids).alias("_id"),
        pl.concat_str(pl.lit('{"index":'), id_json, pl.lit("}")).alias("action"),
        pl.struct(columns).struct.json_encode().alias("doc"),
    )


def _pairs(docs: pl.DataFrame) -> list[Action]:
    return list(zip(docs["action"].to_list(), docs["doc"].to_list(), strict=True))


def _deletes(ids: pl.Series) -> list[Action]:
    return [(json.dumps({"delete": {"_id": i}}), None) for i in ids.to_list()]


def instrument_docs(instruments: pa.Table) -> pl.DataFrame:
    """Documents of the instruments (``_id`` = symbol), with ``name_folded`` (the name
    through :func:`~stockbatch.search.indices.fold`) for accent-blind matching."""
    frame = pl.from_arrow(instruments.select(schema.INSTRUMENTS.names))
    assert isinstance(frame, pl.DataFrame)
    # A small table (one row per symbol): a Python pass is cheap and exactly fold().
    folded = [None if n is None else fold(n) for n in frame["name"].to_list()]
    frame = frame.with_columns(pl.Series("name_folded", folded, dtype=pl.String))
    return _documents(frame, pl.col("symbol"), [*schema.INSTRUMENTS.names, "name_folded"])


def instrument_actions(instruments: pa.Table) -> list[Action]:
    """Bulk items of :func:`instrument_docs`."""
    return _pairs(instrument_docs(instruments))


def quarterly_docs(quarterly: pa.Table, instruments: pa.Table) -> pl.DataFrame:
    """Documents of the quarterly features (``_id`` = ``symbol|quarter``), with the
    instrument's exchange and ETF flag joined in."""
    frame = pl.from_arrow(quarterly.select(schema.QUARTERLY_FEATURES.names))
    meta = pl.from_arrow(instruments.select(["symbol", "exchange", "is_etf"]))
    assert isinstance(frame, pl.DataFrame) and isinstance(meta, pl.DataFrame)
    frame = frame.join(meta.unique("symbol"), on="symbol", how="left")
    columns = [*schema.QUARTERLY_FEATURES.names, "exchange", "is_etf"]
    return _documents(frame, pl.concat_str("symbol", pl.lit("|"), "quarter"), columns)


def quarterly_actions(quarterly: pa.Table, instruments: pa.Table) -> list[Action]:
    """Bulk items of :func:`quarterly_docs`."""
    return _pairs(quarterly_docs(quarterly, instruments))


DAILY_COLUMNS = [*schema.DAILY_BAR_COLUMNS, *DAILY_FEATURE_FIELDS]


def daily_docs(path: Path) -> pl.DataFrame:
    """Documents of one gold daily-features file (``_id`` = ``symbol|trade_date``)."""
    frame = pl.read_parquet(path, columns=DAILY_COLUMNS)
    key = pl.concat_str("symbol", pl.lit("|"), pl.col("trade_date").dt.to_string("%Y-%m-%d"))
    return _documents(frame, key, DAILY_COLUMNS)


def daily_actions(path: Path) -> list[Action]:
    """Bulk items of :func:`daily_docs`."""
    return _pairs(daily_docs(path))


@dataclass(frozen=True)
class Part:
    """Where some of a dataset's documents come from (a gold file, or the whole
    dataset), with a checksum: the same checksum means the same documents."""

    key: str
    checksum: str
    docs: Callable[[], pl.DataFrame]


# ----------------------------------------------------------------------------- bulk


def bulk_index(
    backend: SearchBackend,
    index: str,
    batches: Iterable[list[Action]],
    *,
    chunk_docs: int = 2_000,
    threads: int = 2,
    max_retries: int = 5,
    initial_backoff: float = 0.5,
    timeout: float = 120.0,
) -> int:
    """Index every item of ``batches`` into ``index``; returns the number indexed.

    Each batch is cut into ``_bulk`` requests of ``chunk_docs`` documents; up to
    ``threads`` requests run at once, each through the backend's bulk helper (429
    rejections retried ``max_retries`` times, back-off doubling from
    ``initial_backoff`` s). Raises :class:`SearchError` on any document that still
    failed, with the first reasons.
    """

    def send(chunk: list[Action]) -> tuple[int, list[dict[str, Any]]]:
        return backend.bulk(
            index, chunk, max_retries=max_retries, initial_backoff=initial_backoff, timeout=timeout
        )

    def chunks() -> Iterator[list[Action]]:
        for batch in batches:
            for start in range(0, len(batch), chunk_docs):
                yield batch[start : start + chunk_docs]

    indexed, failures = 0, []
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="bulk") as pool:
        pending: set[Future[tuple[int, list[dict[str, Any]]]]] = set()

        def collect(done: set[Future[tuple[int, list[dict[str, Any]]]]]) -> None:
            nonlocal indexed
            for fut in done:
                ok, failed = fut.result()
                indexed += ok
                failures.extend(failed)

        for chunk in chunks():
            # At most 2 requests queued per thread: bounded memory, threads never idle.
            if len(pending) >= 2 * max(1, threads):
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                collect(done)
            pending.add(pool.submit(send, chunk))
        collect(wait(pending).done)
    if failures:
        first = [json.dumps(f, default=str)[:300] for f in failures[:3]]
        raise SearchError(
            f"{len(failures):,} document(s) failed to index into {index}: " + "; ".join(first)
        )
    return indexed


# ----------------------------------------------------------------------------- hashing


def _sha(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def table_sha256(table: pa.Table) -> str:
    """Content hash of an Arrow table (its IPC stream)."""
    sink = io.BytesIO()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue()).hexdigest()


def fingerprints(
    checksum: str | dict[str, str], instruments: pa.Table, daily_files: list[Path]
) -> dict[str, str]:
    """The content hash of each dataset, as recorded in its index ``_meta``.

    ``checksum`` is the gold checksums dict of the run (path -> SHA-256, as
    ``pipeline.gold_checksums``) or one string for all of gold. The instruments are
    hashed from their content (they are not only gold); the quarterly documents
    embed instrument fields, so their hash covers the instruments too.
    """
    inst = table_sha256(instruments)
    if isinstance(checksum, dict):
        items = sorted(checksum.items())
        daily = [f"{k}={v}" for k, v in items if "daily_features" in k]
        quarterly = [f"{k}={v}" for k, v in items if "quarterly_features" in k]
        everything = [f"{k}={v}" for k, v in items]
        daily_part = "\n".join(daily or everything)
        quarterly_part = "\n".join(quarterly or everything)
    else:
        daily_part = quarterly_part = str(checksum)
    # Which files are loaded matters too (a caller may pass a subset).
    names = "\n".join(sorted(p.as_posix().rsplit("/", 2)[-2] for p in daily_files))
    v = f"template-v{TEMPLATE_VERSION}"
    return {
        INSTRUMENTS.name: _sha(v, INSTRUMENTS.name, inst),
        QUARTERLY.name: _sha(v, QUARTERLY.name, quarterly_part, inst),
        DAILY_BARS.name: _sha(v, DAILY_BARS.name, daily_part, names),
    }


# ----------------------------------------------------------------------------- indices


def ensure_templates(backend: SearchBackend, prefix: str = "stockbatch", replicas: int = 0) -> None:
    """Create or update the index template of every dataset (idempotent)."""
    for ds in DATASETS:
        backend.put_index_template(ds.alias(prefix), ds.template(prefix, replicas))


def index_meta(backend: SearchBackend, index: str) -> dict[str, Any]:
    """stockbatch's record in the mapping ``_meta`` of ``index`` ({} if none)."""
    meta = backend.mapping(index).get("_meta", {})
    record = meta.get(META_KEY, {}) if isinstance(meta, dict) else {}
    return record if isinstance(record, dict) else {}


def _unchanged(backend: SearchBackend, live: list[str], fingerprint: str) -> tuple[str, int] | None:
    if len(live) != 1:
        return None
    meta = index_meta(backend, live[0])
    if meta.get("fingerprint") != fingerprint:
        return None
    count = backend.count(live[0])
    # A hash match on an index that lost documents (manual deletes) is not "unchanged".
    return (live[0], count) if count == meta.get("docs") else None


def _load_dataset(
    backend: SearchBackend,
    ds: Dataset,
    parts: list[Part],
    *,
    prefix: str,
    run_id: str,
    fingerprint: str,
    expected: int | None,
    replicas: int,
    keep_previous: bool,
    chunk_docs: int,
    threads: int,
    max_retries: int,
    timeout: float,
    record: Path | None = None,
    full: bool = False,
) -> IndexLoadStats:
    """Unchanged: skip. Otherwise an in-place update when ``record`` describes the live
    index (and not ``full``), else a fresh index, filled and checked, then the alias
    swap. ``record``: where what the live index holds is kept (None: no updates)."""
    started = time.perf_counter()
    alias = ds.alias(prefix)
    live = backend.alias_targets(alias)
    same = _unchanged(backend, live, fingerprint)
    if same is not None:
        return IndexLoadStats(
            alias=alias,
            index=same[0],
            docs=same[1],
            skipped_unchanged=True,
            seconds=time.perf_counter() - started,
        )
    bulk = {"chunk_docs": chunk_docs, "threads": threads, "max_retries": max_retries}
    if record is not None and not full and len(live) == 1:
        loaded = upsert.read_loaded(record)
        meta = index_meta(backend, live[0])
        if (
            loaded is not None
            and meta.get("template_version") == TEMPLATE_VERSION
            and loaded.usable_for(live[0], meta, backend.count(live[0]))
        ):
            try:
                stats = _update_in_place(
                    backend, live[0], loaded, parts, fingerprint, run_id, timeout, **bulk
                )
            except SearchUnavailable:
                raise
            except SearchError as exc:
                # The index is not what the record says: rebuild it (below), which also
                # replaces whatever the update left half done.
                log.warning("in-place update of %s failed, rebuilding: %s", live[0], exc)
                upsert.forget(record)
            else:
                upsert.write_loaded(record, stats[1])
                return IndexLoadStats(
                    alias=alias,
                    index=live[0],
                    docs=stats[1].docs.height,
                    docs_indexed=stats[0][0],
                    docs_deleted=stats[0][1],
                    updated_in_place=True,
                    seconds=time.perf_counter() - started,
                )
    if record is not None:
        upsert.forget(record)  # about to describe another index
    hashes: list[pl.DataFrame] = []

    def batches() -> Iterator[list[Action]]:
        for part in parts:
            docs = part.docs()
            hashes.append(upsert.doc_hashes(part.key, docs))
            yield _pairs(docs)

    index, meta = _fresh_index(backend, ds, prefix, run_id, fingerprint, live)
    try:
        indexed = bulk_index(backend, index, batches(), timeout=max(timeout, 60.0), **bulk)
        count = _ready_to_serve(backend, index, meta, indexed, expected, replicas, timeout)
    except BaseException:
        # Never leave a half-loaded index behind (the alias still points at the old one).
        with contextlib.suppress(SearchError):  # the original error matters more
            backend.delete_indices([index])
        raise
    previous, deleted = _swap_alias(backend, ds.pattern(prefix), alias, index, live, keep_previous)
    if record is not None:
        docs = pl.concat(hashes) if hashes else pl.DataFrame(schema=upsert.ID_HASH_SCHEMA)
        parts_now = {p.key: p.checksum for p in parts}
        upsert.write_loaded(record, upsert.Loaded(index, fingerprint, parts_now, docs))
    return IndexLoadStats(
        alias=alias,
        index=index,
        docs=count,
        docs_indexed=indexed,
        previous=previous,
        deleted=deleted,
        seconds=time.perf_counter() - started,
    )


def _update_in_place(
    backend: SearchBackend,
    index: str,
    loaded: upsert.Loaded,
    parts: list[Part],
    fingerprint: str,
    run_id: str,
    timeout: float,
    **bulk: Any,
) -> tuple[tuple[int, int], upsert.Loaded]:
    """Upsert the changed documents and delete the gone ones in ``index``; returns
    ((upserted, deleted), the new record). :class:`SearchError` when the count after
    does not match (the caller rebuilds)."""
    unchanged = [p.key for p in parts if loaded.parts.get(p.key) == p.checksum]
    changed = {p.key: p.docs() for p in parts if loaded.parts.get(p.key) != p.checksum}
    change = upsert.diff(loaded, unchanged, changed)
    batches = [_pairs(f) for f in change.upserts]
    if change.deletes.len():
        batches.append(_deletes(change.deletes))
    bulk_index(backend, index, batches, timeout=max(timeout, 60.0), **bulk)
    backend.refresh(index, timeout=max(timeout, 60.0))
    count = backend.count(index)
    if count != change.docs.height:
        raise SearchError(
            f"{index} holds {count:,} documents after the update; expected {change.docs.height:,}"
        )
    meta = {
        "fingerprint": fingerprint,
        "run_id": run_id,
        "template_version": TEMPLATE_VERSION,
        "docs": count,
        "loaded_at": _now(),
        "updated_in_place": True,
    }
    backend.put_mapping_meta(index, {META_KEY: meta})
    parts_now = {p.key: p.checksum for p in parts}
    return (change.upserted, change.deletes.len()), upsert.Loaded(
        index, fingerprint, parts_now, change.docs
    )


def _fresh_index(
    backend: SearchBackend,
    ds: Dataset,
    prefix: str,
    run_id: str,
    fingerprint: str,
    live: list[str],
) -> tuple[str, dict[str, Any]]:
    """Create the index this load fills, with bulk-load settings; returns it and its meta."""
    index = ds.index_name(prefix, run_id, fingerprint)
    if backend.index_exists(index):
        if index in live:
            # Same run, same content, but the recorded count disagreed: rebuild under a
            # new name so the alias never points at an index being reloaded.
            index = f"{index}-{int(time.time())}"
        else:
            backend.delete_indices([index])  # leftover of an interrupted load
    meta = {"fingerprint": fingerprint, "run_id": run_id, "template_version": TEMPLATE_VERSION}
    backend.create_index(
        index,
        # Bulk-load settings, all restored below: no refresh (segments are flushed once
        # at the end, not every second), no replicas (nothing to copy twice), and an
        # asynchronous translog (no fsync per request: a crash mid-load loses nothing
        # that matters, since the alias still points at the old index and the load is
        # rerun from gold).
        settings={"index": LOAD_SETTINGS},
        mappings={"_meta": {META_KEY: meta}},
    )
    return index, meta


def _ready_to_serve(
    backend: SearchBackend,
    index: str,
    meta: dict[str, Any],
    indexed: int,
    expected: int | None,
    replicas: int,
    timeout: float,
) -> int:
    """Serving settings, refresh, count check, meta with the count, health; the count."""
    backend.put_settings(index, {**SERVE_SETTINGS, "number_of_replicas": replicas})
    backend.refresh(index, timeout=max(timeout, 60.0))
    count = backend.count(index)
    if count != indexed or (expected is not None and count != expected):
        raise SearchError(
            f"{index} holds {count:,} documents after the load; expected "
            f"{expected if expected is not None else indexed:,}"
        )
    backend.put_mapping_meta(index, {META_KEY: {**meta, "docs": count, "loaded_at": _now()}})
    backend.wait_yellow(index, int(max(timeout, 30)))
    return count


def _swap_alias(
    backend: SearchBackend,
    pattern: str,
    alias: str,
    index: str,
    live: list[str],
    keep_previous: bool,
) -> tuple[str | None, list[str]]:
    """Point the alias at ``index`` atomically; delete all but it and the previous one."""
    actions: list[dict[str, Any]] = [{"remove": {"index": old, "alias": alias}} for old in live]
    actions.append({"add": {"index": index, "alias": alias}})
    backend.update_aliases(actions)
    previous = live[0] if len(live) == 1 else None
    keep = {index, *([previous] if keep_previous and previous else [])}
    deleted = [name for name in backend.list_indices(pattern) if name not in keep]
    backend.delete_indices(deleted)
    return previous, deleted


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _daily_parts(daily_files: list[Path], checksum: str | dict[str, str]) -> list[Part]:
    """One part per gold daily file, keyed ``bucket=../part-..``, with its gold checksum
    (its size and mtime when the caller has none for it)."""
    known: dict[str, str] = {}
    if isinstance(checksum, dict):
        known = {"/".join(Path(k).parts[-2:]): v for k, v in checksum.items()}
    parts = []
    for path in daily_files:
        key = "/".join(path.parts[-2:])
        if isinstance(checksum, str):
            value = f"{checksum}|{key}"
        else:
            st = path.stat()
            value = known.get(key) or f"{st.st_size}:{st.st_mtime_ns}"
        parts.append(Part(key, value, partial(daily_docs, path)))
    return parts


def load_options(search: SearchSettings) -> dict[str, Any]:
    """The keyword options of :func:`sync_search` that ``settings.search`` sets."""
    return {
        "prefix": search.index_prefix,
        "replicas": search.replicas,
        "keep_previous": search.keep_previous,
        "chunk_docs": search.bulk_docs,
        "threads": search.bulk_threads,
        "max_retries": search.max_retries,
        "timeout": search.timeout_s,
    }


def sync_search(
    backend: SearchBackend,
    *,
    instruments: pa.Table,
    quarterly: pa.Table,
    daily_files: list[Path],
    run_id: str,
    checksum: str | dict[str, str],
    prefix: str = "stockbatch",
    replicas: int = 0,
    keep_previous: bool = True,
    chunk_docs: int = 2_000,
    threads: int = 2,
    max_retries: int = 5,
    timeout: float = 30.0,
    state_dir: Path | None = None,
    full: bool = False,
) -> SearchLoadStats:
    """Make the three search aliases serve this gold (see the module doc).

    ``instruments`` follows :data:`stockbatch.schema.INSTRUMENTS`, ``quarterly``
    :data:`stockbatch.schema.QUARTERLY_FEATURES`; ``daily_files`` are the gold
    ``daily_features`` Parquet files (read one at a time: bounded memory).
    ``checksum`` identifies the gold content (``pipeline.gold_checksums``): a
    dataset whose hash equals the live index's is skipped. Raises
    :class:`SearchUnavailable` when the node cannot be reached and
    :class:`SearchError` when documents are rejected; in both cases every alias
    still points at a complete index (the old one, or the live one partly updated in
    place, which the next sync finishes). ``state_dir``: where the records of what
    each live index holds are kept (enables in-place updates); ``full``: rebuild every
    changed dataset.
    """
    started = time.perf_counter()
    stats = SearchLoadStats(run_id=run_id)
    prints = fingerprints(checksum, instruments, daily_files)
    daily_rows = sum(pl.scan_parquet(p).select(pl.len()).collect().item() for p in daily_files)
    plan: list[tuple[Dataset, list[Part], int]] = [
        (
            INSTRUMENTS,
            [
                Part(
                    INSTRUMENTS.name,
                    prints[INSTRUMENTS.name],
                    partial(instrument_docs, instruments),
                )
            ],
            instruments.num_rows,
        ),
        (
            QUARTERLY,
            [
                Part(
                    QUARTERLY.name,
                    prints[QUARTERLY.name],
                    partial(quarterly_docs, quarterly, instruments),
                )
            ],
            quarterly.num_rows,
        ),
        (DAILY_BARS, _daily_parts(daily_files, checksum), daily_rows),
    ]
    ensure_templates(backend, prefix, replicas)
    for ds, parts, expected in plan:
        stats.indices[ds.name] = _load_dataset(
            backend,
            ds,
            parts,
            prefix=prefix,
            run_id=run_id,
            fingerprint=prints[ds.name],
            expected=expected,
            replicas=replicas,
            keep_previous=keep_previous,
            chunk_docs=chunk_docs,
            threads=threads,
            max_retries=max_retries,
            timeout=timeout,
            record=state_dir / f"{ds.alias(prefix)}.parquet" if state_dir else None,
            full=full,
        )
    stats.seconds = time.perf_counter() - started
    return stats
