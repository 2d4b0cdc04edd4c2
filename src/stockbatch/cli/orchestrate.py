"""``stockbatch orchestrate trigger|status|backfill``: DAG runs on Airflow through its REST API.

The Airflow is the one ``stockbatch services up airflow`` recorded in this home, or
``STOCKBATCH_AIRFLOW__URL`` (+ ``__USERNAME``, ``__PASSWORD``) for another deployment.
Exit codes: 0 success; 1 the run failed, or Airflow is unreachable, refuses the
login or does not know the DAG (one line says what to do); 2 bad usage (bad JSON in
``--conf``, a bad ``--logical-date``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from stockbatch.cli.common import HomeOpt, app, cli_settings, fail, out
from stockbatch.orchestrate.client import (
    AirflowClient,
    AirflowError,
    parse_logical_date,
)

orchestrate_app = typer.Typer(
    name="orchestrate",
    help="Trigger and follow DAG runs on Airflow (the local one of `stockbatch services up "
    "airflow`, or STOCKBATCH_AIRFLOW__URL).",
    no_args_is_help=True,
)
app.add_typer(orchestrate_app, name="orchestrate")

LOG_LINES = 30
"""How many last log lines of a failed task ``trigger --wait`` prints."""


@contextmanager
def _client(home: Path | None) -> Iterator[AirflowClient]:
    settings = cli_settings(home, quiet=True)
    try:
        client = AirflowClient.from_settings(settings)
    except AirflowError as exc:
        fail(str(exc))
        raise AssertionError from exc  # unreachable
    try:
        yield client
    except AirflowError as exc:
        fail(str(exc))
    finally:
        client.close()


def _parse_conf(conf: str | None) -> dict[str, Any]:
    if conf is None:
        return {}
    try:
        value = json.loads(conf)
    except json.JSONDecodeError as exc:
        fail(f"--conf is not valid JSON ({exc.msg} at character {exc.pos}): {conf[:80]!r}", code=2)
        raise AssertionError from exc  # unreachable
    if not isinstance(value, dict):
        fail(f'--conf must be a JSON object like \'{{"source": "kaggle"}}\', got {conf[:80]!r}', 2)
    return dict(value)


def _clock(value: Any) -> str:
    """``2024-03-28 21:00:05`` from an ISO timestamp ('-' when missing)."""
    return str(value)[:19].replace("T", " ") if value else "-"


def _duration(run: dict[str, Any]) -> str:
    seconds = run.get("duration")
    if seconds is None and run.get("start_date"):
        start = dt.datetime.fromisoformat(str(run["start_date"]).replace("Z", "+00:00"))
        seconds = (dt.datetime.now(dt.UTC) - start).total_seconds()
    return f"{float(seconds):.1f} s" if seconds is not None else "-"


@orchestrate_app.command("trigger")
def trigger(
    dag_id: Annotated[str, typer.Argument(help="The DAG to run, e.g. stockbatch_daily.")],
    conf: Annotated[
        str | None,
        typer.Option(
            "--conf", help='The run\'s conf as a JSON object, e.g. \'{"source": "kaggle"}\'.'
        ),
    ] = None,
    logical_date: Annotated[
        str | None,
        typer.Option(
            "--logical-date",
            help="YYYY-MM-DD (midnight UTC) or an ISO date-time; default: none (a manual run).",
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", help="Follow the run: print task states as they change; exit 1 if it fails."
        ),
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="With --wait: give up waiting after this many seconds."),
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Trigger a DAG run (unpausing the DAG if needed); --wait follows it to the end."""
    run_conf = _parse_conf(conf)
    try:
        when = parse_logical_date(logical_date) if logical_date else None
    except ValueError as exc:
        fail(str(exc), code=2)
        raise AssertionError from exc  # unreachable
    with _client(home) as client:
        if client.unpause(dag_id):
            out.print(f"{dag_id}: unpaused (new DAGs start paused)")
        run = client.trigger(dag_id, run_conf, when)
        run_id = str(run["dag_run_id"])
        out.print(
            f"{dag_id}: triggered run {escape(run_id)} ({run.get('state')}); "
            f"{client.url}/dags/{dag_id}/runs/{run_id}"
        )
        if not wait:
            return

        def on_change(ti: dict[str, Any]) -> None:
            if ti.get("state") is None:
                return
            tries = int(ti.get("try_number") or 0)
            again = f" (try {tries})" if tries > 1 else ""
            now = _clock(dt.datetime.now(dt.UTC).isoformat())
            out.print(f"  {now}  {ti['task_id']}: {ti['state']}{again}", highlight=False)

        final = client.follow(dag_id, run_id, on_change, timeout=timeout)
        if final.get("state") == "success":
            out.print(f"{dag_id}: run {escape(run_id)} succeeded in {_duration(final)}")
            return
        failed = [ti for ti in client.task_instances(dag_id, run_id) if ti.get("state") == "failed"]
        for ti in failed:
            tries = int(ti.get("try_number") or 1)
            lines = client.task_log(
                dag_id, run_id, ti["task_id"], tries, int(ti.get("map_index", -1))
            )
            out.print(f"--- last {LOG_LINES} log lines of {ti['task_id']} (try {tries}):")
            for line in lines[-LOG_LINES:]:
                out.print(escape(line), highlight=False)
        names = ", ".join(ti["task_id"] for ti in failed) or "no task failed (see the UI)"
        fail(f"{dag_id}: run {run_id} {final.get('state')} after {_duration(final)}: {names}")


@orchestrate_app.command("status")
def status(
    dag_id: Annotated[
        str | None, typer.Argument(help="Only this DAG's runs (default: every DAG).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many recent runs.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    home: HomeOpt = None,
) -> None:
    """Recent DAG runs, newest first: state, start, end, duration."""
    with _client(home) as client:
        if dag_id is not None:
            client.dag(dag_id)  # DagNotFound lists the DAGs that exist
        runs = client.dag_runs(dag_id, limit=limit)
    if as_json:
        out.print_json(json.dumps(runs, default=str))
        return
    if not runs:
        out.print(f"no runs of {dag_id or 'any DAG'} yet")
        return
    header = (
        f"{'dag':<26} {'run id':<44} {'state':<8} {'start (UTC)':<19} {'end (UTC)':<19} duration"
    )
    out.print(header, highlight=False)
    for run in runs:
        out.print(
            f"{run['dag_id']:<26} {run['dag_run_id']:<44} {run.get('state')!s:<8} "
            f"{_clock(run.get('start_date')):<19} {_clock(run.get('end_date')):<19} "
            f"{_duration(run)}",
            highlight=False,
            markup=False,
        )


REPROCESS = ("none", "failed", "completed")


def _day_end(value: str) -> dt.datetime:
    """``--to``: a plain date means its whole day (the last instant of it, UTC)."""
    moment = parse_logical_date(value)
    if len(value) == 10:
        moment += dt.timedelta(days=1) - dt.timedelta(microseconds=1)
    return moment


def _interval(run: dict[str, Any]) -> str:
    start, end = run.get("data_interval_start"), run.get("data_interval_end")
    if not end:
        return ""
    return f" (data {_clock(start)[:16]} -> {_clock(end)[:16]})"


def _print_failed_logs(client: AirflowClient, dag_id: str, run_id: str) -> list[str]:
    """The last log lines of every failed task of a run; returns their task ids."""
    failed = [ti for ti in client.task_instances(dag_id, run_id) if ti.get("state") == "failed"]
    for ti in failed:
        tries = int(ti.get("try_number") or 1)
        lines = client.task_log(dag_id, run_id, ti["task_id"], tries, int(ti.get("map_index", -1)))
        out.print(f"--- last {LOG_LINES} log lines of {run_id} {ti['task_id']} (try {tries}):")
        for line in lines[-LOG_LINES:]:
            out.print(escape(line), highlight=False)
    return [str(ti["task_id"]) for ti in failed]


@orchestrate_app.command("backfill")
def backfill(
    dag_id: Annotated[str, typer.Argument(help="The DAG to backfill, e.g. stockbatch_daily.")],
    from_date: Annotated[
        str,
        typer.Option(
            "--from",
            help="First logical date: YYYY-MM-DD (from 00:00 UTC) or an ISO date-time.",
        ),
    ],
    to_date: Annotated[
        str,
        typer.Option(
            "--to",
            help="Last logical date: YYYY-MM-DD (that whole day, UTC) or an ISO date-time.",
        ),
    ],
    conf: Annotated[
        str | None,
        typer.Option(
            "--conf", help='Every run\'s conf as a JSON object, e.g. \'{"source": "kaggle"}\'.'
        ),
    ] = None,
    reprocess: Annotated[
        str,
        typer.Option(
            "--reprocess",
            help="Runs that already exist in the range: none (keep them), failed (run "
            "the failed ones again), completed (run them all again).",
        ),
    ] = "none",
    max_active_runs: Annotated[
        int,
        typer.Option(
            "--max-active-runs",
            min=1,
            help="Runs at a time (default 1: the stockbatch DAGs go session by session).",
        ),
    ] = 1,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Follow the runs: print run and task states as they change; exit 1 if "
            "any run fails.",
        ),
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="With --wait: give up waiting after this many seconds."),
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Backfill a range: one DAG run per interval whose logical date is in FROM..TO.

    The scheduler runs them oldest first (Airflow's backfill, POST /api/v2/backfills).
    For stockbatch_daily a run's logical date is 22:00 UTC of the weekday before its
    session: --from 2023-04-05 --to 2023-04-07 runs the sessions 2023-04-06, 2023-04-07
    (Good Friday: skipped) and 2023-04-10.
    """
    run_conf = _parse_conf(conf)
    if reprocess not in REPROCESS:
        fail(f"--reprocess must be one of {', '.join(REPROCESS)}, got {reprocess!r}", code=2)
    try:
        start = parse_logical_date(from_date)
        end = _day_end(to_date)
    except ValueError as exc:
        fail(str(exc).replace("--logical-date", "--from/--to"), code=2)
        raise AssertionError from exc  # unreachable
    if start > end:
        fail(f"--from ({from_date}) is after --to ({to_date})", code=2)
    with _client(home) as client:
        client.dag(dag_id)  # DagNotFound lists the DAGs that exist
        planned = client.backfill_plan(dag_id, start, end, run_conf, reprocess)
        if not planned:
            out.print(
                f"{dag_id}: nothing to backfill from {_clock(start.isoformat())} to "
                f"{_clock(end.isoformat())}: no interval in the range, or every run in it "
                "exists (--reprocess failed|completed runs them again)"
            )
            return
        if client.unpause(dag_id):
            out.print(
                f"{dag_id}: unpaused (new DAGs start paused; a paused DAG runs no backfill; "
                "the scheduler now also runs its schedule)"
            )
        created = client.backfill(
            dag_id,
            start,
            end,
            run_conf,
            reprocess=reprocess,
            max_active_runs=max_active_runs,
        )
        backfill_id = int(created["id"])
        dates = ", ".join(_clock(d.isoformat())[:16] for d in planned)
        out.print(
            f"{dag_id}: backfill {backfill_id}: {len(planned)} run(s), logical dates {dates}; "
            f"{client.url}/dags/{dag_id}/backfills",
            highlight=False,
        )
        if not wait:
            return

        def now() -> str:
            return _clock(dt.datetime.now(dt.UTC).isoformat())

        def on_run(run: dict[str, Any]) -> None:
            out.print(
                f"  {now()}  {run['dag_run_id']}{_interval(run)}: {run.get('state')}",
                highlight=False,
                markup=False,
            )

        def on_task(run: dict[str, Any], ti: dict[str, Any]) -> None:
            if ti.get("state") is None:
                return
            tries = int(ti.get("try_number") or 0)
            again = f" (try {tries})" if tries > 1 else ""
            out.print(
                f"  {now()}    {ti['task_id']}: {ti['state']}{again}", highlight=False, markup=False
            )

        t0 = dt.datetime.now(dt.UTC)
        runs = client.follow_runs(
            dag_id, planned, on_run, on_task, backfill_id=backfill_id, timeout=timeout
        )
        took = f"{(dt.datetime.now(dt.UTC) - t0).total_seconds():.1f} s"
        bad = [r for r in runs if r.get("state") != "success"]
        missing = len(planned) - len(runs)
        if not bad and not missing:
            out.print(f"{dag_id}: backfill {backfill_id}: {len(runs)} run(s) succeeded in {took}")
            return
        failed_tasks: list[str] = []
        for run in bad:
            failed_tasks += [
                f"{run['dag_run_id']} {t}"
                for t in _print_failed_logs(client, dag_id, str(run["dag_run_id"]))
            ]
        states = ", ".join(f"{r['dag_run_id']} {r.get('state')}" for r in bad)
        extra = f"; {missing} run(s) never created" if missing else ""
        fail(
            f"{dag_id}: backfill {backfill_id}: {len(bad)} of {len(planned)} run(s) did not "
            f"succeed after {took} ({states}{extra}); failed: "
            f"{', '.join(failed_tasks) or 'no task (see the UI)'}"
        )
