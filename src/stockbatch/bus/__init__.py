"""The message bus between ingest and the lake (the Kafka transport).

``codec`` is the versioned message format; ``client`` what every Kafka client
shares (settings, configuration, connecting, topics); ``producer`` the
producer and the ingest run's ``UnitPublisher``; ``collector`` the bounded
batch collector (``collect_to_bronze``) and ``sink`` its bronze writer.
confluent-kafka is imported only when the Kafka transport is used, and this
package imports none of those modules: ``TransportError`` is all it defines.
Design notes: ``docs/design/kafka.md``.
"""

from __future__ import annotations


class TransportError(Exception):
    """A transport failure the user can act on; the message says what to do."""
