"""Faults of the Kafka transport, on the real broker: nothing lost, nothing doubled.

- the broker stops in the middle of a produce (restarted in time, and not);
- the collector is SIGKILLed after writing bronze but before committing, and
  in the middle of writing (``STOCKBATCH_TEST_CRASH_AT``, read by
  ``bus.client.crash_point`` only);
- corrupt records on the topic;
- no broker at all.

"Exactly the produced rows" is checked by count and by a SHA-256 over the sorted
keys (symbol, trade_date, source_file, line_no) against the input files.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from integration.kafka_checks import (
    active_bronze,
    count_data_lines,
    env_of,
    kafka_bronze_files,
    kafka_settings,
    key_digest,
    read_topic,
    source_keys,
    stockbatch_proc,
)
from stockbatch import lake, pipeline, runs
from stockbatch.bus import TransportError, codec
from stockbatch.cli import app
from stockbatch.results import ProgressTask
from stockbatch.settings import KafkaSettings, Settings
from stockbatch.sources.kaggle import KaggleSource

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def huge_subset(huge_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 real files of the shared Huge sample (about 290,000 rows), linked into a folder."""
    root = tmp_path_factory.mktemp("huge-subset")
    (root / "Stocks").mkdir()
    for p in sorted((huge_sample / "Stocks").iterdir())[:120]:
        (root / "Stocks" / p.name).symlink_to(p)
    return root


@pytest.fixture(scope="module")
def expected(huge_subset: Path) -> tuple[int, str]:
    """Row count and key digest of the input files."""
    digest = key_digest(source_keys(huge_subset))
    assert digest[0] == count_data_lines(huge_subset)
    return digest


class _StopBrokerAt(ProgressTask):
    """Progress task that stops the broker when the ingest reaches unit ``at``."""

    def __init__(self, broker: Any, at: int, restart_after: float | None) -> None:
        self.broker = broker
        self.at = at
        self.seen = 0
        self.restart_after = restart_after
        self.stopped_at: float | None = None
        self.restarted = threading.Event()

    def advance(self, n: int = 1) -> None:
        self.seen += n
        if self.seen != self.at:
            return
        # Stop synchronously: every unit after this one is produced while the broker
        # is down, the ones before it may be in flight while it shuts down.
        self.broker.service.down()
        self.stopped_at = time.monotonic()
        if self.restart_after is not None:

            def restart() -> None:
                time.sleep(self.restart_after or 0)
                self.broker.service.up()
                self.restarted.set()

            threading.Thread(target=restart, daemon=True).start()


def test_broker_stopped_mid_produce_then_restarted(
    kafka_broker: Any, huge_subset: Path, expected: tuple[int, str], tmp_path: Path
) -> None:
    # Restarted within the delivery timeout: the idempotent producer retries and
    # the run completes, or it fails loudly; either way a rerun ends exactly once.
    s = kafka_settings(kafka_broker, tmp_path / "a", timeout_s=90.0, batch_rows=2000)
    stopper = _StopBrokerAt(kafka_broker, at=30, restart_after=1.0)
    try:
        try:
            res = pipeline.ingest(s, KaggleSource(huge_subset), progress=lambda d, t: stopper)
            assert res.kafka is not None
            assert res.kafka["delivered"] == res.kafka["messages"]
            assert stopper.stopped_at is not None  # the broker really went away mid-run
            outcome = "completed"
        except TransportError:
            outcome = "failed loudly"
        assert stopper.restarted.wait(120)
    finally:
        kafka_broker.ensure_running()
    print(f"broker stopped mid-produce and restarted: the run {outcome}")
    if outcome == "failed loudly":
        pipeline.ingest(s, KaggleSource(huge_subset))
    pipeline.collect(s)
    bronze = active_bronze(s)
    assert key_digest(bronze) == expected, outcome
    if outcome == "completed":
        # Delivered exactly once: not even the physical files hold a duplicate.
        physical = pl.concat([pl.read_parquet(p) for p in kafka_bronze_files(s)])
        assert key_digest(physical) == expected


def test_broker_down_for_good_fails_loudly_and_a_rerun_completes(
    kafka_broker: Any, huge_subset: Path, expected: tuple[int, str], tmp_path: Path
) -> None:
    s = kafka_settings(kafka_broker, tmp_path / "b", timeout_s=4.0, batch_rows=2000)
    stopper = _StopBrokerAt(kafka_broker, at=30, restart_after=None)
    try:
        started = time.monotonic()
        with pytest.raises(TransportError) as info:
            pipeline.ingest(s, KaggleSource(huge_subset), progress=lambda d, t: stopper)
        assert time.monotonic() - started < 60
        text = str(info.value)
        assert "fail" in text and "Rerun" in text
    finally:
        kafka_broker.ensure_running()
    # Nothing was remembered as published: the rerun sends every unit again.
    res = pipeline.ingest(s, KaggleSource(huge_subset))
    assert res.units_ingested == 120 and res.units_skipped == 0
    col = pipeline.collect(s)
    assert col.stats.dead_lettered == 0
    # Units of the failed run that did arrive are superseded by the rerun's
    # (newest batch wins in the catalog), so what process reads holds every row once.
    assert key_digest(active_bronze(s)) == expected


@pytest.mark.parametrize("crash_at", ["after_write:2", "during_write:2"])
def test_collector_killed_then_rerun_collects_exactly_once(
    kafka_broker: Any,
    huge_subset: Path,
    expected: tuple[int, str],
    tmp_path: Path,
    crash_at: str,
) -> None:
    s = kafka_settings(kafka_broker, tmp_path / "home", batch_rows=2000)
    s.lake.flush_rows = 40_000  # several flushes: the first is committed before the kill
    ing = pipeline.ingest(s, KaggleSource(huge_subset))
    assert ing.rows == expected[0]
    env = env_of(s)
    crashed = stockbatch_proc({**env, "STOCKBATCH_TEST_CRASH_AT": crash_at}, "collect", "-q")
    assert crashed.returncode == -9, crashed.stderr  # SIGKILL
    leftovers = kafka_bronze_files(s)
    assert leftovers  # the first flush (committed) and part or all of the second (not)
    before = pl.concat([pl.read_parquet(p) for p in leftovers])
    assert 0 < len(before) < expected[0]

    rerun = stockbatch_proc(env, "collect", "-q")
    assert rerun.returncode == 0, rerun.stderr
    doc = runs.last_manifests(s, 1)[0]
    assert doc["command"] == "collect"
    assert doc["collect"]["reconciled_files"] > 0  # the uncommitted files were replaced
    # Exactly the produced rows, in what process reads and in the files themselves.
    assert key_digest(active_bronze(s)) == expected
    physical = pl.concat([pl.read_parquet(p) for p in kafka_bronze_files(s)])
    assert key_digest(physical) == expected
    ledger = pl.read_parquet(lake.layout(s).kafka_ledger)
    assert len(ledger) == ing.kafka["messages"]  # type: ignore[index]
    assert ledger.select("partition", "offset").is_unique().all()
    # A third run finds nothing new.
    again = stockbatch_proc(env, "collect", "-q")
    assert again.returncode == 0 and "0 records" in again.stdout


def test_corrupt_records_go_to_dead_letters_and_the_rest_is_collected(
    kafka_broker: Any, demo_data: Path, tmp_path: Path
) -> None:
    s = kafka_settings(kafka_broker, tmp_path)
    huge = demo_data / "huge"
    ing = pipeline.ingest(s, KaggleSource(huge))
    good = codec.encode_unit(
        KaggleSource(huge).read(next(iter(KaggleSource(huge).units()))),
        ingest_run_id="manual",
        source="kaggle-huge",
        source_file="x.us.txt",
        unit_sha256="0" * 64,
        batch_rows=100,
    )[0]
    # Hand-made corrupt records: a flipped payload byte, no headers, a future version.
    flipped = bytearray(good.value)
    flipped[100] ^= 0xFF
    v2 = [(k, b"bars.v2" if k == "stockbatch-schema" else v) for k, v in good.headers]
    producer = Producer(kafka_broker.client_config())
    for value, headers in ((bytes(flipped), good.headers), (good.value, None), (good.value, v2)):
        producer.produce(s.kafka.topic, value=value, key=good.key, headers=headers)
    assert producer.flush(10) == 0
    # More good rows after the bad ones, in the same partitions.
    ing2 = pipeline.ingest(s, KaggleSource(demo_data / "sp500"))

    env = env_of(s)
    res = CliRunner().invoke(app, ["collect", "-q"], env=env, catch_exceptions=False)
    assert res.exit_code == 3, res.output  # completed, some records refused
    assert "3 DEAD-LETTERED" in res.output
    doc = runs.last_manifests(s, 1)[0]
    assert doc["status"] == "partial"
    assert doc["collect"]["dead_letter_reasons"] == {
        "checksum_mismatch": 1,
        "missing_header": 1,
        "unsupported_version": 1,
    }
    assert len(active_bronze(s)) == ing.rows + ing2.rows
    assert key_digest(active_bronze(s)) == key_digest(
        pl.concat([source_keys(huge), source_keys(demo_data / "sp500")])
    )
    dead = read_topic(kafka_broker, s.kafka.dead_letter_topic, 3)
    assert len(dead) == 3
    reasons = sorted(dict(m.headers())["dlq-reason"].decode() for m in dead)
    assert reasons == ["checksum_mismatch", "missing_header", "unsupported_version"]
    assert {m.value() for m in dead} == {bytes(flipped), good.value}
    assert all(dict(m.headers())["dlq-source-topic"] == s.kafka.topic.encode() for m in dead)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_broker_fails_clearly_within_the_timeout(
    demo_data: Path, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{_free_port()}"
    s = Settings(
        home=tmp_path,
        transport="kafka",
        progress=False,
        kafka=KafkaSettings(bootstrap_servers=address, timeout_s=3.0),
    )
    for stage in (
        lambda: pipeline.ingest(s, KaggleSource(demo_data / "huge")),
        lambda: pipeline.collect(s),
    ):
        started = time.monotonic()
        with pytest.raises(TransportError) as info:
            stage()
        assert time.monotonic() - started < 8
        assert f"cannot reach the Kafka broker at {address} within 3s" in str(info.value)
        assert "stockbatch services up kafka" in str(info.value)
    # The CLI: one line, exit code 1, no traceback.
    env = {"STOCKBATCH_HOME": str(tmp_path), "STOCKBATCH_KAFKA__BOOTSTRAP_SERVERS": address}
    res = stockbatch_proc(
        {**env_of(s), **env, "STOCKBATCH_KAFKA__TIMEOUT_S": "3"},
        *("ingest", "--transport", "kafka", "--path", str(demo_data / "huge"), "-q"),
    )
    assert res.returncode == 1
    assert "cannot reach the Kafka broker" in res.stderr
    assert "Traceback" not in res.stderr
