"""What every Kafka client of stockbatch shares.

The settings to use (:func:`effective_kafka`), the librdkafka configuration
(:func:`client_config`), librdkafka's client-level errors collected for clear
messages (:class:`ClientErrors`), connecting with a bounded wait
(:func:`connect`), creating a topic if it is missing (:func:`ensure_topic`), and
the crash points of the fault tests (:func:`crash_point`).

confluent-kafka is imported inside the functions that need it: it is optional,
and only the Kafka transport uses it.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

from stockbatch.bus import TransportError
from stockbatch.settings import KafkaSettings, Settings

log = logging.getLogger("stockbatch.kafka")
rdkafka_log = logging.getLogger("stockbatch.kafka.librdkafka")
# librdkafka reports transient trouble (a broker restarting, a reconnect) as log
# lines; the outcome reaches the user as one clear error, so these go to logging
# only (an application that configures logging still sees them), never to stderr.
rdkafka_log.addHandler(logging.NullHandler())


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


class ClientErrors:
    """Collects librdkafka's client-level errors (``error_cb``) for clear messages."""

    def __init__(self) -> None:
        self.last: Any = None
        self.fatal: Any = None
        self.auth: Any = None
        self.tls: Any = None

    def __call__(self, err: Any) -> None:
        from confluent_kafka import KafkaError

        self.last = err
        if err.fatal():
            self.fatal = err
        if err.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
            self.auth = err
        if err.code() == KafkaError._SSL:
            self.tls = err
        log.debug("kafka client error: %s", err)

    @property
    def certificate_rejected(self) -> bool:
        """True once a TLS handshake failed because the broker's certificate did not
        verify (unknown CA, or a host name it does not name): retrying cannot help."""
        return self.tls is not None and "certificate verify failed" in self.tls.str()

    def describe(self) -> str:
        """``": <the most telling error>"`` to append to a message, or ``""``."""
        err = self.auth or self.fatal or self.tls or self.last
        return f": {err.str()}" if err is not None else ""


def connect(k: KafkaSettings, errors: ClientErrors) -> tuple[Any, Any]:
    """An admin client and the cluster metadata, or a ``TransportError`` within
    ``k.timeout_s`` saying why not (unreachable, or refused credentials)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    conf: dict[str, Any] = {**client_config(k), "error_cb": errors}
    admin = AdminClient(conf)
    deadline = time.monotonic() + k.timeout_s
    while True:
        remaining = deadline - time.monotonic()
        try:
            return admin, admin.list_topics(timeout=max(0.1, min(1.0, remaining)))
        except KafkaException as exc:
            admin.poll(0)  # serves error_cb: an authentication failure is reported there
            if errors.certificate_rejected:
                raise TransportError(
                    f"the TLS handshake with Kafka at {k.bootstrap_servers} failed: the "
                    f"broker's certificate is not signed by {k.ssl_cafile or 'a system CA'}, "
                    f"or does not name the host connected to{errors.describe()}. Set "
                    "STOCKBATCH_KAFKA__SSL_CAFILE to the CA that signed it (`stockbatch "
                    "services up kafka` records its own as ssl_cafile in services.json) and "
                    "connect by a name the certificate holds."
                ) from None
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


def topic_config(k: KafkaSettings) -> dict[str, str]:
    """Topic-level settings of the topics stockbatch creates (``min.insync.replicas``
    when set: with ``acks=all`` a write then needs that many replicas)."""
    if k.min_insync_replicas is None:
        return {}
    return {"min.insync.replicas": str(k.min_insync_replicas)}


def ensure_topic(
    admin: Any,
    metadata: Any,
    topic: str,
    partitions: int,
    replicas: int,
    config: dict[str, str] | None = None,
) -> None:
    """Create ``topic`` with ``config`` unless ``metadata`` lists it (one created
    meanwhile is fine; an existing topic is left as it is)."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    if topic in metadata.topics and metadata.topics[topic].error is None:
        return
    new = NewTopic(
        topic, num_partitions=partitions, replication_factor=replicas, config=config or {}
    )
    futures = admin.create_topics([new], operation_timeout=10)
    try:
        futures[topic].result(timeout=30)
    except KafkaException as exc:
        err = exc.args[0]
        if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise TransportError(f"cannot create Kafka topic {topic!r}: {err.str()}") from None


def crash_point(name: str) -> None:
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
