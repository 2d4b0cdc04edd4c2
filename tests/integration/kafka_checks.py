"""Helpers of the Kafka transport tests: isolated settings (with the broker's security:
SASL_SSL and its CA on the secured brokers), and what bronze holds."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import polars as pl
from confluent_kafka import Consumer

from stockbatch import lake
from stockbatch.lake import bronze
from stockbatch.settings import KafkaSettings, Settings
from stockbatch.sources.kaggle import KaggleSource

KEY = ["symbol", "trade_date", "source_file", "line_no"]


def security_settings(broker: Any) -> dict[str, Any]:
    """The KafkaSettings fields that reach ``broker`` (a conftest ``KafkaBroker`` or a
    ``KafkaCluster``): protocol, SCRAM user and password, CA file, from its client config."""
    conf = broker.client_config()
    values: dict[str, Any] = {"security_protocol": conf["security.protocol"]}
    if "sasl.username" in conf:
        values |= {
            "sasl_mechanism": conf["sasl.mechanism"],
            "sasl_username": conf["sasl.username"],
            "sasl_password": conf["sasl.password"],
        }
    if "ssl.ca.location" in conf:
        values["ssl_cafile"] = Path(conf["ssl.ca.location"])
    return values


def kafka_settings(broker: Any, home: Path, **kafka: Any) -> Settings:
    """Settings on the session broker with a topic, dead-letter topic and group of their own.

    The broker's security settings come along, unless ``bootstrap_servers=None`` is
    asked for: then everything about the broker comes from the home's services.json.
    """
    tag = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "bootstrap_servers": broker.bootstrap_servers,
        "topic": f"test.bars.{tag}",
        "dead_letter_topic": f"test.dlq.{tag}",
        "consumer_group": f"test-collector-{tag}",
        "timeout_s": 20.0,
    }
    if kafka.get("bootstrap_servers", values["bootstrap_servers"]) is not None:
        values.update(security_settings(broker))
    values.update(kafka)
    return Settings(home=home, transport="kafka", progress=False, kafka=KafkaSettings(**values))


def env_of(settings: Settings) -> dict[str, str]:
    """Environment that makes a `stockbatch` subprocess use exactly these settings."""
    k = settings.kafka
    env = {key: val for key, val in os.environ.items() if not key.startswith("STOCKBATCH_")}
    env |= {
        "STOCKBATCH_SHARED_DATA": os.environ.get("STOCKBATCH_SHARED_DATA", ""),
        "STOCKBATCH_HOME": str(settings.home),
        "STOCKBATCH_TRANSPORT": "kafka",
        "STOCKBATCH_LAKE__FLUSH_ROWS": str(settings.lake.flush_rows),
        "STOCKBATCH_KAFKA__BOOTSTRAP_SERVERS": k.bootstrap_servers or "",
        "STOCKBATCH_KAFKA__TOPIC": k.topic,
        "STOCKBATCH_KAFKA__DEAD_LETTER_TOPIC": k.dead_letter_topic,
        "STOCKBATCH_KAFKA__CONSUMER_GROUP": k.consumer_group,
        "STOCKBATCH_KAFKA__TIMEOUT_S": str(k.timeout_s),
        "STOCKBATCH_KAFKA__BATCH_ROWS": str(k.batch_rows),
    }
    if k.security_protocol != "PLAINTEXT":
        env["STOCKBATCH_KAFKA__SECURITY_PROTOCOL"] = k.security_protocol
    if k.sasl_username is not None:
        env["STOCKBATCH_KAFKA__SASL_MECHANISM"] = k.sasl_mechanism
        env["STOCKBATCH_KAFKA__SASL_USERNAME"] = k.sasl_username
    if k.sasl_password is not None:
        env["STOCKBATCH_KAFKA__SASL_PASSWORD"] = k.sasl_password.get_secret_value()
    if k.ssl_cafile is not None:
        env["STOCKBATCH_KAFKA__SSL_CAFILE"] = str(k.ssl_cafile)
    return env


def stockbatch_proc(
    env: dict[str, str], *args: str, wait: bool = True
) -> subprocess.CompletedProcess[str] | subprocess.Popen[str]:
    """Run the CLI in its own process (a separate service, killable)."""
    cmd = [sys.executable, "-m", "stockbatch.cli", *args]
    if not wait:
        return subprocess.Popen(
            cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    return subprocess.run(cmd, env=env, text=True, capture_output=True, timeout=180)


def source_keys(root: Path) -> pl.DataFrame:
    """The keys of every row the Kaggle files under ``root`` hold (what ingest must deliver)."""
    src = KaggleSource(root)
    frames = [pl.from_arrow(src.read(u)) for u in src.units()]
    df = pl.concat([f for f in frames if isinstance(f, pl.DataFrame) and len(f)])
    return df.select(KEY)


def count_data_lines(root: Path) -> int:
    """Non-blank lines after the header of every Kaggle file (independent of the parser)."""
    total = 0
    for p in sorted(root.rglob("*")):
        if p.suffix not in (".txt", ".csv") or p.name == "symbols_valid_meta.csv":
            continue
        lines = [ln for ln in p.read_bytes().splitlines() if ln.strip()]
        total += max(len(lines) - 1, 0)
    return total


def active_bronze(settings: Settings) -> pl.DataFrame:
    """Every row the process stage would read (the active units of the catalog)."""
    active = bronze.active_units(settings)
    frames = [bronze.read_bucket(settings, b, active) for b in range(settings.lake.buckets)]
    return pl.concat(frames)


def kafka_bronze_files(settings: Settings) -> list[Path]:
    """Every committed bronze file the collector wrote for the settings' topic."""
    return lake.parquet_files(lake.layout(settings).kafka_batch(settings.kafka.topic))


def key_digest(df: pl.DataFrame) -> tuple[int, str]:
    """(row count, SHA-256 of the sorted keys): equal digests = the same rows, same multiplicity."""
    keys = df.select(KEY).sort(KEY)
    text = "\n".join(f"{s}|{d}|{f}|{n}" for s, d, f, n in keys.iter_rows())  # every key, in order
    return len(keys), hashlib.sha256(text.encode()).hexdigest()


def read_topic(broker: Any, topic: str, expected: int, timeout: float = 20.0) -> list[Any]:
    """Read ``expected`` records of ``topic`` from the beginning (a throwaway group)."""
    import time

    consumer = Consumer(
        broker.client_config(
            **{
                "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append(msg)
        # A moment more: anything beyond ``expected`` would be a bug to report.
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out
