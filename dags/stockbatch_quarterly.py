"""stockbatch_quarterly: the quarterly ML table of each closed quarter, as an immutable,
versioned snapshot for the ML application.

Runs whenever the daily DAG publishes ``stockbatch://gold/daily``; it goes on only
when a quarter has closed and the daily gold covers its last XNYS session (a run's
``conf`` may name the quarter: ``{"quarter": "2017Q4"}``). The snapshot is
``exports/quarterly/<quarter>/<run_id>.parquet`` with its manifest; unchanged data
gives the existing version back (byte-identical), changed data a new version beside
it; ``latest.json`` moves atomically. Publishes ``stockbatch://gold/quarterly``.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import Asset, dag, get_current_context, task

from stockbatch.orchestrate.dag_args import dag_kwargs
from stockbatch.settings import Settings

DAG_ID = "stockbatch_quarterly"
DAILY_ASSET = Asset("stockbatch://gold/daily")
QUARTERLY_ASSET = Asset("stockbatch://gold/quarterly")
log = logging.getLogger(__name__)


def _asked() -> str | None:
    conf = get_current_context()["dag_run"].conf or {}
    quarter = conf.get("quarter")
    return None if quarter is None else str(quarter)


@dag(schedule=[DAILY_ASSET], **dag_kwargs(DAG_ID, __doc__))
def stockbatch_quarterly() -> None:
    @task.short_circuit
    def closed_quarter() -> str | None:
        """The quarter to snapshot, or nothing (the run is skipped, the reason logged)."""
        from stockbatch.orchestrate import tasks

        settings = Settings()
        quarter = tasks.pick_quarter(settings, _asked())
        if quarter is None:
            log.info("nothing to snapshot: %s", tasks.quarter_not_ready_reason(settings, _asked()))
        return quarter

    @task(outlets=[QUARTERLY_ASSET])
    def snapshot(quarter: str) -> dict[str, Any]:
        from stockbatch.orchestrate import tasks

        run_id = str(get_current_context()["dag_run"].run_id)
        return tasks.snapshot(Settings(), DAG_ID, run_id, quarter)

    snapshot(closed_quarter())


stockbatch_quarterly()
