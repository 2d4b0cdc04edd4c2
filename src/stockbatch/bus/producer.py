"""The producer side of the Kafka transport: ``BarProducer`` and ``UnitPublisher``.

``UnitPublisher`` is what :func:`stockbatch.pipeline.ingest.ingest` uses when
``transport=kafka``: one instance per ingest run. It publishes every unit as
``codec.encode_unit`` records keyed by symbol through a ``BarProducer``
(idempotent, ``acks=all``, compressed, batched; the topic is created if
missing), which checks every delivery report: one failed delivery, a fatal
producer error, or a message still unconfirmed when the final flush times out
fails the run, never a silent drop. Units are remembered in the published-units
book (``lake.layout(settings).kafka_published``, per cluster id and topic) only
after the whole run was confirmed, so a rerun skips exactly the units a
successful run delivered. See ``docs/design/kafka.md``.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa

from stockbatch import lake
from stockbatch.bus import TransportError, codec
from stockbatch.bus.client import (
    ClientErrors,
    client_config,
    connect,
    effective_kafka,
    ensure_topic,
    log,
    topic_config,
)
from stockbatch.lake import bronze
from stockbatch.settings import KafkaSettings, Settings

PRODUCER_BATCH_BYTES = 1_000_000
"""librdkafka ``batch.size``: one producer batch fills up to the default 1 MB
record-batch limit of the broker, so a full batch is one request."""

QUEUE_MAX_KBYTES = 256 * 1024
"""The producer's in-memory queue bound: a faster reader than the broker blocks
on this instead of growing memory without limit."""


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


def producer_config(k: KafkaSettings, errors: ClientErrors) -> dict[str, Any]:
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

        self.k = k
        self.topic = topic or k.topic
        self.errors = ClientErrors()
        admin, metadata = connect(k, self.errors)
        ensure_topic(
            admin, metadata, self.topic, k.partitions, k.replication_factor, topic_config(k)
        )
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


# ----------------------------------------------------------------------------- published units

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


class UnitPublisher:
    """The ingest side of the Kafka transport: one instance per ingest run."""

    def __init__(self, settings: Settings, run_id: str) -> None:
        self.settings = settings
        self.k = effective_kafka(settings)
        self.run_id = run_id
        self.producer = BarProducer(self.k)
        self.entries: list[dict[str, Any]] = []
        self._book = lake.layout(settings).kafka_published

    @property
    def stats(self) -> ProduceStats:
        """Counts so far."""
        return self.producer.stats

    def published(self) -> dict[tuple[str, str], str]:
        """(source, ref) -> sha256 of units a successful run delivered to this cluster and topic."""
        if not self._book.exists():
            return {}
        df = (
            pl.read_parquet(self._book)
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
            new = pl.DataFrame(self.entries, schema=pl.Schema(_PUBLISHED_SCHEMA))
            with bronze.lock(self.settings):
                old = pl.read_parquet(self._book) if self._book.exists() else None
                merged = pl.concat([old, new]) if old is not None else new
                lake.write_parquet_atomic(merged.to_arrow(), self._book)
        return stats

    def abort(self) -> None:
        """The run failed: drop what is still queued."""
        self.producer.abort()
