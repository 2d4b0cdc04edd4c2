"""The collector side of the Kafka transport: one bounded batch from the topic into bronze.

:func:`collect_to_bronze` is what :func:`stockbatch.pipeline.collect.collect`
runs. The :class:`Collector` joins the consumer group, and for each partition it
is assigned reads the committed offset (start) and the high watermark (end)
*at assignment*, consumes ``[start, end)`` and nothing more, decodes, has the
:class:`~stockbatch.bus.sink.BronzeSink` write bronze Parquet atomically, and
only then commits ``end`` synchronously. Undecodable records go to the
dead-letter topic (original key, value and headers plus ``dlq-reason`` /
``dlq-error`` / source coordinates) and are counted; the dead-letter produce is
confirmed before the commit, so none is lost.

Exactly once into bronze across crashes and rebalances, and why:
``docs/design/kafka.md``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from stockbatch.bus import TransportError, codec
from stockbatch.bus.client import (
    ClientErrors,
    client_config,
    connect,
    crash_point,
    effective_kafka,
    ensure_topic,
    log,
    topic_config,
)
from stockbatch.bus.sink import BronzeSink, Ranges, Taken, Written
from stockbatch.settings import KafkaSettings, Settings

SESSION_TIMEOUT_MS = 10_000
"""Consumer group session timeout of the collector (the broker's minimum is 6 s)."""

_REBALANCE_ERRORS = frozenset(
    {27, 22, 25, 82, -142}  # REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID,
)  # FENCED_INSTANCE_ID, _ASSIGNMENT_LOST (librdkafka codes; confluent_kafka is imported lazily)

DLQ_REASON = "dlq-reason"
DLQ_ERROR = "dlq-error"


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

    def add_written(self, written: Written) -> None:
        """Count what a flush wrote (its files are added once its offsets are committed)."""
        self.rows += written.rows
        self.duplicates_skipped += written.duplicates_skipped
        self.units_activated += written.units_activated
        self.instruments += written.instruments

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
class _PartitionState:
    start: int  # committed offset = first offset of the uncommitted range
    end: int  # high watermark read at assignment: the bound of this batch
    next: int  # next offset to take
    taken: list[Taken] = field(default_factory=list)
    rows: int = 0


def consumer_config(k: KafkaSettings, group: str, errors: ClientErrors) -> dict[str, Any]:
    """The collector's consumer: manual synchronous commits, read_committed, EOF events."""
    return {
        **client_config(k),
        "client.id": "stockbatch-collector",
        "group.id": group,
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
        "error_cb": errors,
    }


def dead_letter_config(k: KafkaSettings, errors: ClientErrors) -> dict[str, Any]:
    """The producer of the dead-letter topic (idempotent, ``acks=all``)."""
    return {
        **client_config(k),
        "client.id": "stockbatch-collector-dlq",
        "enable.idempotence": True,
        "acks": "all",
        "message.timeout.ms": int(k.timeout_s * 1000),
        "error_cb": errors,
    }


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
        self.errors = ClientErrors()
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
        from confluent_kafka import Consumer, Producer

        admin, metadata = connect(self.k, self.errors)
        if self.topic not in metadata.topics:
            self.stats.notes.append(f"topic {self.topic} does not exist yet: nothing to collect")
            return self.stats
        ensure_topic(
            admin,
            metadata,
            self.k.dead_letter_topic,
            1,
            self.k.replication_factor,
            topic_config(self.k),
        )
        self._dlq_producer = Producer(dead_letter_config(self.k, self.errors))
        self.consumer = Consumer(consumer_config(self.k, self.group, self.errors))
        try:
            self.consumer.subscribe(
                [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke
            )
            self._loop()
        finally:
            self.consumer.close()
        return self.stats

    def _loop(self) -> None:
        """Consume until every assigned partition is at its end offset, flush, return."""
        from confluent_kafka import KafkaError

        eof = KafkaError._PARTITION_EOF
        # Joining waits at least one session timeout: a member of the group that died
        # keeps its partitions until then.
        join_timeout = max(self.timeout_s, SESSION_TIMEOUT_MS / 1000 + 5)
        started = self._progress_at = time.monotonic()
        while True:
            if self.errors.fatal is not None or self.errors.auth is not None:
                raise TransportError(f"the Kafka collector failed{self.errors.describe()}")
            self._consume(eof)
            now = time.monotonic()
            if self._done(now - started):
                self._flush()
                if not self.rebalancing:  # a refused commit re-reads after the rebalance
                    return
                self._progress_at = now
            self._check_progress(now, join_timeout)

    def _consume(self, eof: int) -> None:
        """One poll: take what arrived, flushing by size as records arrive."""
        for m in self.consumer.consume(num_messages=500, timeout=0.2):
            err = m.error()
            if err is not None:
                self._on_error(m, err, eof)
                continue
            if self._take(m):
                self._progress_at = time.monotonic()
                # Flush by size as records arrive: memory stays bounded by
                # lake.flush_rows however large the backlog is.
                if sum(st.rows for st in self.states.values()) >= self.settings.lake.flush_rows:
                    self._flush()

    def _on_error(self, m: Any, err: Any, eof: int) -> None:
        """A partition's end is noted; a fatal or non-retriable error fails the run."""
        if err.code() == eof:
            st = self.states.get(m.partition())
            if st is not None and m.offset() >= st.end:
                st.next = max(st.next, st.end)
            return
        if err.fatal() or not err.retriable():
            raise TransportError(f"the Kafka collector failed: {err.str()}")

    def _done(self, elapsed: float) -> bool:
        """Assigned, not rebalancing, every partition at its end, and the grace time over."""
        return (
            self.assigned_once
            and not self.rebalancing
            and all(st.next >= st.end for st in self.states.values())
            and elapsed >= self.join_grace_s
        )

    def _check_progress(self, now: float, join_timeout: float) -> None:
        """``TransportError`` when joining, or reading, has made no progress for too long."""
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

    def _take(self, m: Any) -> bool:
        """Take one record of this batch (decoded, or dead-lettered); False if not ours."""
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
            self._reject(m, exc)
        st.taken.append(Taken(m.offset(), decoded, len(value)))
        if isinstance(decoded, codec.BarsMessage):
            st.rows += decoded.table.num_rows
        st.next = m.offset() + 1
        return True

    def _reject(self, m: Any, exc: codec.DecodeError) -> None:
        """Count an undecodable record and send it to the dead-letter topic."""
        self.stats.dead_lettered += 1
        self.stats.dead_letter_reasons[exc.reason] = (
            self.stats.dead_letter_reasons.get(exc.reason, 0) + 1
        )
        log.warning("partition %d offset %d -> dead letters: %s", m.partition(), m.offset(), exc)
        _dead_letter(self._dlq_producer, self.k.dead_letter_topic, m, exc, self.run_id)

    # -- flush: dead letters confirmed -> bronze written -> offsets committed

    def _flush(self) -> None:
        """Write what was taken to bronze, then commit its end offsets (or undo the write)."""
        ranges: Ranges = {
            p: (s.start, s.next, s.taken)
            for p, s in sorted(self.states.items())
            if s.next > s.start
        }
        if not ranges:
            return
        self._confirm_dead_letters()
        written = self.sink.write(ranges)
        self.stats.add_written(written)
        crash_point("after_write")
        failure, rebalancing = self._commit(ranges)
        if failure is not None:
            # Undo this flush (the records are read again from the committed offset,
            # by this collector or by the partition's next owner).
            self.sink.rollback(written.files, {p: start for p, (start, _e, _t) in ranges.items()})
            if not rebalancing:
                raise TransportError(
                    f"committing the collected offsets failed ({failure}); this batch's bronze "
                    "files were rolled back, rerun `stockbatch collect`."
                )
            # The group is rebalancing (another collector joined or left): the next
            # consume() revokes and reassigns, and reading resumes from the commit.
            log.info("commit refused during a rebalance (%s); will re-read", failure)
            for p in ranges:
                self.states.pop(p, None)
            self.rebalancing = True
            return
        self.stats.files += written.files
        self._advance(ranges)

    def _confirm_dead_letters(self) -> None:
        """Dead letters first: confirmed before the offsets move past them."""
        outstanding = self._dlq_producer.flush(self.k.timeout_s)
        if outstanding:
            raise TransportError(
                f"{outstanding} dead-letter records to {self.k.dead_letter_topic} were not "
                "confirmed; nothing was committed, rerun `stockbatch collect`."
            )

    def _commit(self, ranges: Ranges) -> tuple[str | None, bool]:
        """Commit the end offsets synchronously: (failure or None, refused by a rebalance)."""
        from confluent_kafka import KafkaException, TopicPartition

        offsets = [TopicPartition(self.topic, p, end) for p, (_s, end, _t) in ranges.items()]
        try:
            result = self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            return str(exc), exc.args[0].code() in _REBALANCE_ERRORS
        bad = [tp for tp in result or [] if tp.error is not None]
        if not bad:
            return None, False
        failure = "; ".join(f"partition {tp.partition}: {tp.error.str()}" for tp in bad)
        return failure, all(tp.error.code() in _REBALANCE_ERRORS for tp in bad)

    def _advance(self, ranges: Ranges) -> None:
        """After the commit: count the committed ranges and start the next from their end."""
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
    """Run one bounded collector (guarantees: the module docstring, ``docs/design/kafka.md``).

    ``join_grace_s``: when several collectors are started together, stay in the
    group at least this long, so that the ones joining a moment later get their
    share of the partitions instead of finding the batch already taken.
    """
    return Collector(
        settings, run_id=run_id, group=group, timeout_s=timeout_s, join_grace_s=join_grace_s
    ).run()
