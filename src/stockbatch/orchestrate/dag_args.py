"""What both DAGs declare alike (light: the DAG files import it at parse time)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from stockbatch.settings import Settings

START_DATE = dt.datetime(2000, 1, 3, tzinfo=dt.UTC)
"""Early, so a backfill may reach any past session (``catchup`` is off: no flood)."""


def dag_kwargs(dag_id: str, doc: str | None) -> dict[str, Any]:
    """The ``@dag`` arguments both DAGs share: one active run, no catchup, retries with
    exponential backoff and a timeout per task from ``Settings.schedule``."""
    schedule = Settings().schedule
    return {
        "dag_id": dag_id,
        "start_date": START_DATE,
        "catchup": False,
        "max_active_runs": 1,
        "tags": ["stockbatch"],
        "doc_md": doc,
        "default_args": {
            "retries": schedule.retries,
            "retry_delay": dt.timedelta(seconds=schedule.retry_delay_s),
            "retry_exponential_backoff": True,
            "execution_timeout": dt.timedelta(minutes=schedule.task_timeout_min),
        },
    }
