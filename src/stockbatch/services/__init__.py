"""Real services (Kafka now; PostgreSQL and OpenSearch next) provisioned and run on
loopback by the project itself, with their data under ``$STOCKBATCH_HOME/services``.

Entry points: ``stockbatch services up|down|status`` (:mod:`stockbatch.services.cli`),
:class:`KafkaService` for code and test fixtures, and :func:`recorded_endpoints`
to find what ``services up`` started. See ``deploy/services/README.md``.
"""

from stockbatch.services.base import Service, ServiceError, ServiceStatus
from stockbatch.services.endpoints import recorded_endpoints, services_file
from stockbatch.services.kafka import (
    KAFKA_VERSION,
    KafkaService,
    ScramCredentials,
    effective_kafka_settings,
    ensure_kafka_jars,
    probe_kafka,
    wait_for_kafka,
)
from stockbatch.services.registry import SERVICES, get_service, service_names

__all__ = [
    "KAFKA_VERSION",
    "SERVICES",
    "KafkaService",
    "ScramCredentials",
    "Service",
    "ServiceError",
    "ServiceStatus",
    "effective_kafka_settings",
    "ensure_kafka_jars",
    "get_service",
    "probe_kafka",
    "recorded_endpoints",
    "service_names",
    "services_file",
    "wait_for_kafka",
]
