"""``stockbatch orchestrate trigger|status``: DAG runs on Airflow through its REST API.

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
