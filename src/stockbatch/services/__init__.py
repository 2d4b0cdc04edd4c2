"""Real services (Kafka, PostgreSQL, OpenSearch, Elasticsearch, Spark, Airflow) provisioned
and run on loopback by the project itself, with their data under ``$STOCKBATCH_HOME/services``.

Entry points: ``stockbatch services up|down|status`` (:mod:`stockbatch.cli.services`);
the service classes (one :class:`~stockbatch.services.base.LocalService` each) for
code and test fixtures; :mod:`stockbatch.services.endpoints` to find what ``services
up`` started. See ``deploy/services/README.md``.
"""

from stockbatch.services.base import LocalService, Service, ServiceStatus
from stockbatch.services.elasticsearch import ELASTICSEARCH_VERSION, ElasticsearchService
from stockbatch.services.endpoints import (
    effective_kafka_settings,
    effective_search_settings,
    effective_search_url,
    effective_spark_settings,
    recorded_endpoints,
    services_file,
)
from stockbatch.services.kafka import (
    KAFKA_VERSION,
    KafkaService,
    ScramCredentials,
    ensure_kafka_jars,
    probe_kafka,
    wait_for_kafka,
)
from stockbatch.services.opensearch import OPENSEARCH_VERSION, OpenSearchService
from stockbatch.services.postgresql import PostgresService
from stockbatch.services.registry import SERVICES, get_service, service_names
from stockbatch.services.spark import SparkService
from stockbatch.services.system import ServiceError

__all__ = [
    "ELASTICSEARCH_VERSION",
    "KAFKA_VERSION",
    "OPENSEARCH_VERSION",
    "SERVICES",
    "ElasticsearchService",
    "KafkaService",
    "LocalService",
    "OpenSearchService",
    "PostgresService",
    "ScramCredentials",
    "Service",
    "ServiceError",
    "ServiceStatus",
    "SparkService",
    "effective_kafka_settings",
    "effective_search_settings",
    "effective_search_url",
    "effective_spark_settings",
    "ensure_kafka_jars",
    "get_service",
    "probe_kafka",
    "recorded_endpoints",
    "service_names",
    "services_file",
    "wait_for_kafka",
]
