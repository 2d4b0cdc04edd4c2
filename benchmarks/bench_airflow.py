"""Benchmark: one daily interval through the real Airflow scheduler vs ``stockbatch run``.

The same data (``--path``, default the shared 10% Kaggle Huge sample, 900 files, 1.88 M
rows; ``--files N`` takes the first N files only), the same settings (direct transport,
Polars engine, the embedded SQLite warehouse, no search index), the same session
(``--session``, default 2017-11-10, the sample's last), each in a fresh, empty home:

1. **stockbatch run**: ``stockbatch run --source kaggle --path DIR --as-of SESSION -q``,
   a subprocess; its wall time from start to exit (interpreter start and imports
   included) and the stages' own durations from its output ("... in 12.3s");
2. **DAG run**: ``stockbatch services up postgresql`` and ``services up airflow`` (the
   metadata in PostgreSQL, the project's ``dags/``; not timed), the DAG unpaused and its
   schedule's own latest run let finish first (it is pointed at a missing folder with no
   retries, so it fails at once without touching the lake; the quality gate's
   missing-bars limit raised to 1000, as 30 quiet symbols of the sample have no bar
   on 2017-11-10 and the default 5 fails the run), then timed:
   ``stockbatch orchestrate trigger stockbatch_daily --wait --logical-date
   SESSIONT22:00:00+00:00 --conf '{"source": "kaggle", "path": DIR}'``, a subprocess,
   from start to exit. Then the run's task instances and their return values (the
   stage summaries) from the REST API, and its run manifest.

Orchestration overhead, per task (in DAG order; the tasks that call no pipeline stage,
is_session, begin, collect, sync_search, publish, count whole):

    overhead = (task start - previous task's end; the first task: - the trigger's start)
             + (task duration as Airflow records it - the stage's own duration: what the
                stage result reports, "... in 12.3s", in the task's return value for
                ingest, process, load_warehouse; 0 for the others)

i.e. the scheduler noticing the upstream task ended, queueing and launching the next
one, plus the task runner's own start (process, imports, settings, XCom, manifest).
The quality gate's own work (the missing-bars scan) counts as overhead too: ``stockbatch
run`` does not do it. Total overhead = the trigger command's wall time - the sum of the
stages' durations; it includes the CLI's REST calls and its 1 s polling.

Targets (issue 13): at most 3 s of overhead per task on average (total / tasks), and the
DAG run (trigger --wait wall time) at most 1.5 x the ``stockbatch run`` wall time + 30 s.
Results: the table on stdout and ``benchmarks/out/bench_airflow-<UTC time>.json``
(+ ``-latest``), with each task's timestamps, the Airflow config that matters, the load
average before and after (the machine may be shared).

Run: ``.venv/bin/python benchmarks/bench_airflow.py [--files N] [--keep]`` (needs
``STOCKBATCH_SHARED_DATA`` unless ``--path`` is given, and PostgreSQL's server binaries).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
DAG = "stockbatch_daily"
SESSION = "2017-11-10"
PER_TASK_TARGET_S = 3.0
RATIO_TARGET, RATIO_SLACK_S = 1.5, 30.0
STAGE_OF_TASK = {"ingest": "ingest", "process": "process", "load_warehouse": "load"}

from stockbatch.orchestrate.client import AirflowClient  # noqa: E402
from stockbatch.services import recorded_endpoints  # noqa: E402


def cli(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[float, str, int]:
    """``stockbatch ARGS`` as a subprocess in ``home``: (wall seconds, output, exit code)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "stockbatch.cli", *args],
        env={**(env or clean_env()), "STOCKBATCH_HOME": str(home)},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    return time.perf_counter() - started, done.stdout + done.stderr, done.returncode


def clean_env() -> dict[str, str]:
    """This environment without any STOCKBATCH_* or AIRFLOW* setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("STOCKBATCH_", "AIRFLOW"))}


def landing(args: argparse.Namespace, work: Path) -> tuple[Path, int]:
    """The folder both sides ingest (the sample, or a copy of its first N files)."""
    source = Path(args.path)
    files = sorted(p for p in source.rglob("*") if p.is_file())
    if args.files:
        folder = work / "landing"
        for src in files[: args.files]:
            dest = folder / src.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
        return folder, min(args.files, len(files))
    for f in files:  # the page cache warm for both sides
        f.read_bytes()
    return source, len(files)


def manifests(home: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((home / "lake" / "runs").glob("*.json"))]


SECONDS = re.compile(r" in (\d+(?:\.\d+)?)s\)?$")


def stage_seconds(lines: dict[str, str]) -> dict[str, float]:
    """{stage: seconds} from each stage's summary line ("... in 12.3s", 0.1 s precision)."""
    found = {}
    for stage, line in lines.items():
        m = SECONDS.search(line.strip().splitlines()[0] if line.strip() else "")
        if m:
            found[stage] = float(m.group(1))
    return found


def cli_stage_lines(output: str) -> dict[str, str]:
    """The summary line of each stage in ``stockbatch run``'s output."""
    lines = {}
    for line in output.splitlines():
        for stage in ("ingest", "process", "load"):
            if line.startswith(stage) and stage not in lines:
                lines[stage] = line
    return lines


def dag_stage_lines(client: AirflowClient, run_id: str) -> dict[str, str]:
    """The summary of each stage task's return value (XCom ``return_value``)."""
    lines = {}
    for task, stage in STAGE_OF_TASK.items():
        response = client.request(
            "GET",
            f"/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances/{task}/xcomEntries/return_value",
            params={"deserialize": "true", "stringify": "false"},
        )
        response.raise_for_status()
        value = response.json().get("value")
        if isinstance(value, str):
            value = json.loads(value)
        lines[stage] = str(value.get("summary", ""))
    return lines


def moment(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def run_cli_side(land: Path, work: Path, session: str) -> dict[str, Any]:
    home = work / "home-run"
    wall, output, code = cli(
        home, "run", "--source", "kaggle", "--path", str(land), "--as-of", session
    )
    if code != 0:
        raise SystemExit(f"stockbatch run failed ({code}):\n{output[-3000:]}")
    [doc] = manifests(home)
    return {
        "wall_s": round(wall, 3),
        "manifest_duration_s": doc.get("duration_s"),
        "stage_lines": cli_stage_lines(output),
        "stages_s": stage_seconds(cli_stage_lines(output)),
        "counts": doc.get("counts"),
        "status": doc.get("status"),
    }


def wait_idle(client: AirflowClient, timeout: float = 300) -> list[dict[str, Any]]:
    """Wait until no run of the DAG is queued or running; the runs seen."""
    deadline = time.monotonic() + timeout
    while True:
        runs = client.dag_runs(DAG, limit=20)
        if all(r.get("state") in ("success", "failed") for r in runs):
            return runs
        if time.monotonic() > deadline:
            raise SystemExit(f"runs of {DAG} still going after {timeout:g} s: {runs}")
        time.sleep(1)


def run_dag_side(land: Path, work: Path, session: str) -> dict[str, Any]:
    home = work / "home-airflow"
    env = clean_env() | {
        "STOCKBATCH_AIRFLOW__DAGS_FOLDER": str(REPO / "dags"),
        "STOCKBATCH_AIRFLOW__METADATA_DB": "postgresql",
        # The schedule's own run (started by the unpause) fails at once, lake untouched.
        "STOCKBATCH_SCHEDULE__SOURCE": "kaggle",
        "STOCKBATCH_SCHEDULE__PATH": str(work / "no-such-folder"),
        "STOCKBATCH_SCHEDULE__RETRIES": "0",
    }
    started: list[str] = []
    out: dict[str, Any] = {}
    try:
        for service in ("postgresql", "airflow"):
            secs, output, code = cli(home, "services", "up", service, env=env)
            if code != 0:
                raise SystemExit(f"services up {service} failed:\n{output[-3000:]}")
            started.append(service)
            out[f"{service}_up_s"] = round(secs, 1)
        rec = recorded_endpoints(home)["airflow"]
        with AirflowClient(
            rec["url"], rec["username"], rec["password"], ca_file=rec.get("ca_file")
        ) as client:
            deadline = time.monotonic() + 120
            while DAG not in client.dag_ids():
                if time.monotonic() > deadline:
                    raise SystemExit(f"{DAG} not parsed after 120 s: {client.dag_ids()}")
                time.sleep(1)
            client.unpause(DAG)
            time.sleep(3)  # the scheduler creates the schedule's latest run
            out["schedule_runs_before"] = [(r["dag_run_id"], r["state"]) for r in wait_idle(client)]
            conf = json.dumps({"source": "kaggle", "path": str(land)})
            t0 = dt.datetime.now(dt.UTC)
            wall, output, code = cli(
                home,
                "orchestrate", "trigger", DAG, "--wait", "--conf", conf,
                "--logical-date", f"{session}T22:00:00+00:00",
                env=env,
            )  # fmt: skip
            if code != 0:
                raise SystemExit(f"trigger --wait failed ({code}):\n{output[-4000:]}")
            found = re.search(r"triggered run (\S+) ", output)
            assert found, output
            run_id = found.group(1)
            run = client.dag_run(DAG, run_id)
            tis = client.task_instances(DAG, run_id)
            lines = dag_stage_lines(client, run_id)
        [doc] = [d for d in manifests(home) if d.get("params", {}).get("airflow_run_id") == run_id]
        out |= {
            "wall_s": round(wall, 3),
            "trigger_output": output.splitlines()[-14:],
            "run": {k: run.get(k) for k in ("dag_run_id", "queued_at", "start_date", "end_date")},
            "triggered_at": t0.isoformat(),
            "stage_lines": lines,
            "stages_s": stage_seconds(lines),
            "manifest_duration_s": doc.get("duration_s"),
            "counts": doc.get("counts"),
            "status": doc.get("status"),
            "tasks": tasks_table(tis, t0, stage_seconds(lines)),
        }
        out["airflow_cfg"] = {
            line.split(" = ")[0]: line.split(" = ", 1)[1]
            for line in (home / "services" / "airflow" / "airflow.cfg").read_text().splitlines()
            if " = " in line and not re.search(r"key|secret|conn|password", line)
        }
    finally:
        for service in reversed(started):
            cli(home, "services", "down", service, env=env)
    return out


ORDER = [
    "is_session",
    "begin",
    "ingest",
    "collect",
    "process",
    "load_warehouse",
    "sync_search",
    "quality_gate",
    "publish",
]


def tasks_table(
    tis: list[dict[str, Any]], triggered: dt.datetime, stages: dict[str, float]
) -> list[dict[str, Any]]:
    """Per task, in DAG order: timestamps, Airflow's duration, the stage's own, overhead."""
    by_id = {t["task_id"]: t for t in tis}
    rows = []
    previous_end = triggered
    for task_id in ORDER:
        ti = by_id[task_id]
        start, end = moment(ti.get("start_date")), moment(ti.get("end_date"))
        queued = moment(ti.get("queued_when"))
        assert start and end, ti
        duration = float(ti.get("duration") or (end - start).total_seconds())
        stage = stages.get(STAGE_OF_TASK.get(task_id, ""), 0.0)
        gap = (start - previous_end).total_seconds()
        rows.append(
            {
                "task": task_id,
                "state": ti.get("state"),
                "gap_s": round(gap, 3),
                "queued_to_start_s": round((start - queued).total_seconds(), 3) if queued else None,
                "duration_s": round(duration, 3),
                "stage_s": round(stage, 3),
                "runner_s": round(duration - stage, 3),
                "overhead_s": round(gap + duration - stage, 3),
            }
        )
        previous_end = end
    return rows


def print_report(result: dict[str, Any]) -> None:
    dag, run = result["dag"], result["run"]
    print(f"data: {result['landing']} ({result['files']} files), session {result['session']}")
    rows = (run["counts"]["rows_in"], dag["counts"]["rows_in"])
    print(f"rows in: stockbatch run {rows[0]:,}, DAG run {rows[1]:,}")
    print()
    print(f"{'task':<16}{'gap':>8}{'queued>start':>14}{'duration':>10}{'stage':>9}{'overhead':>10}")
    for t in dag["tasks"]:
        q = "-" if t["queued_to_start_s"] is None else f"{t['queued_to_start_s']:.2f}"
        print(
            f"{t['task']:<16}{t['gap_s']:>8.2f}{q:>14}{t['duration_s']:>10.2f}"
            f"{t['stage_s']:>9.2f}{t['overhead_s']:>10.2f}"
        )
    s = result["summary"]
    print()
    for name, side, stages in (
        ("stockbatch run (CLI, stages in one process):", run, s["run_stages_s"]),
        ("DAG run (orchestrate trigger --wait):", dag, s["dag_stages_s"]),
    ):
        print(f"{name:<46}{side['wall_s']:8.1f} s   (stages {stages:.1f} s)")
    print(
        f"overhead: {s['overhead_total_s']:.1f} s in all, "
        f"{s['overhead_per_task_s']:.2f} s per task ({s['tasks']} tasks; "
        f"target <= {PER_TASK_TARGET_S:g}: {s['per_task_verdict']})"
    )
    print(
        f"ratio DAG / run: {s['ratio']:.2f}x; DAG run {dag['wall_s']:.1f} s vs limit "
        f"{s['limit_s']:.1f} s (1.5 x run + 30 s: {s['total_verdict']})"
    )
    print(
        f"load average 1 min: {result['env']['loadavg_1m_start']:.2f} at start, "
        f"{result['env']['loadavg_1m_end']:.2f} at end ({result['env']['cpus']} CPUs)"
    )


def main() -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the module docstring and benchmarks/README.md.",
    )
    shared = os.environ.get("STOCKBATCH_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    parser.add_argument(
        "--path",
        default=str(Path(shared) / "kaggle" / "huge-stock-market-sample"),
        help="Kaggle folder both sides ingest (default: the shared Huge sample)",
    )
    parser.add_argument("--files", type=int, default=0, help="only the first N files (0: all)")
    parser.add_argument("--session", default=SESSION, help=f"the interval's session ({SESSION})")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="airflow-bench-"))
    try:
        land, files = landing(args, work)
        run = run_cli_side(land, work, args.session)
        dag = run_dag_side(land, work, args.session)
    finally:
        if args.keep:
            print(f"work folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    tasks = len(dag["tasks"])
    dag_stages = sum(dag["stages_s"].values())
    overhead = dag["wall_s"] - dag_stages
    limit = RATIO_TARGET * run["wall_s"] + RATIO_SLACK_S
    summary = {
        "tasks": tasks,
        "run_stages_s": round(sum(run["stages_s"].values()), 3),
        "dag_stages_s": round(dag_stages, 3),
        "overhead_total_s": round(overhead, 3),
        "overhead_tasks_sum_s": round(sum(t["overhead_s"] for t in dag["tasks"]), 3),
        "overhead_per_task_s": round(overhead / tasks, 3),
        "per_task_verdict": "PASS" if overhead / tasks <= PER_TASK_TARGET_S else "MISS",
        "ratio": round(dag["wall_s"] / run["wall_s"], 3),
        "limit_s": round(limit, 3),
        "total_verdict": "PASS" if dag["wall_s"] <= limit else "MISS",
    }
    result = {
        "landing": str(land) if not args.files else f"{args.path} (first {files} files)",
        "files": files,
        "session": args.session,
        "run": run,
        "dag": dag,
        "summary": summary,
        "env": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_1m_start": load_start,
            "loadavg_1m_end": os.getloadavg()[0],
            "git_commit": subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
            ).stdout.strip(),
            "src_dirty": bool(
                subprocess.run(
                    ["git", "status", "--porcelain", "src", "dags"],
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    check=False,
                ).stdout.strip()
            ),
        },
    }
    print_report(result)
    OUT.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    for name in (f"bench_airflow-{stamp}.json", "bench_airflow-latest.json"):
        (OUT / name).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
