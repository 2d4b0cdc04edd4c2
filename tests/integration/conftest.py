"""Real services for integration tests, started once per test session.

``pg`` is a PostgreSQL server, ``opensearch_node`` an OpenSearch node and
``elasticsearch_node`` an Elasticsearch node, each provisioned by the project
(deploy/services/README.md) under its own temporary home, shared by the storage
tests of every folder below (tests/integration/search runs on both search nodes).

``spark_cluster`` is a Spark standalone cluster (one master, two workers) run from
the installed PySpark, for the Spark engine's cluster tests.

``kafka_broker`` is a real Apache Kafka 4 broker (KRaft) on 127.0.0.1, provisioned
from Maven Central on first use (see deploy/services/README.md), secured as
``services up kafka`` sets it up: SASL_SSL (SCRAM-SHA-512 over TLS, certificate of
its home's CA) for clients, mutual TLS on the controller listener.
``kafka_broker_insecure`` is a second one started with ``--insecure`` (PLAINTEXT),
for the one smoke test of that mode. Both are stopped at the end of the session,
whatever happened. A machine without Java or Maven fails
these fixtures with what to install: integration tests never skip silently.

Fault tests may stop, kill or restart ``kafka_broker.service`` (or ``pg.service``,
``opensearch_node.service``, ``elasticsearch_node.service``); they must leave it
running (``ensure_running()``) for the tests after them. The start-once/stop-at-end pattern is
:func:`support.services.session_service`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from integration.search.search_support import ElasticsearchNode, OpenSearchNode
from stockbatch.services import KafkaService, ScramCredentials
from stockbatch.services.elasticsearch import ElasticsearchService
from stockbatch.services.opensearch import OpenSearchService
from stockbatch.services.postgresql import PostgresService
from stockbatch.services.spark import SparkService
from support.services import RunningService, remove_server_home, server_home, session_service


@dataclass
class KafkaBroker(RunningService[KafkaService]):
    """A running local broker: where it listens, its home, and its service handle."""

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:<port>``; stays the same across restarts."""
        return self.service.bootstrap_servers

    @property
    def credentials(self) -> ScramCredentials | None:
        """The client SCRAM user (None on a PLAINTEXT broker)."""
        return self.service.credentials

    def client_config(self, **overrides: Any) -> dict[str, Any]:
        """confluent-kafka config reaching this broker (SASL_SSL settings and its CA file
        on the secured broker)."""
        return self.service.client_config(**overrides)

    def env(self) -> dict[str, str]:
        """STOCKBATCH_KAFKA__* variables pointing a stockbatch command at this broker."""
        values = {
            "STOCKBATCH_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "STOCKBATCH_KAFKA__SECURITY_PROTOCOL": self.service.security_protocol,
        }
        creds = self.credentials
        if creds:
            values |= {
                "STOCKBATCH_KAFKA__SASL_MECHANISM": creds.mechanism,
                "STOCKBATCH_KAFKA__SASL_USERNAME": creds.username,
                "STOCKBATCH_KAFKA__SASL_PASSWORD": creds.password,
            }
        if (ca := self.service.ca_file) is not None:
            values["STOCKBATCH_KAFKA__SSL_CAFILE"] = str(ca)
        return values


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """The default (secured: SASL_SSL) Kafka broker for the whole session, in a fresh
    temp home (its own CA)."""
    home = tmp_path_factory.mktemp("kafka-home")
    broker = KafkaBroker(KafkaService(home), home)
    with session_service(broker, "Kafka broker") as b:
        yield b


@pytest.fixture(scope="session")
def kafka_broker_insecure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A Kafka broker started with --insecure: PLAINTEXT listeners."""
    home = tmp_path_factory.mktemp("kafka-insecure-home")
    broker = KafkaBroker(KafkaService(home, insecure=True), home)
    with session_service(broker, "Kafka broker (--insecure)") as b:
        yield b


# ----------------------------------------------------------------------------- PostgreSQL


@dataclass
class Postgres(RunningService[PostgresService]):
    """The session's running server and its home."""

    def superuser(self, database: str = "postgres") -> psycopg.Connection[Any]:
        """An autocommit psycopg connection as the cluster's superuser."""
        url = self.service.url("superuser", database=database).replace("+psycopg", "")
        return psycopg.connect(url, autocommit=True, connect_timeout=10)


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """A PostgreSQL server for the whole session (its home is a fresh temp folder)."""
    home = server_home(tmp_path_factory, "pg-home")
    try:
        with session_service(Postgres(PostgresService(home), home), "PostgreSQL server") as server:
            yield server
    finally:
        remove_server_home(home)


# ----------------------------------------------------------------------------- OpenSearch


@pytest.fixture(scope="session")
def opensearch_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenSearchNode]:
    """An OpenSearch node for the whole session (its home is a fresh temp folder)."""
    home = tmp_path_factory.mktemp("opensearch-home")
    node = OpenSearchNode(OpenSearchService(home), home)
    with session_service(node, "OpenSearch node") as running:
        yield running


@pytest.fixture(scope="session")
def elasticsearch_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ElasticsearchNode]:
    """An Elasticsearch node for the whole session (its home is a fresh temp folder),
    secured as ``services up elasticsearch`` sets it up: x-pack security, TLS with its
    home's CA, file realm users (``node.backend()`` logs in as ``admin``)."""
    home = server_home(tmp_path_factory, "elasticsearch-home")
    node = ElasticsearchNode(ElasticsearchService(home), home)
    try:
        with session_service(node, "Elasticsearch node") as running:
            yield running
    finally:
        remove_server_home(home)


# ----------------------------------------------------------------------------- Spark


@dataclass
class SparkCluster(RunningService[SparkService]):
    """The session's Spark standalone cluster (a master and two workers) and its home."""

    @property
    def master_url(self) -> str:
        """``spark://127.0.0.1:<port>``; stays the same across restarts."""
        return self.service.master_url

    @property
    def web_ui(self) -> str:
        """The master's web UI (``/json/``: workers, applications)."""
        return self.service.web_ui


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkCluster]:
    """A Spark standalone cluster of 2 workers (1 core, 1 GB each) for the whole session."""
    home = tmp_path_factory.mktemp("spark-home")
    cluster = SparkCluster(SparkService(home, workers=2, worker_cores=1, worker_memory="1g"), home)
    with session_service(cluster, "Spark standalone cluster") as running:
        yield running
