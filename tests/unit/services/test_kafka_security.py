"""Kafka's listener security without a broker: the options, the switch guard, the
generated server and client settings (the broker tests run them for real)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockbatch.services.kafka import (
    INSECURE_WARNING,
    KafkaService,
    ScramCredentials,
    java_client_properties,
    librdkafka_config,
    refuse_switch,
    security_protocol_of,
)
from stockbatch.services.system import ServiceError

CREDS = ScramCredentials("stockbatch", "s3cret-pw")


def test_protocol_of_each_mode() -> None:
    assert security_protocol_of(True, True) == "SASL_SSL"
    assert security_protocol_of(True, False) == "SASL_SSL"  # TLS always authenticates
    assert security_protocol_of(False, True) == "SASL_PLAINTEXT"
    assert security_protocol_of(False, False) == "PLAINTEXT"


def test_a_new_broker_is_secured_unless_insecure(tmp_path: Path) -> None:
    assert KafkaService(tmp_path).security_protocol == "SASL_SSL"
    assert KafkaService(tmp_path, insecure=True).security_protocol == "PLAINTEXT"
    assert KafkaService(tmp_path, scram=True, insecure=True).security_protocol == "SASL_PLAINTEXT"
    assert KafkaService(tmp_path).ca_file is None  # nothing issued before the first up


def test_switching_a_home_between_tls_and_plain_is_refused(tmp_path: Path) -> None:
    tls_state = {"security_protocol": "SASL_SSL"}
    plain_state = {"security_protocol": "PLAINTEXT"}
    refuse_switch(tmp_path, {}, insecure=False, scram=None)  # never started: either mode
    refuse_switch(tmp_path, {}, insecure=True, scram=False)
    refuse_switch(tmp_path, tls_state, insecure=False, scram=True)
    refuse_switch(tmp_path, plain_state, insecure=True, scram=True)  # SCRAM on/off: allowed
    with pytest.raises(ServiceError, match=r"set up with TLS.*without --insecure.*--purge kafka"):
        refuse_switch(tmp_path, tls_state, insecure=True, scram=None)
    with pytest.raises(ServiceError, match=r"without TLS \(PLAINTEXT.*with --insecure.*--purge"):
        refuse_switch(tmp_path, plain_state, insecure=False, scram=None)
    with pytest.raises(ServiceError, match="--no-scram needs --insecure"):
        refuse_switch(tmp_path, {}, insecure=False, scram=False)


def test_client_settings_of_each_mode() -> None:
    conf = librdkafka_config("127.0.0.1:1", "SASL_SSL", CREDS, "/ca.pem", **{"acks": "all"})
    assert conf == {
        "bootstrap.servers": "127.0.0.1:1",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "stockbatch",
        "sasl.password": "s3cret-pw",
        "ssl.ca.location": "/ca.pem",
        "acks": "all",
    }  # no ssl.endpoint.identification.algorithm: librdkafka's default (https) stays
    assert librdkafka_config("h:1", "PLAINTEXT", None, None) == {
        "bootstrap.servers": "h:1",
        "security.protocol": "PLAINTEXT",
    }
    java = java_client_properties("127.0.0.1:1", "SASL_SSL", CREDS, "/ca.pem")
    assert "security.protocol=SASL_SSL\n" in java
    assert 'username="stockbatch" password="s3cret-pw";\n' in java
    assert "ssl.truststore.type=PEM\nssl.truststore.location=/ca.pem\n" in java
    assert "ssl.endpoint.identification.algorithm=https\n" in java
    plain = java_client_properties("h:1", "PLAINTEXT", CREDS, None)
    assert "sasl" not in plain and "ssl" not in plain


def _props(service: KafkaService, protocol: str, ca: str | None) -> str:
    state = {
        "port": 9092,
        "controller_port": 9093,
        "security_protocol": protocol,
        "ca_file": ca,
        "users": {"stockbatch": "client-pw", "kafka-broker": "broker-pw"},
    }
    return service._server_properties(state)


def test_server_properties_put_every_listener_on_tls(tmp_path: Path) -> None:
    service = KafkaService(tmp_path)
    props = _props(service, "SASL_SSL", "/home/services/tls/ca.pem")
    for line in (
        "listeners=SASL_SSL://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
        "advertised.listeners=SASL_SSL://127.0.0.1:9092",
        "listener.security.protocol.map=CONTROLLER:SSL,SASL_SSL:SASL_SSL",
        "inter.broker.listener.name=SASL_SSL",
        "sasl.enabled.mechanisms=SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={service.keystore_file}",
        "ssl.truststore.type=PEM",
        "ssl.truststore.location=/home/services/tls/ca.pem",
        "ssl.endpoint.identification.algorithm=https",
        "listener.name.controller.ssl.client.auth=required",
    ):
        assert f"{line}\n" in props, line
    jaas = (
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="kafka-broker" password="broker-pw";\n'
    )
    assert jaas in props
    assert "client-pw" not in props  # the broker holds its own login only


def test_server_properties_of_the_insecure_modes(tmp_path: Path) -> None:
    service = KafkaService(tmp_path, insecure=True)
    plain = _props(service, "PLAINTEXT", None)
    assert "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n" in plain
    assert "ssl." not in plain and "sasl" not in plain
    scram = _props(service, "SASL_PLAINTEXT", None)
    assert "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=" in scram
    assert "ssl." not in scram
    assert "WITHOUT TLS" in INSECURE_WARNING and "down --purge kafka" in INSECURE_WARNING
