"""The local Kafka broker that the project provisions itself: real broker, real client.

Tests run in file order and share the session broker; any test that stops it
starts it again before it ends.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from typer.testing import CliRunner

from stockbatch.cli.services import app as services_app
from stockbatch.services import (
    KafkaService,
    ServiceError,
    effective_kafka_settings,
    ensure_kafka_jars,
    probe_kafka,
    recorded_endpoints,
    wait_for_kafka,
)
from stockbatch.services.system import free_port, process_cmdline
from stockbatch.settings import KafkaSettings, Settings

pytestmark = pytest.mark.integration

# --------------------------------------------------------------------------- helpers


def _create_topic(config: dict[str, Any], partitions: int = 1) -> str:
    topic = f"test.{uuid.uuid4().hex[:12]}"
    admin = AdminClient(config)  # keep a reference: a collected client cancels its futures
    futures = admin.create_topics([NewTopic(topic, partitions, 1)])
    futures[topic].result(timeout=30)
    return topic


def _produce(config: dict[str, Any], topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Produce and require a successful delivery report for every record."""
    errors: list[KafkaError] = []
    delivered: list[tuple[bytes, bytes]] = []

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered.append((msg.key(), msg.value()))

    producer = Producer({**config, "acks": "all", "enable.idempotence": True})
    for key, value in records:
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0, "messages still in flight after 30 s"
    assert errors == []
    assert sorted(delivered) == sorted(records)  # partitions report in their own order


def _consume_all(config: dict[str, Any], topic: str, expected: int) -> list[tuple[bytes, bytes]]:
    consumer = Consumer(
        {
            **config,
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + 60
    try:
        while len(got) < expected and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append((msg.key(), msg.value()))
    finally:
        consumer.close()
    return got


def _records(n: int, tag: str) -> list[tuple[bytes, bytes]]:
    return [(f"SYM{i % 3}".encode(), f"{tag}-{i}".encode()) for i in range(n)]


# --------------------------------------------------------------------------- the broker


def test_up_then_produce_and_consume(kafka_broker: Any) -> None:
    config = kafka_broker.client_config()
    assert kafka_broker.bootstrap_servers.startswith("127.0.0.1:")
    topic = _create_topic(config)
    records = _records(5, "roundtrip")
    _produce(config, topic, records)
    assert _consume_all(config, topic, 5) == records


def test_topics_are_not_auto_created(kafka_broker: Any) -> None:
    # The broker behaves like a production cluster: a producer must create its topic.
    producer = Producer({**kafka_broker.client_config(), "message.timeout.ms": 2000})
    errors: list[KafkaError] = []
    producer.produce("test.never-created", value=b"x", on_delivery=lambda e, m: errors.append(e))
    producer.flush(10)
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._MSG_TIMED_OUT)


def test_services_json_records_the_running_broker(kafka_broker: Any) -> None:
    home: Path = kafka_broker.home
    record = recorded_endpoints(home)["kafka"]
    assert record["bootstrap_servers"] == kafka_broker.bootstrap_servers
    assert record["security_protocol"] == "PLAINTEXT"
    assert record["sasl_username"] is None
    assert "kafka.Kafka" in process_cmdline(record["pid"])
    assert oct((home / "services.json").stat().st_mode & 0o777) == "0o600"
    assert Path(record["data_dir"], "meta.properties").exists()

    # A later command with the same STOCKBATCH_HOME finds the broker without configuration...
    found = effective_kafka_settings(Settings(home=home))
    assert found.bootstrap_servers == kafka_broker.bootstrap_servers
    assert found.security_protocol == "PLAINTEXT"
    # ...and explicit settings win.
    explicit = Settings(home=home, kafka=KafkaSettings(bootstrap_servers="elsewhere:9092"))
    assert effective_kafka_settings(explicit).bootstrap_servers == "elsewhere:9092"
    # With nothing recorded the settings come back unchanged.
    assert effective_kafka_settings(Settings(home=home / "nothing")).bootstrap_servers is None


def test_up_is_idempotent(kafka_broker: Any) -> None:
    service: KafkaService = kafka_broker.service
    pid = service.status().pid
    t0 = time.monotonic()
    status = service.up()
    assert status.running and status.pid == pid
    assert time.monotonic() - t0 < 5


def test_restart_keeps_topics_and_data(kafka_broker: Any) -> None:
    service: KafkaService = kafka_broker.service
    config = kafka_broker.client_config()
    topic = _create_topic(config, partitions=3)
    records = _records(30, "before-restart")
    _produce(config, topic, records)
    before = recorded_endpoints(kafka_broker.home)["kafka"]

    status = service.restart()

    assert status.running
    after = recorded_endpoints(kafka_broker.home)["kafka"]
    assert after["bootstrap_servers"] == before["bootstrap_servers"]  # same port
    assert after["pid"] != before["pid"]
    topics = AdminClient(config).list_topics(timeout=10).topics
    assert topic in topics and len(topics[topic].partitions) == 3
    assert sorted(_consume_all(config, topic, 30)) == sorted(records)


def test_killed_broker_comes_back_with_its_data(kafka_broker: Any) -> None:
    # What the fault tests do: a crash (SIGKILL), then up() on the same data dir.
    service: KafkaService = kafka_broker.service
    config = kafka_broker.client_config()
    topic = _create_topic(config)
    records = _records(10, "before-crash")
    _produce(config, topic, records)

    assert service.kill() is True
    killed = service.status()
    assert killed.state == "died" and killed.degraded  # still recorded as up: a crash
    result = CliRunner().invoke(services_app, ["status", "kafka", "--home", str(kafka_broker.home)])
    assert result.exit_code == 3 and "kafka: died" in result.stdout
    assert not probe_kafka(kafka_broker.bootstrap_servers, timeout=1)

    assert service.up().running
    assert _consume_all(config, topic, 10) == records


def test_down_then_status_and_up_again(kafka_broker: Any) -> None:
    service: KafkaService = kafka_broker.service
    pid = service.status().pid
    assert pid is not None

    t0 = time.monotonic()
    assert service.down() is True
    assert time.monotonic() - t0 < service.stop_timeout + 5

    status = service.status()
    assert status.state == "stopped" and status.pid is None and not status.running
    assert "kafka" not in recorded_endpoints(kafka_broker.home)
    assert not (kafka_broker.home / "services.json").exists()  # nothing else was recorded
    assert not Path(f"/proc/{pid}").exists() or "kafka.Kafka" not in process_cmdline(pid)
    assert service.down() is False  # stopping a stopped broker is fine

    kafka_broker.ensure_running()
    assert service.status().running
    assert "kafka" in recorded_endpoints(kafka_broker.home)


def test_cli_status_down_up(kafka_broker: Any) -> None:
    runner = CliRunner()
    home = str(kafka_broker.home)

    result = runner.invoke(services_app, ["status", "kafka", "--home", home, "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)["kafka"]
    assert status["state"] == "running"
    assert status["endpoint"]["bootstrap_servers"] == kafka_broker.bootstrap_servers

    result = runner.invoke(services_app, ["down", "kafka", "--home", home])
    assert result.exit_code == 0, result.output
    assert "kafka: stopped" in result.stdout

    # Stopped on purpose is not degraded (exit 0); services never started say so.
    result = runner.invoke(services_app, ["status", "--home", home])
    assert result.exit_code == 0, result.output
    assert "kafka: stopped" in result.stdout
    assert "opensearch: not started" in result.stdout

    result = runner.invoke(services_app, ["up", "kafka", "--home", home])
    assert result.exit_code == 0, result.output
    assert f"kafka: running at {kafka_broker.bootstrap_servers}" in result.stdout
    assert recorded_endpoints(kafka_broker.home)["kafka"]["security_protocol"] == "PLAINTEXT"

    result = runner.invoke(services_app, ["up", "postgres-typo", "--home", home])
    assert result.exit_code == 2
    kafka_broker.ensure_running()


# --------------------------------------------------------------------------- SCRAM


def test_scram_right_credentials_work(kafka_broker_scram: Any) -> None:
    record = recorded_endpoints(kafka_broker_scram.home)["kafka"]
    assert record["security_protocol"] == "SASL_PLAINTEXT"
    assert record["sasl_mechanism"] == "SCRAM-SHA-512"
    assert record["sasl_username"] == "stockbatch" and len(record["sasl_password"]) >= 16

    found = effective_kafka_settings(Settings(home=kafka_broker_scram.home))
    assert found.security_protocol == "SASL_PLAINTEXT"
    assert found.sasl_password is not None
    assert found.sasl_password.get_secret_value() == record["sasl_password"]

    config = kafka_broker_scram.client_config()
    topic = _create_topic(config)
    records = _records(4, "scram")
    _produce(config, topic, records)
    assert _consume_all(config, topic, 4) == records


def test_scram_wrong_password_fails_fast_with_auth_error(kafka_broker_scram: Any) -> None:
    errors: list[KafkaError] = []
    delivered: list[Any] = []
    producer = Producer(
        kafka_broker_scram.client_config(
            **{
                "sasl.password": "not-the-password",
                "message.timeout.ms": 3000,
                "error_cb": errors.append,
            }
        )
    )
    producer.produce("any-topic", value=b"x", on_delivery=lambda e, m: delivered.append(e))
    t0 = time.monotonic()
    while time.monotonic() - t0 < 15 and not any(
        e.code() == KafkaError._AUTHENTICATION for e in errors
    ):
        producer.poll(0.2)
    elapsed = time.monotonic() - t0
    auth = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
    assert auth, f"no authentication error within {elapsed:.1f} s: {errors}"
    assert elapsed < 15
    assert "invalid credentials" in auth[0].str().lower()
    producer.flush(15)
    assert delivered and all(e is not None for e in delivered)  # nothing got through


def test_scram_listener_refuses_unauthenticated_clients(kafka_broker_scram: Any) -> None:
    plain = AdminClient({"bootstrap.servers": kafka_broker_scram.bootstrap_servers})
    t0 = time.monotonic()
    with pytest.raises(KafkaException):
        plain.list_topics(timeout=5)
    assert time.monotonic() - t0 < 10


# --------------------------------------------------------------------------- failures


def test_unreachable_broker_fails_within_bounded_time() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there

    t0 = time.monotonic()
    assert probe_kafka(bootstrap, timeout=1) is False
    with pytest.raises(ServiceError, match="no Kafka broker answers at"):
        wait_for_kafka(bootstrap, timeout=2)
    assert time.monotonic() - t0 < 5

    errors: list[KafkaError | None] = []
    producer = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 3000})
    producer.produce("t", value=b"x", on_delivery=lambda e, m: errors.append(e))
    t0 = time.monotonic()
    producer.flush(10)
    assert time.monotonic() - t0 < 8
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].code() == KafkaError._MSG_TIMED_OUT


def test_status_of_a_never_started_broker(tmp_path: Path) -> None:
    status = KafkaService(tmp_path).status()
    assert status.state == "not started" and status.pid is None and not status.degraded
    assert recorded_endpoints(tmp_path) == {}
    assert KafkaService(tmp_path).down() is False
    assert list(tmp_path.iterdir()) == []  # looking and stopping create nothing


def test_missing_java_or_maven_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Empty PATH and no JAVA_HOME: what a machine without a JDK or Maven looks like.
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(ServiceError, match=r"`mvn` is not on PATH.*apt-get install maven"):
        ensure_kafka_jars(root=tmp_path / "empty-cache")
    with pytest.raises(ServiceError, match=r"`java` was not found.*openjdk-17"):
        KafkaService(tmp_path / "home").up()
    assert not (tmp_path / "home" / "services.json").exists()
