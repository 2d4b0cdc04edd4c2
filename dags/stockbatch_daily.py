"""stockbatch_daily: one run per XNYS session, after the US close.

The data interval is one weekday (22:00 UTC to 22:00 UTC, after the close in summer
and winter); its session is the interval end's date, and a weekday that is not a
session (a holiday) short-circuits the run. Tasks are the pipeline stages, each the
same stage function as ``stockbatch run`` (``stockbatch.orchestrate.tasks``), all
recording into one run manifest; ``as_of`` is the session (no look-ahead).

Nothing heavy at import: stockbatch modules are imported inside the tasks.
Settings: the ``STOCKBATCH_*`` environment of the Airflow processes (the same tree
as the CLI's); a run's ``conf`` may override ``source``, ``path``, ``symbols``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Asset, dag, get_current_context, task
from airflow.timetables.interval import CronDataIntervalTimetable

from stockbatch.orchestrate.dag_args import dag_kwargs
from stockbatch.settings import Settings

DAG_ID = "stockbatch_daily"
DAILY_ASSET = Asset("stockbatch://gold/daily")
AFTER_THE_CLOSE = CronDataIntervalTimetable("0 22 * * 1-5", timezone="UTC")
"""One interval per weekday, ending at 22:00 UTC: after the US close, summer and winter."""


def _settings() -> Settings:
    return Settings()


def _session() -> dt.date:
    """The run's session: the date its data interval ends (UTC); without an interval (a
    manual run with no logical date), the newest session closed when it was triggered."""
    from stockbatch.orchestrate import tasks

    ctx = get_current_context()
    return tasks.session_of(ctx.get("data_interval_end"), ctx["dag_run"].run_after)


def _run_ids() -> tuple[str, str]:
    """(the run's stockbatch run id from the ``begin`` task, the Airflow run id)."""
    ctx = get_current_context()
    run_id = ctx["ti"].xcom_pull(task_ids="begin")
    return str(run_id), str(ctx["dag_run"].run_id)


@dag(
    schedule=CronDataIntervalTimetable("0 22 * * 1-5", timezone="UTC"),
    **dag_kwargs(DAG_ID, __doc__),
)
def stockbatch_daily() -> None:
    @task.short_circuit
    def is_session() -> bool:
        """Skip the run when its day is not an XNYS session (a holiday)."""
        from stockbatch.orchestrate import tasks

        return tasks.is_session(_session())

    @task
    def begin() -> str:
        """Open the run's manifest (linked to this Airflow run); returns its run id."""
        from stockbatch.orchestrate import tasks

        ctx = get_current_context()
        conf: dict[str, Any] = dict(ctx["dag_run"].conf or {})
        return tasks.begin(
            _settings(),
            DAG_ID,
            str(ctx["dag_run"].run_id),
            {"session": _session().isoformat(), "as_of": _session().isoformat(), "conf": conf},
        )

    @task
    def ingest() -> dict[str, Any]:
        from stockbatch.orchestrate import tasks

        settings = _settings()
        conf = tasks.DailyConf.of(settings, get_current_context()["dag_run"].conf)
        return tasks.ingest(settings, _run_ids()[0], DAG_ID, conf, _session())

    @task
    def collect() -> dict[str, Any]:
        from stockbatch.orchestrate import tasks

        return tasks.collect(_settings(), _run_ids()[0], DAG_ID)

    @task
    def process() -> dict[str, Any]:
        from stockbatch.orchestrate import tasks

        return tasks.process(_settings(), _run_ids()[0], DAG_ID, _session())

    @task
    def load_warehouse() -> dict[str, Any]:
        from stockbatch.orchestrate import tasks

        return tasks.load_warehouse(_settings(), _run_ids()[0], DAG_ID)

    @task
    def sync_search() -> dict[str, Any]:
        from stockbatch.orchestrate import tasks

        return tasks.sync_search(_settings(), _run_ids()[0], DAG_ID)

    @task
    def quality_gate() -> dict[str, Any]:
        """Fail the run (no retry: the data will not change) when the counts are bad."""
        from airflow.sdk.exceptions import AirflowFailException

        from stockbatch.orchestrate import tasks

        try:
            return tasks.quality_gate(_settings(), _run_ids()[0], DAG_ID, _session())
        except tasks.GateFailed as exc:
            raise AirflowFailException(str(exc)) from exc

    @task(outlets=[DAILY_ASSET])
    def publish() -> str:
        """Publish the daily asset (the quarterly DAG listens to it)."""
        return _run_ids()[0]

    (
        is_session()
        >> begin()
        >> ingest()
        >> collect()
        >> process()
        >> load_warehouse()
        >> sync_search()
        >> quality_gate()
        >> publish()
    )


stockbatch_daily()
