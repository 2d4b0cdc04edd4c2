"""The services the project can provision, by name (the CLI's list).

Adding one: write ``services/<name>.py`` with a subclass of
:class:`stockbatch.services.base.LocalService` (it gets ``up``/``down``/``status``/
``restart``/``purge``, its folder under ``home/services/<name>`` and its entry in
services.json from the base), then add a :class:`ServiceSpec` to :data:`SERVICES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stockbatch.services.airflow import AirflowService, airflow_version
from stockbatch.services.base import Service
from stockbatch.services.elasticsearch import ELASTICSEARCH_VERSION, ElasticsearchService
from stockbatch.services.kafka import KAFKA_VERSION, kafka_service
from stockbatch.services.opensearch import OPENSEARCH_VERSION, OpenSearchService
from stockbatch.services.postgresql import PostgresService
from stockbatch.services.spark import SparkService, spark_version
from stockbatch.services.system import ServiceError


@dataclass(frozen=True)
class ServiceSpec:
    """A provisionable service: its name, what it is, and how to build one for a home."""

    name: str
    description: str
    factory: Callable[..., Service]
    options: tuple[str, ...] = ()
    """Keyword options the factory accepts besides ``home`` (the CLI passes only these)."""


SERVICES: dict[str, ServiceSpec] = {
    "kafka": ServiceSpec(
        name="kafka",
        description=f"Apache Kafka {KAFKA_VERSION} broker, KRaft mode, on 127.0.0.1 "
        "(or a cluster of N broker+controller nodes): SASL_SSL (SCRAM-SHA-512), controller "
        "over mutual TLS",
        factory=kafka_service,
        options=("port", "scram", "brokers", "insecure"),
    ),
    "opensearch": ServiceSpec(
        name="opensearch",
        description=f"OpenSearch {OPENSEARCH_VERSION} single node on 127.0.0.1: HTTPS and "
        "transport TLS, internal users admin/loader/reader (security plugin)",
        factory=OpenSearchService,
        options=("insecure",),
        # No "port": the CLI's --port is Kafka's, and one port cannot serve both.
    ),
    "elasticsearch": ServiceSpec(
        name="elasticsearch",
        description=f"Elasticsearch {ELASTICSEARCH_VERSION} single node on 127.0.0.1: HTTPS "
        "and transport TLS, users admin/loader/reader (x-pack security; an unprivileged "
        "user when root)",
        factory=ElasticsearchService,
        options=("insecure",),
        # No "port", as for OpenSearch.
    ),
    "postgresql": ServiceSpec(
        name="postgresql",
        description="PostgreSQL (Debian package) throwaway cluster on 127.0.0.1, TLS only, "
        "three roles",
        factory=PostgresService,
        options=("port", "insecure"),
    ),
    "spark": ServiceSpec(
        name="spark",
        description=f"Apache Spark {spark_version()} standalone cluster (from the installed "
        "PySpark): one master and N workers on 127.0.0.1; shared secret, TLS RPC, HTTPS UIs",
        factory=SparkService,
        # No "port", as for OpenSearch: the CLI's --port would also go to Kafka's broker.
        options=("workers", "worker_cores", "worker_memory", "insecure"),
    ),
    "airflow": ServiceSpec(
        name="airflow",
        description=f"Apache Airflow {airflow_version()}: API server (UI), scheduler, DAG "
        "processor, triggerer on 127.0.0.1, API over HTTPS; metadata in the PostgreSQL above "
        "(else SQLite)",
        factory=AirflowService,
        options=("port", "insecure"),
    ),
}


def service_names() -> list[str]:
    """Names of every provisionable service, in start order."""
    return list(SERVICES)


def get_service(name: str, home: Path, **options: Any) -> Service:
    """Build service ``name`` for ``home``; options it does not take are ignored."""
    spec = SERVICES.get(name)
    if spec is None:
        raise ServiceError(f"unknown service {name!r}; known: {', '.join(SERVICES)}")
    kwargs = {k: v for k, v in options.items() if k in spec.options}
    return spec.factory(home, **kwargs)
