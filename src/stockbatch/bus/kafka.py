"""Kafka transport: the producer service and the bounded batch collector.

Producer (``UnitPublisher``, used by ``pipeline.ingest`` when ``transport=kafka``)
    Idempotent (``enable.idempotence``), ``acks=all``, compressed, batched; the
    topic is created if missing. Every unit becomes ``codec.encode_unit``
    records keyed by symbol. Every delivery report is checked: one failed
    delivery, a fatal producer error, or a message still unconfirmed when the
    final flush times out fails the run, never a silent drop. Units are
    remembered (``bronze/_kafka/published.parquet``, per cluster id and topic)
    only after the whole run was confirmed, so a rerun skips exactly the units
    a successful run delivered.

Collector (``collect_to_bronze``, used by ``pipeline.collect``)
    Joins the consumer group, and for each partition it is assigned reads the
    committed offset (start) and the high watermark (end) *at assignment*,
    consumes ``[start, end)`` and nothing more, decodes, writes bronze Parquet
    atomically, and only then commits ``end`` synchronously. Undecodable
    records go to the dead-letter topic (original key, value and headers plus
    ``dlq-reason`` / ``dlq-error`` / source coordinates) and are counted;
    the dead-letter produce is confirmed before the commit, so none is lost.

Exactly once into bronze, across crashes
    The committed offset is the only authority on what bronze holds:

    1. A bronze file written from Kafka is named after the partition and the
       offset range it holds: ``bronze/bars/batch=kafka-<topic>/bucket=NNN/
       part-p<PPP>-<start>-<end>.parquet`` (start, end = 12-digit offsets).
    2. Order per flush: files (atomic temp + rename) -> ledger
       (``bronze/_kafka/ledger.parquet``: one row per record taken, with its
       unit and part) and catalog -> synchronous offset commit.
    3. When a partition is assigned, before consuming, the collector
       *reconciles* it: every file of that partition whose range starts at or
       after the committed offset, and every ledger row at or after it, is left
       over from a collector that died before its commit (a crash during the
       write or between the write and the commit), so it is deleted; those
       records are then consumed again and written again. Files below the
       committed offset were committed and are kept. Hence a crash at any point
       leaves bronze with each record's rows exactly once after the rerun.
    4. A unit (one source file) becomes active in the bronze catalog only when
       the ledger holds all ``n`` of its parts, so half a unit (a producer that
       died mid-file) is never processed; units may span flushes and runs.
       A part seen twice (same run, unit and part: only possible if a producer
       duplicated a record) is counted and skipped.
    Rebalances: the collector writes and commits without polling in between,
    and librdkafka only hands partitions over inside a poll, so a partition is
    never written by two collectors for the same uncommitted range; records
    buffered for a partition that is revoked are dropped unwritten (the new
    owner reads them from the committed offset). A commit that fails anyway
    (the member was evicted) rolls back this flush's files and fails the run.

Test hook: ``STOCKBATCH_TEST_CRASH_AT`` is read only by ``_test_crash_point``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from stockbatch import lake, schema
from stockbatch.bus import TransportError, codec
from stockbatch.lake import bronze
from stockbatch.lake.layout import with_buckets
from stockbatch.settings import KafkaSettings, Settings

log = logging.getLogger("stockbatch.kafka")
rdkafka_log = logging.getLogger("stockbatch.kafka.librdkafka")
# librdkafka reports transient trouble (a broker restarting, a reconnect) as log
# lines; the outcome reaches the user as one clear error, so these go to logging
# only (an application that configures logging still sees them), never to stderr.
rdkafka_log.addHandler(logging.NullHandler())

PRODUCER_BATCH_BYTES = 1_000_000
"""librdkafka ``batch.size``: one producer batch fills up to the default 1 MB
record-batch limit of the broker, so a full batch is one request."""

QUEUE_MAX_KBYTES = 256 * 1024
"""The producer's in-memory queue bound: a faster reader than the broker blocks
on this instead of growing memory without limit."""

SESSION_TIMEOUT_MS = 10_000
"""Consumer group session timeout of the collector (the broker's minimum is 6 s)."""

_REBALANCE_ERRORS = frozenset(
    {27, 22, 25, 82, -142}  # REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID,
)  # FENCED_INSTANCE_ID, _ASSIGNMENT_LOST (librdkafka codes; confluent_kafka is imported lazily)

DLQ_REASON = "dlq-reason"
DLQ_ERROR = "dlq-error"


# ----------------------------------------------------------------------------- settings


def effective_kafka(settings: Settings) -> KafkaSettings:
    """The Kafka settings to use: explicit settings win, else what ``services up`` recorded.

    Raises ``TransportError`` telling the user what to do when neither names a broker.
    """
    from stockbatch.services.endpoints import effective_kafka_settings

    try:
        k = effective_kafka_settings(settings)
    except RuntimeError as exc:  # ServiceError: an unreadable services.json
        raise TransportError(str(exc)) from None
    if not k.bootstrap_servers:
        raise TransportError(
            "transport=kafka but no Kafka broker is configured: run `stockbatch services up "
            f"kafka` (it records the broker under STOCKBATCH_HOME={settings.home}), or set "
            "STOCKBATCH_KAFKA__BOOTSTRAP_SERVERS=host:port (an existing cluster)."
        )
    return k


def client_config(k: KafkaSettings) -> dict[str, Any]:
    """librdkafka settings shared by every client: brokers, security, logging."""
    assert k.bootstrap_servers, "resolve with effective_kafka() first"
    conf: dict[str, Any] = {
        "bootstrap.servers": k.bootstrap_servers,
        "security.protocol": k.security_protocol,
        # Route librdkafka's own log lines into Python logging (served by poll)
        # instead of printing them on stderr in the middle of progress bars.
        "logger": rdkafka_log,
        "socket.connection.setup.timeout.ms": max(1000, int(k.timeout_s * 1000)),
    }
    if k.security_protocol.startswith("SASL"):
        conf["sasl.mechanism"] = k.sasl_mechanism
        if k.sasl_username is not None:
            conf["sasl.username"] = k.sasl_username
        if k.sasl_password is not None:
            conf["sasl.password"] = k.sasl_password.get_secret_value()
    if k.ssl_cafile is not None:
        conf["ssl.ca.location"] = str(k.ssl_cafile)
    if k.ssl_certfile is not None:
        conf["ssl.certificate.location"] = str(k.ssl_certfile)
    if k.ssl_keyfile is not None:
        conf["ssl.key.location"] = str(k.ssl_keyfile)
    return conf


class _ClientErrors:
    """Collects librdkafka's client-level errors (``error_cb``) for clear messages."""

    def __init__(self) -> None:
        self.last: Any = None
        self.fatal: Any = None
        self.auth: Any = None

    def __call__(self, err: Any) -> None:
        from confluent_kafka import KafkaError

        self.last = err
        if err.fatal():
            self.fatal = err
        if err.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
            self.auth = err
        log.debug("kafka client error: %s", err)

    def describe(self) -> str:
        err = self.auth or self.fatal or self.last
        return f": {err.str()}" if err is not None else ""


def _connect(admin: Any, k: KafkaSettings, errors: _ClientErrors) -> Any:
    """Cluster metadata, or a ``TransportError`` within ``k.timeout_s`` saying why not."""
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + k.timeout_s
    while True:
        remaining = deadline - time.monotonic()
        try:
            return admin.list_topics(timeout=max(0.1, min(1.0, remaining)))
        except KafkaException as exc:
            admin.poll(0)  # serves error_cb: an authentication failure is reported there
            if errors.auth is not None:
                raise TransportError(
                    f"Kafka at {k.bootstrap_servers} refused the credentials "
                    f"({k.security_protocol}/{k.sasl_mechanism}, user {k.sasl_username!r})"
                    f"{errors.describe()}. Check STOCKBATCH_KAFKA__SASL_USERNAME and "
                    "STOCKBATCH_KAFKA__SASL_PASSWORD."
                ) from None
            if time.monotonic() >= deadline:
                raise TransportError(
                    f"cannot reach the Kafka broker at {k.bootstrap_servers} within "
                    f"{k.timeout_s:g}s{errors.describe() or f' ({exc})'}. Start the local one "
                    "with `stockbatch services up kafka`, or point "
                    "STOCKBATCH_KAFKA__BOOTSTRAP_SERVERS at a running cluster."
                ) from None


def _ensure_topic(admin: Any, metadata: Any, topic: str, partitions: int, replicas: int) -> None:
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    if topic in metadata.topics and metadata.topics[topic].error is None:
        return
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=replicas)],
        operation_timeout=10,
    )
    try:
        futures[topic].result(timeout=30)
    except KafkaException as exc:
        err = exc.args[0]
        if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise TransportError(f"cannot create Kafka topic {topic!r}: {err.str()}") from None


def _test_crash_point(name: str) -> None:
    """Test hook: SIGKILL this process at the named point when the test asks for it.

    The fault tests set ``STOCKBATCH_TEST_CRASH_AT=<name>[:<n>]`` (the n-th time
    the point is reached, default the first) in a collector subprocess; this is
    the only place that variable is read. Points: ``during_write`` (some files
    of a flush renamed into place, the rest not), ``after_write`` (all files,
    the ledger and the catalog written; offsets not committed).
    """
    wanted = os.environ.get("STOCKBATCH_TEST_CRASH_AT")
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _CRASH_COUNTS[name] = _CRASH_COUNTS.get(name, 0) + 1
    if _CRASH_COUNTS[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


_CRASH_COUNTS: dict[str, int] = {}


# ----------------------------------------------------------------------------- producer


@dataclass
class ProduceStats:
    """What one ingest run put on the topic (confirmed by delivery reports)."""

    topic: str
    bootstrap_servers: str
    cluster_id: str | None = None
    messages: int = 0
    delivered: int = 0
    value_bytes: int = 0
    rows: int = 0
    partitions: dict[int, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Manifest form."""
        return {
            "topic": self.topic,
            "bootstrap_servers": self.bootstrap_servers,
            "cluster_id": self.cluster_id,
            "messages": self.messages,
            "delivered": self.delivered,
            "value_bytes": self.value_bytes,
            "rows": self.rows,
            "partitions": {str(p): v for p, v in sorted(self.partitions.items())},
        }


def producer_config(k: KafkaSettings, errors: _ClientErrors) -> dict[str, Any]:
    """The producer's librdkafka settings (delivery guarantees, batching, compression)."""
    return {
        **client_config(k),
        "client.id": "stockbatch-ingest",
        "enable.idempotence": True,  # no duplicates or reordering from internal retries
        "acks": "all",
        "compression.type": k.compression,
        "linger.ms": k.linger_ms,
        "batch.size": PRODUCER_BATCH_BYTES,
        "queue.buffering.max.kbytes": QUEUE_MAX_KBYTES,
        # A record still unconfirmed after timeout_s fails its delivery report, which
        # fails the run: a broker that is down for good never hangs an ingest.
        "message.timeout.ms": int(k.timeout_s * 1000),
        "error_cb": errors,
    }


class BarProducer:
    """Publishes encoded records with every delivery report checked."""

    def __init__(self, k: KafkaSettings, *, topic: str | None = None) -> None:
        from confluent_kafka import Producer
        from confluent_kafka.admin import AdminClient

        self.k = k
        self.topic = topic or k.topic
        self.errors = _ClientErrors()
        admin_conf: dict[str, Any] = {**client_config(k), "error_cb": self.errors}
        admin = AdminClient(admin_conf)
        metadata = _connect(admin, k, self.errors)
        _ensure_topic(admin, metadata, self.topic, k.partitions, k.replication_factor)
        self.stats = ProduceStats(self.topic, k.bootstrap_servers or "", metadata.cluster_id)
        self.failures: list[str] = []
        self.failed = 0
        self._lock = threading.Lock()
        self.producer = Producer(producer_config(k, self.errors))

    def _on_delivery(self, err: Any, msg: Any) -> None:
        # Served by poll()/flush() on this thread; the lock only guards against a
        # future caller polling from elsewhere.
        with self._lock:
            if err is not None:
                self.failed += 1
                if len(self.failures) < 5:
                    self.failures.append(f"{msg.key()!r} -> {msg.topic()}: {err.str()}")
                return
            self.stats.delivered += 1
            if msg.offset() is None or msg.offset() < 0:
                return  # delivered, but the client reported no offset: no range to widen
            p = self.stats.partitions.setdefault(
                msg.partition(), {"first_offset": msg.offset(), "last_offset": msg.offset()}
            )
            p["first_offset"] = min(p["first_offset"], msg.offset())
            p["last_offset"] = max(p["last_offset"], msg.offset())

    def _check(self) -> None:
        if self.errors.fatal is not None:
            raise TransportError(
                f"the Kafka producer hit a fatal error: {self.errors.fatal.str()}; "
                "the run stops (records already sent are collected, a rerun republishes "
                "the rest)."
            )
        if self.failed:
            raise TransportError(
                f"{self.failed} Kafka deliveries failed (e.g. {self.failures[0]}); "
                f"the run fails rather than lose rows. Is the broker at "
                f"{self.k.bootstrap_servers} up? Rerun the ingest once it is."
            )

    def send(self, env: codec.Envelope) -> None:
        """Queue one record (blocking while the bounded queue is full)."""
        self._check()
        headers: list[tuple[str, str | bytes | None]] = list(env.headers)
        while True:
            try:
                self.producer.produce(
                    self.topic,
                    value=env.value,
                    key=env.key,
                    headers=headers,
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:
                self.producer.poll(0.05)
                self._check()
        self.stats.messages += 1
        self.stats.value_bytes += len(env.value)
        self.stats.rows += env.rows
        self.producer.poll(0)

    def close(self) -> ProduceStats:
        """Flush and verify: every record produced was confirmed, or ``TransportError``."""
        outstanding = self.producer.flush(self.k.timeout_s + 5)
        self._check()
        if outstanding:
            raise TransportError(
                f"{outstanding} of {self.stats.messages} Kafka records were not confirmed "
                f"within {self.k.timeout_s:g}s of the end of the ingest; the run fails "
                "rather than report rows it cannot vouch for. Rerun once the broker is healthy."
            )
        if self.stats.delivered != self.stats.messages:  # pragma: no cover - librdkafka bug
            raise TransportError(
                f"produced {self.stats.messages} records but {self.stats.delivered} "
                "delivery reports arrived; the run fails."
            )
        return self.stats

    def abort(self) -> None:
        """Drop what is still queued (the run already failed)."""
        try:
            self.producer.purge(in_queue=True, in_flight=False)
            self.producer.flush(1)
        except Exception:  # pragma: no cover - best effort on an error path
            log.debug("purge after failure failed", exc_info=True)


# ----------------------------------------------------------------------------- publisher (ingest)

_PUBLISHED_SCHEMA = pa.schema(
    [
        ("cluster_id", pa.string()),
        ("topic", pa.string()),
        ("source", pa.string()),
        ("ref", pa.string()),
        ("sha256", pa.string()),
        ("run_id", pa.string()),
        ("messages", pa.int64()),
        ("rows", pa.int64()),
        ("published_at", pa.string()),
    ]
)


def _kafka_state_dir(settings: Settings) -> Path:
    return lake.layout(settings).kafka_books


def _published_path(settings: Settings) -> Path:
    return _kafka_state_dir(settings) / "published.parquet"


class UnitPublisher:
    """The ingest side of the Kafka transport: one instance per ingest run."""

    def __init__(self, settings: Settings, run_id: str) -> None:
        self.settings = settings
        self.k = effective_kafka(settings)
        self.run_id = run_id
        self.producer = BarProducer(self.k)
        self.entries: list[dict[str, Any]] = []

    @property
    def stats(self) -> ProduceStats:
        """Counts so far."""
        return self.producer.stats

    def published(self) -> dict[tuple[str, str], str]:
        """(source, ref) -> sha256 of units a successful run delivered to this cluster and topic."""
        path = _published_path(self.settings)
        if not path.exists():
            return {}
        df = (
            pl.read_parquet(path)
            .filter(
                (pl.col("cluster_id") == (self.stats.cluster_id or ""))
                & (pl.col("topic") == self.producer.topic)
            )
            .sort("run_id")
            .group_by(["source", "ref"], maintain_order=True)
            .last()
        )
        return {(r["source"], r["ref"]): r["sha256"] for r in df.iter_rows(named=True)}

    def publish_unit(self, source: str, ref: str, sha256: str, table: pa.Table) -> int:
        """Publish one unit's rows (an empty unit as one empty record); returns records sent."""
        envelopes = codec.encode_unit(
            table,
            ingest_run_id=self.run_id,
            source=source,
            source_file=ref,
            unit_sha256=sha256,
            batch_rows=self.k.batch_rows,
        )
        if not envelopes:  # an empty file: one empty part, so the collector lists it too
            envelopes = [
                codec.encode_bars(
                    table,
                    symbol=ref,
                    ingest_run_id=self.run_id,
                    source=source,
                    source_file=ref,
                    unit_sha256=sha256,
                    part=0,
                    parts=1,
                )
            ]
        for env in envelopes:
            self.producer.send(env)
        self.entries.append(
            {
                "cluster_id": self.stats.cluster_id or "",
                "topic": self.producer.topic,
                "source": source,
                "ref": ref,
                "sha256": sha256,
                "run_id": self.run_id,
                "messages": len(envelopes),
                "rows": table.num_rows,
                "published_at": dt.datetime.now(dt.UTC).isoformat(),
            }
        )
        return len(envelopes)

    def publish_instruments(self, source: str, table: pa.Table) -> None:
        """Publish a source's instrument metadata."""
        self.producer.send(
            codec.encode_instruments(table, ingest_run_id=self.run_id, source=source)
        )

    def finish(self) -> ProduceStats:
        """Confirm every delivery, then remember the units (never before)."""
        stats = self.producer.close()
        if self.entries:
            path = _published_path(self.settings)
            new = pl.DataFrame(self.entries, schema=pl.Schema(_PUBLISHED_SCHEMA))
            with bronze.lock(self.settings):
                old = pl.read_parquet(path) if path.exists() else None
                merged = pl.concat([old, new]) if old is not None else new
                lake.write_parquet_atomic(merged.to_arrow(), path)
        return stats

    def abort(self) -> None:
        """The run failed: drop what is still queued."""
        self.producer.abort()


# ----------------------------------------------------------------------------- collector

_LEDGER_SCHEMA = pa.schema(
    [
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("ingest_run_id", pa.string()),
        ("source", pa.string()),
        ("ref", pa.string()),
        ("sha256", pa.string()),
        ("part", pa.int32()),
        ("parts", pa.int32()),
        ("rows", pa.int64()),
    ]
)
_BRONZE_POLARS = pl.Schema(schema.BRONZE_BARS)
"""Bronze as Polars types (what ``lake.conform`` computes, without its pandas import)."""
_FILE_RE = re.compile(r"^part-p(\d+)-(\d{12})-(\d{12})\.parquet$")


def _topic_slug(topic: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", topic)


@dataclass
class CollectStats:
    """What one collector took from Kafka into bronze."""

    run_id: str
    topic: str
    group: str
    bootstrap_servers: str = ""
    dead_letter_topic: str = ""
    partitions: dict[int, dict[str, int]] = field(default_factory=dict)
    messages: int = 0
    rows: int = 0
    value_bytes: int = 0
    units_activated: int = 0
    dead_lettered: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    duplicates_skipped: int = 0
    instruments: int = 0
    files: list[str] = field(default_factory=list)
    reconciled_files: int = 0
    flushes: int = 0
    notes: list[str] = field(default_factory=list)

    def add_range(self, partition: int, start: int, end: int) -> None:
        """Record a committed ``[start, end)`` of one partition (ranges of a run are contiguous)."""
        r = self.partitions.setdefault(partition, {"start": start, "end": end})
        r["start"] = min(r["start"], start)
        r["end"] = max(r["end"], end)

    def to_dict(self) -> dict[str, Any]:
        """Manifest form (offset ranges: start inclusive, end exclusive)."""
        return {
            "topic": self.topic,
            "group": self.group,
            "bootstrap_servers": self.bootstrap_servers,
            "offsets": {str(p): r for p, r in sorted(self.partitions.items())},
            "messages": self.messages,
            "rows": self.rows,
            "value_bytes": self.value_bytes,
            "units_activated": self.units_activated,
            "dead_lettered": self.dead_lettered,
            "dead_letter_topic": self.dead_letter_topic,
            "dead_letter_reasons": self.dead_letter_reasons,
            "duplicates_skipped": self.duplicates_skipped,
            "instruments": self.instruments,
            "files": len(self.files),
            "reconciled_files": self.reconciled_files,
            "flushes": self.flushes,
            "notes": self.notes,
        }


@dataclass
class _Taken:
    """One record taken from a partition: decoded, or None when it was dead-lettered."""

    offset: int
    message: codec.Message | None
    value_bytes: int


@dataclass
class _PartitionState:
    start: int  # committed offset = first offset of the uncommitted range
    end: int  # high watermark read at assignment: the bound of this batch
    next: int  # next offset to take
    taken: list[_Taken] = field(default_factory=list)
    rows: int = 0


class BronzeSink:
    """Writes collected records into the bronze layer (files, ledger, catalog)."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self.root = lake.layout(settings).bronze_batch(f"kafka-{_topic_slug(topic)}")
        self.ledger_path = _kafka_state_dir(settings) / "ledger.parquet"
        self.bucket_of: dict[str, int] = {}

    def _files_of(self, partition: int) -> list[tuple[Path, int, int]]:
        out = []
        for p in self.root.glob(f"bucket=*/part-p{partition:03d}-*.parquet"):
            m = _FILE_RE.match(p.name)
            if m:
                out.append((p, int(m.group(2)), int(m.group(3))))
        return out

    def _read_ledger(self) -> pl.DataFrame:
        if not self.ledger_path.exists():
            return pl.DataFrame(schema=pl.Schema(_LEDGER_SCHEMA))  # (empty_table imports pandas)
        return pl.read_parquet(self.ledger_path)

    def reconcile(self, partition: int, committed: int) -> int:
        """Delete what a dead collector wrote for ``partition`` at or after ``committed``."""
        removed = 0
        with bronze.lock(self.settings):
            for path, start, _end in self._files_of(partition):
                if start >= committed:
                    path.unlink(missing_ok=True)
                    removed += 1
            ledger = self._read_ledger()
            stale = (
                (pl.col("topic") == self.topic)
                & (pl.col("partition") == partition)
                & (pl.col("offset") >= committed)
            )
            if len(ledger) and ledger.select(stale.any()).item():
                lake.write_parquet_atomic(ledger.filter(~stale).to_arrow(), self.ledger_path)
        if removed:
            log.info(
                "partition %d: removed %d uncommitted bronze files (offset >= %d) left by an "
                "interrupted collector",
                partition,
                removed,
                committed,
            )
        return removed

    def write(self, ranges: dict[int, tuple[int, int, list[_Taken]]], stats: CollectStats) -> None:
        """Write one flush: per partition and bucket one file, then ledger and catalog."""
        with bronze.lock(self.settings):
            ledger = self._read_ledger()
        seen = set(
            ledger.select("ingest_run_id", "source", "ref", "part").iter_rows()
            if len(ledger)
            else ()
        )
        ledger_rows: list[dict[str, Any]] = []
        instruments: list[codec.InstrumentsMessage] = []
        tables: dict[int, list[pa.Table]] = defaultdict(list)
        run_ids: dict[int, list[tuple[str, int]]] = defaultdict(list)
        for partition, (_start, _end, taken) in sorted(ranges.items()):
            for t in taken:
                msg = t.message
                if isinstance(msg, codec.InstrumentsMessage):
                    instruments.append(msg)
                    continue
                if not isinstance(msg, codec.BarsMessage):
                    continue
                ident = (msg.ingest_run_id, msg.source, msg.source_file, msg.part)
                if ident in seen:
                    stats.duplicates_skipped += 1
                    continue
                seen.add(ident)
                ledger_rows.append(
                    {
                        "topic": self.topic,
                        "partition": partition,
                        "offset": t.offset,
                        "ingest_run_id": msg.ingest_run_id,
                        "source": msg.source,
                        "ref": msg.source_file,
                        "sha256": msg.unit_sha256,
                        "part": msg.part,
                        "parts": msg.parts,
                        "rows": msg.table.num_rows,
                    }
                )
                if msg.table.num_rows:
                    tables[partition].append(msg.table)
                    run_ids[partition].append((msg.ingest_run_id, msg.table.num_rows))
                stats.rows += msg.table.num_rows
        jobs: list[tuple[Path, pl.DataFrame]] = []
        for partition, parts in sorted(tables.items()):
            start, end, _ = ranges[partition]
            df = pl.from_arrow(pa.concat_tables(parts))
            assert isinstance(df, pl.DataFrame)
            df = df.with_columns(_run_id_column(run_ids[partition]))
            df = with_buckets(df, self.settings.lake.buckets, self.bucket_of)
            for (bucket,), frame in sorted(
                df.partition_by("bucket", as_dict=True, maintain_order=True).items()
            ):
                name = f"part-p{partition:03d}-{start:012d}-{end:012d}.parquet"
                jobs.append((lake.bucket_dir(self.root, int(bucket)) / name, frame))
        for i, (path, frame) in enumerate(jobs):
            lake.write_parquet_atomic(
                frame.select(pl.col(n).cast(t) for n, t in _BRONZE_POLARS.items()),
                path,
                self.settings.lake.compression,
            )
            stats.files.append(str(path.relative_to(self.settings.lake_path)))
            if i == len(jobs) // 2:
                _test_crash_point("during_write")
        with bronze.lock(self.settings):
            if ledger_rows:
                ledger = self._read_ledger()  # re-read: another collector may have appended
                new = pl.DataFrame(ledger_rows, schema=pl.Schema(_LEDGER_SCHEMA))
                ledger = pl.concat([ledger, new]) if len(ledger) else new
                lake.write_parquet_atomic(ledger.to_arrow(), self.ledger_path)
                stats.units_activated += self._activate(ledger, new)
        if instruments:
            with bronze.lock(self.settings):
                for msg in instruments:
                    stats.instruments += bronze.merge_instruments(self.settings, msg.table)

    def _activate(self, ledger: pl.DataFrame, new: pl.DataFrame) -> int:
        """Add catalog entries for units of ``new`` whose parts are now all in the ledger."""
        keys = ["ingest_run_id", "source", "ref", "sha256"]
        touched = new.select(keys).unique()
        complete = (
            ledger.join(touched, on=keys, how="semi")
            .group_by(keys)
            .agg(
                pl.col("part").n_unique().alias("have"),
                pl.col("parts").max().alias("parts"),
                pl.col("rows").sum().alias("rows"),
            )
            .filter(pl.col("have") == pl.col("parts"))
        )
        if complete.is_empty():
            return 0
        now = dt.datetime.now(dt.UTC).isoformat()
        entries = [
            {
                "source": r["source"],
                "ref": r["ref"],
                "sha256": r["sha256"],
                "batch": r["ingest_run_id"],
                "rows": r["rows"],
                "ingested_at": now,
            }
            for r in complete.sort(["ingest_run_id", "ref"]).iter_rows(named=True)
        ]
        return bronze.append_catalog(self.settings, entries, locked=True)

    def rollback(self, files: Iterable[str], partitions: dict[int, int]) -> None:
        """Undo a flush whose commit failed (files and ledger rows; catalog entries are
        re-derived identically when the records are collected again)."""
        for rel in files:
            (self.settings.lake_path / rel).unlink(missing_ok=True)
        for partition, committed in partitions.items():
            self.reconcile(partition, committed)


def _run_id_column(runs: list[tuple[str, int]]) -> pl.Expr | pl.Series:
    """The ``ingest_run_id`` column of rows from consecutive messages ``(run id, rows)``.

    Built in Polars: pyarrow builds arrays from Python values by way of pandas,
    whose import alone costs the collector half a second.
    """
    ids = [rid for rid, _ in runs]
    if len(set(ids)) == 1:
        return pl.lit(ids[0], pl.String).alias("ingest_run_id")
    index = np.repeat(np.arange(len(runs)), [n for _, n in runs])
    return pl.Series("ingest_run_id", ids, pl.String).gather(index)


def _dead_letter(
    producer: Any, dlq_topic: str, msg: Any, err: codec.DecodeError, run_id: str
) -> None:
    headers = list(msg.headers() or [])
    headers += [
        (DLQ_REASON, err.reason.encode()),
        (DLQ_ERROR, err.detail[:1000].encode()),
        ("dlq-source-topic", msg.topic().encode()),
        ("dlq-source-partition", str(msg.partition()).encode()),
        ("dlq-source-offset", str(msg.offset()).encode()),
        ("dlq-collect-run-id", run_id.encode()),
    ]
    while True:
        try:
            producer.produce(dlq_topic, value=msg.value(), key=msg.key(), headers=headers)
            return
        except BufferError:
            producer.poll(0.05)


class Collector:
    """One bounded collect: consume up to the end offsets, write bronze, commit."""

    def __init__(
        self,
        settings: Settings,
        *,
        run_id: str,
        group: str | None = None,
        timeout_s: float | None = None,
        join_grace_s: float = 0.0,
    ) -> None:
        self.settings = settings
        self.join_grace_s = join_grace_s
        self._progress_at = time.monotonic()  # last record taken, assignment or flush
        self.k = effective_kafka(settings)
        self.topic = self.k.topic
        self.group = group or self.k.consumer_group
        self.timeout_s = timeout_s if timeout_s is not None else self.k.timeout_s
        self.run_id = run_id
        self.sink = BronzeSink(settings, self.topic)
        self.stats = CollectStats(
            run_id,
            self.topic,
            self.group,
            self.k.bootstrap_servers or "",
            self.k.dead_letter_topic,
        )
        self.states: dict[int, _PartitionState] = {}
        self.assigned_once = False
        self.rebalancing = False
        self.errors = _ClientErrors()
        self.dlq_failures: list[str] = []
        self._dlq_producer: Any = None
        self.consumer: Any = None

    # -- rebalance callbacks (served inside consume(), on this thread)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        from confluent_kafka import TopicPartition

        committed = consumer.committed(partitions, timeout=self.timeout_s)
        assignment = []
        for tp in committed:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=self.timeout_s, cached=False
            )
            start = tp.offset if tp.offset >= 0 else low
            if start < low:
                self.stats.notes.append(
                    f"partition {tp.partition}: offsets {start}..{low - 1} expired before "
                    f"they were collected (topic retention); collecting from {low}"
                )
                start = low
            self.stats.reconciled_files += self.sink.reconcile(tp.partition, start)
            self.states[tp.partition] = _PartitionState(start=start, end=high, next=start)
            assignment.append(TopicPartition(tp.topic, tp.partition, start))
        consumer.assign(assignment)
        self.assigned_once = True
        self.rebalancing = False
        self._progress_at = time.monotonic()
        log.info(
            "assigned %s",
            {p: (s.start, s.end) for p, s in sorted(self.states.items())},
        )

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        # Nothing of a revoked partition was written past its commit (flush and
        # commit happen without a poll in between), so its buffer is just dropped.
        for tp in partitions:
            self.states.pop(tp.partition, None)
        self.rebalancing = True
        consumer.unassign()

    # -- main loop

    def run(self) -> CollectStats:
        """Collect one bounded batch; raise ``TransportError`` on anything it cannot vouch for."""
        from confluent_kafka import Consumer, KafkaError, Producer
        from confluent_kafka.admin import AdminClient

        admin_conf: dict[str, Any] = {**client_config(self.k), "error_cb": self.errors}
        admin = AdminClient(admin_conf)
        metadata = _connect(admin, self.k, self.errors)
        if self.topic not in metadata.topics:
            self.stats.notes.append(f"topic {self.topic} does not exist yet: nothing to collect")
            return self.stats
        _ensure_topic(admin, metadata, self.k.dead_letter_topic, 1, self.k.replication_factor)
        self._dlq_producer = Producer(
            {
                **client_config(self.k),
                "client.id": "stockbatch-collector-dlq",
                "enable.idempotence": True,
                "acks": "all",
                "message.timeout.ms": int(self.k.timeout_s * 1000),
                "error_cb": self.errors,
            }
        )
        self.consumer = Consumer(
            {
                **client_config(self.k),
                "client.id": "stockbatch-collector",
                "group.id": self.group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
                "max.partition.fetch.bytes": 8 * 1024 * 1024,
                # A collector that was SIGKILLed holds its partitions until its session
                # expires; 10 s (not the default 45 s) lets the rerun take over quickly.
                "session.timeout.ms": SESSION_TIMEOUT_MS,
                "heartbeat.interval.ms": 1000,
                "error_cb": self.errors,
            }
        )
        try:
            self.consumer.subscribe(
                [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke
            )
            self._loop(KafkaError)
        finally:
            self.consumer.close()
        return self.stats

    def _loop(self, kafka_error: Any) -> None:
        flush_rows = self.settings.lake.flush_rows
        # Joining waits at least one session timeout: a member of the group that died
        # keeps its partitions until then.
        join_timeout = max(self.timeout_s, SESSION_TIMEOUT_MS / 1000 + 5)
        started = self._progress_at = time.monotonic()
        while True:
            if self.errors.fatal is not None or self.errors.auth is not None:
                raise TransportError(f"the Kafka collector failed{self.errors.describe()}")
            for m in self.consumer.consume(num_messages=500, timeout=0.2):
                err = m.error()
                if err is not None:
                    if err.code() == kafka_error._PARTITION_EOF:
                        st = self.states.get(m.partition())
                        if st is not None and m.offset() >= st.end:
                            st.next = max(st.next, st.end)
                        continue
                    if err.fatal() or not err.retriable():
                        raise TransportError(f"the Kafka collector failed: {err.str()}")
                    continue
                if self._take(m):
                    self._progress_at = time.monotonic()
                    # Flush by size as records arrive: memory stays bounded by
                    # lake.flush_rows however large the backlog is.
                    if sum(st.rows for st in self.states.values()) >= flush_rows:
                        self._flush()
            now = time.monotonic()
            done = (
                self.assigned_once
                and not self.rebalancing
                and all(st.next >= st.end for st in self.states.values())
                and now - started >= self.join_grace_s
            )
            if done:
                self._flush()
                if not self.rebalancing:  # a refused commit re-reads after the rebalance
                    return
                self._progress_at = now
            if not self.assigned_once or self.rebalancing:
                if now - self._progress_at > join_timeout:
                    raise TransportError(
                        f"no partitions of {self.topic} were assigned to consumer group "
                        f"{self.group!r} within {join_timeout:g}s{self.errors.describe()}"
                    )
            elif now - self._progress_at > self.timeout_s:
                behind = {
                    p: f"{st.next}/{st.end}"
                    for p, st in sorted(self.states.items())
                    if st.next < st.end
                }
                raise TransportError(
                    f"the collector made no progress for {self.timeout_s:g}s; partitions "
                    f"behind their end offset (next/end): {behind}{self.errors.describe()}. "
                    "Nothing was committed for them; rerun `stockbatch collect`."
                )

    def _pending(self) -> bool:
        return any(s.next > s.start for s in self.states.values())

    def _take(self, m: Any) -> bool:
        st = self.states.get(m.partition())
        if st is None or m.offset() < st.next:
            return False  # revoked, or a re-delivery of something already taken
        if m.offset() >= st.end:
            # Past this batch's bound (produced after we started): stop here; the
            # next collect starts from the committed offset and takes it then.
            from confluent_kafka import TopicPartition

            st.next = max(st.next, st.end)
            self.consumer.pause([TopicPartition(m.topic(), m.partition())])
            return True
        value = m.value() or b""
        try:
            decoded: codec.Message | None = codec.decode(m.key(), m.value(), m.headers())
        except codec.DecodeError as exc:
            decoded = None
            self.stats.dead_lettered += 1
            self.stats.dead_letter_reasons[exc.reason] = (
                self.stats.dead_letter_reasons.get(exc.reason, 0) + 1
            )
            log.warning(
                "partition %d offset %d -> dead letters: %s", m.partition(), m.offset(), exc
            )
            _dead_letter(self._dlq_producer, self.k.dead_letter_topic, m, exc, self.run_id)
        st.taken.append(_Taken(m.offset(), decoded, len(value)))
        if isinstance(decoded, codec.BarsMessage):
            st.rows += decoded.table.num_rows
        st.next = m.offset() + 1
        return True

    def _flush(self) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        ranges = {
            p: (s.start, s.next, s.taken)
            for p, s in sorted(self.states.items())
            if s.next > s.start
        }
        if not ranges:
            return
        # Dead letters first: confirmed before the offsets move past them.
        outstanding = self._dlq_producer.flush(self.k.timeout_s)
        if outstanding:
            raise TransportError(
                f"{outstanding} dead-letter records to {self.k.dead_letter_topic} were not "
                "confirmed; nothing was committed, rerun `stockbatch collect`."
            )
        n_files = len(self.stats.files)
        self.sink.write(ranges, self.stats)
        _test_crash_point("after_write")
        offsets = [TopicPartition(self.topic, p, end) for p, (_s, end, _t) in ranges.items()]
        failure: str | None = None
        rebalancing = False
        try:
            result = self.consumer.commit(offsets=offsets, asynchronous=False)
            bad = [tp for tp in result or [] if tp.error is not None]
            if bad:
                failure = "; ".join(f"partition {tp.partition}: {tp.error.str()}" for tp in bad)
                rebalancing = all(tp.error.code() in _REBALANCE_ERRORS for tp in bad)
        except KafkaException as exc:
            failure = str(exc)
            rebalancing = exc.args[0].code() in _REBALANCE_ERRORS
        if failure is not None:
            # Undo this flush (the records are read again from the committed offset,
            # by this collector or by the partition's next owner).
            self.sink.rollback(
                self.stats.files[n_files:], {p: start for p, (start, _e, _t) in ranges.items()}
            )
            del self.stats.files[n_files:]
            if rebalancing:
                # The group is rebalancing (another collector joined or left): the next
                # consume() revokes and reassigns, and reading resumes from the commit.
                log.info("commit refused during a rebalance (%s); will re-read", failure)
                for p in ranges:
                    self.states.pop(p, None)
                self.rebalancing = True
                return
            raise TransportError(
                f"committing the collected offsets failed ({failure}); this batch's bronze "
                "files were rolled back, rerun `stockbatch collect`."
            )
        for p, (start, end, taken) in ranges.items():
            self.stats.add_range(p, start, end)
            self.stats.messages += len(taken)
            self.stats.value_bytes += sum(t.value_bytes for t in taken)
            st = self.states[p]
            st.start = end
            st.taken = []
            st.rows = 0
        self.stats.flushes += 1


def collect_to_bronze(
    settings: Settings,
    *,
    run_id: str,
    group: str | None = None,
    timeout_s: float | None = None,
    join_grace_s: float = 0.0,
) -> CollectStats:
    """Run one bounded collector (see the module docstring for the guarantees).

    ``join_grace_s``: when several collectors are started together, stay in the
    group at least this long, so that the ones joining a moment later get their
    share of the partitions instead of finding the batch already taken.
    """
    return Collector(
        settings, run_id=run_id, group=group, timeout_s=timeout_s, join_grace_s=join_grace_s
    ).run()
