"""What every Kafka client shares, without a broker: settings resolution and configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from stockbatch.bus import TransportError
from stockbatch.bus.client import client_config, crash_point, effective_kafka
from stockbatch.bus.collector import consumer_config
from stockbatch.bus.producer import PRODUCER_BATCH_BYTES, producer_config
from stockbatch.settings import KafkaSettings, Settings


def test_no_broker_anywhere_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STOCKBATCH_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    with pytest.raises(TransportError, match="stockbatch services up kafka"):
        effective_kafka(Settings(home=tmp_path, transport="kafka"))


def test_explicit_broker_wins(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, kafka=KafkaSettings(bootstrap_servers="elsewhere:9092"))
    assert effective_kafka(s).bootstrap_servers == "elsewhere:9092"


def test_sasl_settings_reach_every_client() -> None:
    k = KafkaSettings(
        bootstrap_servers="127.0.0.1:1",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="collector",
        sasl_password=SecretStr("s3cret"),
        timeout_s=0.2,
    )
    conf = client_config(k)
    assert conf["sasl.username"] == "collector" and conf["sasl.password"] == "s3cret"
    assert conf["socket.connection.setup.timeout.ms"] == 1000  # never below one second
    assert "ssl.ca.location" not in conf
    produce = producer_config(k, errors=None)  # type: ignore[arg-type]
    assert produce["sasl.password"] == "s3cret" and produce["acks"] == "all"
    assert produce["batch.size"] == PRODUCER_BATCH_BYTES
    consume = consumer_config(k, "g1", errors=None)  # type: ignore[arg-type]
    assert consume["group.id"] == "g1" and consume["enable.auto.commit"] is False
    assert consume["isolation.level"] == "read_committed"


def test_crash_point_is_inert_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STOCKBATCH_TEST_CRASH_AT", raising=False)
    crash_point("after_write")
    monkeypatch.setenv("STOCKBATCH_TEST_CRASH_AT", "during_write:3")
    crash_point("after_write")  # another point: the process lives on
