"""The message bus between ingest and the lake: Kafka producer, bounded collector, codec.

``codec`` is the versioned message format; ``kafka`` the producer service and
the batch collector (confluent-kafka, imported only when the Kafka transport
is used).
"""

from __future__ import annotations


class TransportError(Exception):
    """A transport failure the user can act on; the message says what to do."""
