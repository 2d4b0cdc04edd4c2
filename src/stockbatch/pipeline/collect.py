"""The collect stage: land what the Kafka topic holds in bronze."""

from __future__ import annotations

import time

from stockbatch.results import CollectResult, new_run_id
from stockbatch.settings import Settings


def collect(
    settings: Settings,
    *,
    run_id: str | None = None,
    group: str | None = None,
    timeout_s: float | None = None,
    join_grace_s: float = 0.0,
) -> CollectResult:
    """Land what the Kafka topic holds in bronze: one bounded batch of the consumer group.

    Reads each assigned partition from its committed offset up to its end offset
    at assignment, writes bronze Parquet and the catalog, and only then commits.
    Several collectors with the same ``group`` split the partitions. Undecodable
    records go to the dead-letter topic and are counted (``dead_lettered``).
    """
    from stockbatch.bus.collector import collect_to_bronze

    started = time.perf_counter()
    run_id = run_id or new_run_id()
    stats = collect_to_bronze(
        settings, run_id=run_id, group=group, timeout_s=timeout_s, join_grace_s=join_grace_s
    )
    return CollectResult(run_id=run_id, stats=stats, duration_s=time.perf_counter() - started)
