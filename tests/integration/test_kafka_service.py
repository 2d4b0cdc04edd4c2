"""The local Kafka broker that the project provisions itself: real broker, real client.

The session broker is secured as ``services up kafka`` sets it up (SASL_SSL with
SCRAM-SHA-512, certificate of its home's CA, mutual TLS on the controller listener):
what it records, what it refuses (another CA, a host name its certificate lacks, a
wrong password, PLAINTEXT, a controller client without TLS), where its passwords never
appear. One smoke test runs the ``--insecure`` broker (PLAINTEXT).

Tests run in file order and share the session broker; any test that stops it
starts it again before it ends.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from typer.testing import CliRunner

from integration.kafka_checks import env_of, kafka_settings, stockbatch_proc
from stockbatch import pipeline
from stockbatch.bus import TransportError
from stockbatch.bus.client import ClientErrors, client_config, connect
from stockbatch.cli.services import app as services_app
from stockbatch.services import (
    KafkaService,
    ServiceError,
    effective_kafka_settings,
    ensure_kafka_jars,
    probe_kafka,
    recorded_endpoints,
    tls,
    wait_for_kafka,
)
from stockbatch.services.kafka import find_java, kafka_libs_dir, kafka_ssl_context
from stockbatch.services.system import free_port, process_cmdline
from stockbatch.settings import KafkaSettings, Settings
from stockbatch.sources.kaggle import KaggleSource

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
    assert config["security.protocol"] == "SASL_SSL"
    assert config["ssl.ca.location"] == str(tls.ca_file(kafka_broker.home))
    # Host names are checked: librdkafka's default, which nothing turns off.
    assert "ssl.endpoint.identification.algorithm" not in config
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
    assert record["security_protocol"] == "SASL_SSL"
    assert record["sasl_mechanism"] == "SCRAM-SHA-512"
    assert record["sasl_username"] == "stockbatch" and len(record["sasl_password"]) >= 16
    assert record["ssl_cafile"] == str(tls.ca_file(home)) and Path(record["ssl_cafile"]).exists()
    assert "kafka.Kafka" in process_cmdline(record["pid"])
    assert oct((home / "services.json").stat().st_mode & 0o777) == "0o600"
    assert Path(record["data_dir"], "meta.properties").exists()

    # A later command with the same STOCKBATCH_HOME finds the broker without configuration...
    found = effective_kafka_settings(Settings(home=home))
    assert found.bootstrap_servers == kafka_broker.bootstrap_servers
    assert found.security_protocol == "SASL_SSL"
    assert found.ssl_cafile == tls.ca_file(home)
    assert found.sasl_username == "stockbatch"
    assert found.sasl_password is not None
    assert found.sasl_password.get_secret_value() == record["sasl_password"]
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
    tls_probe = kafka_broker.service.probe_context()
    assert not probe_kafka(kafka_broker.bootstrap_servers, timeout=1, ssl_context=tls_probe)

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

    # A TLS home is never restarted with plain listeners silently (stopped or running).
    result = runner.invoke(services_app, ["up", "kafka", "--insecure", "--home", home])
    assert result.exit_code == 1, result.output
    assert "set up with TLS" in result.output and "down --purge kafka" in result.output
    result = runner.invoke(services_app, ["up", "kafka", "--no-scram", "--home", home])
    assert result.exit_code == 1 and "--no-scram needs --insecure" in result.output
    assert not kafka_broker.service.status().running

    result = runner.invoke(services_app, ["up", "kafka", "--home", home])
    assert result.exit_code == 0, result.output
    assert f"kafka: running at {kafka_broker.bootstrap_servers} (SASL_SSL" in result.stdout
    assert "WARNING" not in result.output
    assert recorded_endpoints(kafka_broker.home)["kafka"]["security_protocol"] == "SASL_SSL"
    # Running too: asking for plain listeners is refused the same way.
    result = runner.invoke(services_app, ["up", "kafka", "--insecure", "--home", home])
    assert result.exit_code == 1 and "set up with TLS" in result.output

    result = runner.invoke(services_app, ["up", "postgres-typo", "--home", home])
    assert result.exit_code == 2
    kafka_broker.ensure_running()


# --------------------------------------------------------------------------- security


def test_wrong_password_fails_fast_with_auth_error(kafka_broker: Any) -> None:
    errors: list[KafkaError] = []
    delivered: list[Any] = []
    producer = Producer(
        kafka_broker.client_config(
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


def test_plaintext_clients_cannot_use_the_tls_listener(kafka_broker: Any) -> None:
    # No TLS at all, and TLS without a SCRAM login: both refused, within bounded time.
    for config in (
        {"bootstrap.servers": kafka_broker.bootstrap_servers},
        {
            "bootstrap.servers": kafka_broker.bootstrap_servers,
            "security.protocol": "SSL",
            "ssl.ca.location": str(kafka_broker.service.ca_file),
        },
    ):
        client = AdminClient(config)
        t0 = time.monotonic()
        with pytest.raises(KafkaException):
            client.list_topics(timeout=5)
        assert time.monotonic() - t0 < 10
    # The raw probe too: it answers only over TLS with the right CA.
    assert not probe_kafka(kafka_broker.bootstrap_servers, timeout=2)
    assert probe_kafka(
        kafka_broker.bootstrap_servers, timeout=2, ssl_context=kafka_broker.service.probe_context()
    )


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CA of another home: a valid CA that never signed the session broker's certificate."""
    return tls.ensure_ca(tmp_path_factory.mktemp("other-ca-home")).cert_file


def test_a_client_trusting_another_ca_fails_the_handshake_clearly(
    kafka_broker: Any, other_ca: Path, demo_data: Path, tmp_path: Path
) -> None:
    ca = kafka_broker.service.ca_file
    assert probe_kafka(kafka_broker.bootstrap_servers, 2, ssl_context=kafka_ssl_context(ca))
    assert not probe_kafka(
        kafka_broker.bootstrap_servers, 2, ssl_context=kafka_ssl_context(other_ca)
    )
    # stockbatch's bus client: a TransportError naming the fix, fast (no waiting for the
    # timeout: a certificate that does not verify will not verify on the next try).
    s = kafka_settings(kafka_broker, tmp_path / "home", ssl_cafile=other_ca, timeout_s=15.0)
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        pipeline.ingest(s, KaggleSource(demo_data / "huge"))
    assert time.monotonic() - started < 10
    text = str(info.value)
    assert "TLS handshake" in text and "certificate verify failed" in text
    assert str(other_ca) in text and "STOCKBATCH_KAFKA__SSL_CAFILE" in text
    # The CLI: one message, exit code 1, no traceback, no password.
    res = stockbatch_proc(env_of(s), "collect", "-q")
    assert res.returncode == 1, res.stderr
    assert "TLS handshake" in res.stderr and "Traceback" not in res.stderr
    assert kafka_broker.credentials.password not in res.stderr + res.stdout


@contextlib.contextmanager
def tls_listener(cert: tls.ServerCertificate) -> Iterator[tuple[int, list[str]]]:
    """A TLS server on 127.0.0.1 presenting ``cert``: its port, and per connection
    ``"request"`` (the client accepted the certificate and sent a Kafka request) or
    ``"refused"`` (the handshake failed)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert_file, cert.key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    outcomes: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True) as tls_conn:
                    outcomes.append("request" if len(tls_conn.recv(4)) == 4 else "refused")
            except OSError:  # the client aborted the handshake
                outcomes.append("refused")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], outcomes
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_clients_verify_the_host_name(kafka_broker: Any, tmp_path: Path) -> None:
    # A certificate of the broker's own CA, valid in every other way, whose SANs lack
    # 127.0.0.1: a client that connects to 127.0.0.1 must refuse it.
    wrong = tls.issue(kafka_broker.home, "kafka-without-127", hosts=("localhost",))
    ca = kafka_broker.service.ca_file
    assert wrong.ca_file == ca
    with tls_listener(wrong) as (port, outcomes):
        k = kafka_settings(kafka_broker, tmp_path, bootstrap_servers=f"127.0.0.1:{port}")
        k = k.kafka.model_copy(update={"timeout_s": 10.0})
        started = time.monotonic()
        with pytest.raises(TransportError, match="does not name the host") as info:
            connect(k, ClientErrors())
        assert time.monotonic() - started < 8
        assert "certificate verify failed" in str(info.value)
        assert outcomes and set(outcomes) == {"refused"}
        # The control: the very same client with the host name check turned off accepts
        # the certificate and sends its first request, so the check is what refused it.
        outcomes.clear()
        unchecked = AdminClient(
            {**client_config(k), "ssl.endpoint.identification.algorithm": "none"}
        )
        deadline = time.monotonic() + 10
        while "request" not in outcomes and time.monotonic() < deadline:
            with contextlib.suppress(KafkaException):
                unchecked.list_topics(timeout=1)
        assert "request" in outcomes
        # Python's probe checks the name the same way.
        assert not probe_kafka(f"127.0.0.1:{port}", 2, ssl_context=kafka_ssl_context(ca))
    # The broker's Java side (inter-broker and controller connections) checks names too.
    props = kafka_broker.service.properties_file.read_text()
    assert "ssl.endpoint.identification.algorithm=https\n" in props


def test_the_controller_listener_takes_mutual_tls_only(kafka_broker: Any) -> None:
    service: KafkaService = kafka_broker.service
    controller = f"127.0.0.1:{service._stored_state()['controller_port']}"
    props = service.properties_file.read_text()
    assert "listener.security.protocol.map=CONTROLLER:SSL,SASL_SSL:SASL_SSL\n" in props
    assert "listener.name.controller.ssl.client.auth=required\n" in props
    ca = service.ca_file
    assert ca is not None
    # Plain TCP: no answer. TLS without a client certificate: refused.
    assert not probe_kafka(controller, 2)
    assert not probe_kafka(controller, 2, ssl_context=kafka_ssl_context(ca))
    # With a certificate of the home's CA (what the nodes present): it answers.
    pair = tls.issue(kafka_broker.home, "kafka")
    assert probe_kafka(
        controller, 2, ssl_context=kafka_ssl_context(ca, pair.cert_file, pair.key_file)
    )


def test_passwords_never_on_a_command_line_nor_in_the_logs(kafka_broker: Any) -> None:
    service: KafkaService = kafka_broker.service
    passwords = list(service._stored_state()["users"].values())
    assert len(passwords) == 2
    pid = service.status().pid
    assert pid is not None
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    assert "kafka.Kafka" in cmdline
    logs = [service.log_file, service.stdout_file]
    assert all(p.exists() for p in logs)
    for password in passwords:
        assert password not in cmdline
        for log in service.log_file.parent.glob("*"):
            assert password not in log.read_text(errors="replace"), log
        assert password not in service.stdout_file.read_text(errors="replace")
    # Where they are: files of mode 0600 only.
    for private in (
        service.properties_file,
        service.client_properties_file,
        service.keystore_file,
        service._state_file,
    ):
        assert oct(private.stat().st_mode & 0o777) == "0o600", private
    assert not (service.dir / ".format.args").exists()


def test_format_gets_the_scram_users_from_an_argument_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # kafka-storage format (run for real) with the spy below: the passwords reach it
    # through a 0600 `java @file`, never its command line.
    service = KafkaService(tmp_path / "home")
    state = service._state_for_start()
    state["port"] = free_port()
    seen: list[tuple[list[str], str, int]] = []
    real_run = subprocess.run

    def spy(cmd: list[str], **kwargs: Any) -> Any:
        if "-cp" in cmd:  # the tool (not `java -version`)
            arg_file = Path(cmd[-1].removeprefix("@"))
            seen.append((list(cmd), arg_file.read_text(), arg_file.stat().st_mode & 0o777))
        return real_run(cmd, **kwargs)

    tools = (find_java(), ensure_kafka_jars())
    monkeypatch.setattr(subprocess, "run", spy)
    service._prepare(state, tools)
    assert (service.data_dir / "meta.properties").exists()
    assert len(seen) == 1
    cmd, args, mode = seen[0]
    for password in state["users"].values():
        assert not any(password in part for part in cmd)
        assert password in args
    assert mode == 0o600 and "--add-scram" in args and "kafka.tools.StorageTool" in args
    assert not Path(cmd[-1][1:]).exists()  # deleted after the run


def test_kafka_java_tools_use_the_client_properties_file(kafka_broker: Any) -> None:
    # What the benchmark's ProducerPerformance relies on: Kafka's own Java client,
    # SASL_SSL with the home's CA (host name checked), from the 0600 file.
    topic = _create_topic(kafka_broker.client_config())
    service: KafkaService = kafka_broker.service
    cmd = [
        find_java(),
        "-cp",
        f"{kafka_libs_dir()}/*",
        "org.apache.kafka.tools.TopicCommand",
        "--bootstrap-server",
        kafka_broker.bootstrap_servers,
        "--command-config",
        str(service.client_properties_file),
        "--list",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert topic in done.stdout.split()
    props = service.client_properties_file.read_text()
    assert "security.protocol=SASL_SSL\n" in props
    assert "ssl.endpoint.identification.algorithm=https\n" in props


def test_insecure_broker_smoke(kafka_broker_insecure: Any) -> None:
    service: KafkaService = kafka_broker_insecure.service
    assert any("WITHOUT TLS" in w for w in service.warnings)
    record = recorded_endpoints(kafka_broker_insecure.home)["kafka"]
    assert record["security_protocol"] == "PLAINTEXT"
    assert record["ssl_cafile"] is None and record["sasl_username"] is None
    config = kafka_broker_insecure.client_config()
    assert config == {
        "bootstrap.servers": kafka_broker_insecure.bootstrap_servers,
        "security.protocol": "PLAINTEXT",
    }
    topic = _create_topic(config)
    records = _records(3, "insecure")
    _produce(config, topic, records)
    assert _consume_all(config, topic, 3) == records
    assert "CONTROLLER:PLAINTEXT" in service.properties_file.read_text()
    # The CLI says so every time; and never switches this home to TLS silently.
    home = str(kafka_broker_insecure.home)
    runner = CliRunner()
    result = runner.invoke(services_app, ["up", "kafka", "--insecure", "--home", home])
    assert result.exit_code == 0, result.output
    assert "WARNING: kafka: Kafka runs WITHOUT TLS (--insecure)" in result.output
    result = runner.invoke(services_app, ["up", "kafka", "--home", home])
    assert result.exit_code == 1
    assert "without TLS (PLAINTEXT, --insecure)" in result.output
    assert "down --purge kafka" in result.output


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
