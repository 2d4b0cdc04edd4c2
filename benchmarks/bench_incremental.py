"""Benchmark: an incremental one-day update vs a full rebuild, same engine, same lake.

For each size (``sample``: the shared 10% Kaggle Huge sample; ``10x``: its
scale-up from synth.py) and engine (``polars``, ``spark``), in one run:

1. copy the Kaggle files, holding back each file's last line (its last day);
   ``stockbatch ingest`` + ``stockbatch process`` (the initial full build);
2. append the held-back line to every file (the way a re-downloaded dataset
   grows by one day) and ``stockbatch ingest`` it: the catalog records each file
   as its old version plus one appended line;
3. measure ``stockbatch process`` (incremental: one new row per symbol);
4. measure ``stockbatch process --full`` on the same lake (everything from bronze).

Ingest (issue 15, ``--ingest-only`` for just this part): step 1's ingest is a
*full* ingest (every file read whole); step 2's is the *append* ingest (each
file's history only sampled, its new bytes read and parsed); then a ``--verify``
ingest of the unchanged lake (every file hashed in full, nothing landed). Bytes
read come from the run manifest (``bytes_read`` of every landed unit). Target:
the append ingest's cost follows the new bytes, not the history.

Both are fresh ``stockbatch`` processes under ``_measure.py``. Two ratios:
*stage* (the seconds the process stage itself reports in the run manifest,
``recomputed.seconds``) and *command* (wall time of the whole command,
interpreter and engine start included, which an update cannot avoid). Target:
incremental <= 0.05x the full rebuild (the stage ratio; the command ratio is
shown for honesty).

``--whole-run`` times the product end to end instead (issue 15): ``stockbatch run``
(ingest + process + load into the embedded SQLite warehouse + the search sync when
``--search opensearch|elasticsearch`` starts a local node) on the held-back files,
then the day appended and the same ``stockbatch run`` again (the daily update),
against the same command in a fresh home on the complete files (the full run).
Target: the daily run <= 0.05x the full run.

Results: a table on stdout and ``benchmarks/out/bench_incremental-<UTC>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_process import OUT, PYTHON, REPO, dataset, environment, measured

AS_OF = "2017-11-30"
TARGET = 0.05


def stockbatch(*args: str) -> list[str]:
    """A stockbatch CLI command in a fresh interpreter (the venv's console script)."""
    return [str(Path(PYTHON).parent / "stockbatch"), *args]


def run(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Measure one command; stop with its output if it failed."""
    report = measured(cmd, env, REPO)
    if report["returncode"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{report}")
    return report


def hold_back(src: Path, dst: Path) -> dict[Path, bytes]:
    """Copy ``src`` to ``dst`` without each price file's last line; returns those lines."""
    held: dict[Path, bytes] = {}
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        out = dst / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        data = path.read_bytes()
        body = data.rstrip(b"\n")
        cut = body.rfind(b"\n")
        if cut < 0 or (path.name.endswith(".csv") and "meta" in path.name):
            out.write_bytes(data)
            continue
        out.write_bytes(body[: cut + 1])
        held[out] = body[cut + 1 :] + b"\n"
    return held


def ingest_read(home: Path) -> dict[str, Any]:
    """Rows landed and input bytes read by the last ingest (from its run manifest)."""
    from stockbatch import runs
    from stockbatch.settings import Settings

    (doc,) = runs.last_manifests(Settings(home=home), 1)
    units = doc["ingest"]["units"]
    return {
        "stage_s": float(doc["duration_s"]),  # the recorded run: no interpreter start
        "rows": sum(u["rows"] for u in units),
        "landed": len(units),
        "skipped": doc["ingest"]["units_skipped"],
        "tail": sum(u.get("read") == "tail" for u in units),
        "bytes_read": sum(u.get("bytes_read", 0) for u in units),
    }


def measure_ingest(
    size: str, data: Path, home: Path, env: dict[str, str], held: dict[Path, bytes]
) -> dict[str, Any]:
    """The full ingest of ``data`` (held back), then the one-day append and a verify."""
    ingest = stockbatch("ingest", "--source", "kaggle", "--path", str(data), "--quiet")
    print(f"[{size}] full ingest ...", file=sys.stderr)
    full = run(ingest, env)
    history = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    full_read = ingest_read(home)
    for path, line in held.items():
        with path.open("ab") as fh:
            fh.write(line)
    print(f"[{size}] append ingest ...", file=sys.stderr)
    append = run(ingest, env)
    append_read = ingest_read(home)
    print(f"[{size}] verify ingest ...", file=sys.stderr)
    verify = run([*ingest, "--verify"], env)
    return {
        "files": len(held),
        "history_bytes": history,
        "appended_bytes": sum(len(line) for line in held.values()),
        "full": {"wall_s": full["wall_s"], "peak_mb": full["peak_mb"], **full_read},
        "append": {"wall_s": append["wall_s"], "peak_mb": append["peak_mb"], **append_read},
        "verify": {"wall_s": verify["wall_s"], "peak_mb": verify["peak_mb"], **ingest_read(home)},
    }


def stage_seconds(home: Path) -> float:
    """The process stage's own time, from the state it wrote."""
    state = json.loads((home / "lake" / "gold" / "_state.json").read_text())
    return float(state["recomputed"]["seconds"])


def bench(size: str, engine: str, work: Path) -> dict[str, Any]:
    """One size and engine: initial build, one-day append, incremental vs full."""
    data = work / "data"
    home = work / "home"
    held = hold_back(dataset(size), data)
    env = {**os.environ, "STOCKBATCH_HOME": str(home), "STOCKBATCH_PROGRESS": "false"}
    env["STOCKBATCH_PROCESS__ENGINE"] = engine
    print(f"[{size}/{engine}] initial ingest + full build ...", file=sys.stderr)
    ingest = stockbatch("ingest", "--source", "kaggle", "--path", str(data), "--quiet")
    run(ingest, env)
    run(stockbatch("process", "--as-of", AS_OF, "--quiet"), env)
    for path, line in held.items():
        with path.open("ab") as fh:
            fh.write(line)
    run(ingest, env)
    print(f"[{size}/{engine}] incremental update ...", file=sys.stderr)
    inc = run(stockbatch("process", "--as-of", AS_OF, "--quiet"), env)
    state = json.loads((home / "lake" / "gold" / "_state.json").read_text())
    recomputed = state["recomputed"]
    inc_stage = stage_seconds(home)
    print(f"[{size}/{engine}] full rebuild ...", file=sys.stderr)
    full = run(stockbatch("process", "--as-of", AS_OF, "--full", "--quiet"), env)
    full_stage = stage_seconds(home)
    return {
        "size": size,
        "engine": engine,
        "files": len(held),
        "recomputed": recomputed,
        "incremental": {"wall_s": inc["wall_s"], "stage_s": inc_stage, "peak_mb": inc["peak_mb"]},
        "full": {"wall_s": full["wall_s"], "stage_s": full_stage, "peak_mb": full["peak_mb"]},
        "stage_ratio": inc_stage / full_stage if full_stage else None,
        "command_ratio": inc["wall_s"] / full["wall_s"] if full["wall_s"] else None,
    }


def run_ok(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Measure one command; exit code 3 (completed, with quarantined or rejected input:
    the Huge sample has both) counts as done."""
    report = measured(cmd, env, REPO)
    if report["returncode"] not in (0, 3):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{report}")
    return report


def recorded_seconds(home: Path) -> float:
    """The last run's recorded duration (no interpreter start)."""
    from stockbatch import runs
    from stockbatch.settings import Settings

    (doc,) = runs.last_manifests(Settings(home=home), 1)
    return float(doc["duration_s"])


def bench_whole_run(size: str, work: Path, search: str, heap: str) -> dict[str, Any]:
    """The daily ``stockbatch run`` (one appended session) vs the same command's full run."""
    data = work / "data"
    held = hold_back(dataset(size), data)
    base = {**os.environ, "STOCKBATCH_PROGRESS": "false", "STOCKBATCH_WAREHOUSE__KIND": "sqlite"}
    base["STOCKBATCH_PROCESS__ENGINE"] = "polars"
    base["STOCKBATCH_TRANSPORT"] = "direct"
    service = None
    if search != "none":
        import bench_search
        from stockbatch.services.system import write_private

        service = bench_search.make_service(search, work / "search-home", heap)
        service.up()
        base["STOCKBATCH_SEARCH__KIND"] = search
        base["STOCKBATCH_SEARCH__URL"] = service.url
        # A secured node: its user and CA; the password through a 0600 file, never argv.
        access = bench_search.node_access(service)
        if access.get("username"):
            secret = work / "search-password"
            write_private(secret, access["password"])
            base["STOCKBATCH_SEARCH__USERNAME"] = access["username"]
            base["STOCKBATCH_SEARCH__PASSWORD_FILE"] = str(secret)
        if access.get("ca_file"):
            base["STOCKBATCH_SEARCH__CA_FILE"] = access["ca_file"]
    else:
        base["STOCKBATCH_SEARCH__KIND"] = "none"
    cmd = stockbatch("run", "--source", "kaggle", "--path", str(data), "--as-of", AS_OF, "-q")
    try:
        daily_env = {**base, "STOCKBATCH_HOME": str(work / "home-daily")}
        daily_env["STOCKBATCH_SEARCH__INDEX_PREFIX"] = "daily"
        print(f"[{size}] initial run (held-back files) ...", file=sys.stderr)
        initial = run_ok(cmd, daily_env)
        for path, line in held.items():
            with path.open("ab") as fh:
                fh.write(line)
        print(f"[{size}] daily run (one appended session) ...", file=sys.stderr)
        daily = run_ok(cmd, daily_env)
        daily_rec = recorded_seconds(work / "home-daily")
        full_env = {**base, "STOCKBATCH_HOME": str(work / "home-full")}
        full_env["STOCKBATCH_SEARCH__INDEX_PREFIX"] = "full"
        print(f"[{size}] full run (fresh home, complete files) ...", file=sys.stderr)
        full = run_ok(cmd, full_env)
        full_rec = recorded_seconds(work / "home-full")
    finally:
        if service is not None:
            service.down()
    return {
        "size": size,
        "search": search,
        "files": len(held),
        "initial": {"wall_s": initial["wall_s"]},
        "daily": {"wall_s": daily["wall_s"], "recorded_s": daily_rec, "peak_mb": daily["peak_mb"]},
        "full": {"wall_s": full["wall_s"], "recorded_s": full_rec, "peak_mb": full["peak_mb"]},
        "ratio": daily["wall_s"] / full["wall_s"],
        "recorded_ratio": daily_rec / full_rec,
    }


def print_whole_table(results: list[dict[str, Any]]) -> None:
    """Whole-run figures, one line per size."""
    head = (
        f"{'size':<7}{'search':<14}{'files':>6}{'daily s':>9}{'full s':>9}{'ratio':>8}"
        f"{'daily rec s':>12}{'full rec s':>11}{'rec ratio':>10}  target"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        ok = "PASS" if r["ratio"] <= TARGET else "MISS"
        d, f = r["daily"], r["full"]
        print(
            f"{r['size']:<7}{r['search']:<14}{r['files']:>6}{d['wall_s']:>9.2f}{f['wall_s']:>9.2f}"
            f"{r['ratio']:>8.3f}{d['recorded_s']:>12.2f}{f['recorded_s']:>11.2f}"
            f"{r['recorded_ratio']:>10.3f}  <= {TARGET} {ok}"
        )


def bench_ingest(size: str, work: Path) -> dict[str, Any]:
    """One size: the ingest of one appended day against a full ingest."""
    data = work / "data"
    home = work / "home"
    held = hold_back(dataset(size), data)
    env = {**os.environ, "STOCKBATCH_HOME": str(home), "STOCKBATCH_PROGRESS": "false"}
    r = {"size": size, **measure_ingest(size, data, home, env, held)}
    r["stage_ratio"] = r["append"]["stage_s"] / r["full"]["stage_s"]
    r["command_ratio"] = r["append"]["wall_s"] / r["full"]["wall_s"]
    r["read_ratio"] = r["append"]["bytes_read"] / r["full"]["bytes_read"]
    return r


def print_ingest_table(results: list[dict[str, Any]]) -> None:
    """Ingest figures, one line per size: stage seconds (command seconds), MB read."""
    head = (
        f"{'size':<7}{'files':>6}{'hist MB':>8}{'new KB':>7}{'full s':>14}{'full MB':>8}"
        f"{'append s':>13}{'append MB':>10}{'stage ratio':>12}{'read ratio':>11}{'verify s':>13}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        f, a, v = r["full"], r["append"], r["verify"]

        def secs(m: dict[str, Any]) -> str:
            return f"{m['stage_s']:.2f} ({m['wall_s']:.1f})"

        print(
            f"{r['size']:<7}{r['files']:>6}{r['history_bytes'] / 1e6:>8.1f}"
            f"{r['appended_bytes'] / 1e3:>7.1f}{secs(f):>14}{f['bytes_read'] / 1e6:>8.1f}"
            f"{secs(a):>13}{a['bytes_read'] / 1e6:>10.2f}{r['stage_ratio']:>12.3f}"
            f"{r['read_ratio']:>11.3f}{secs(v):>13}"
        )


def print_table(results: list[dict[str, Any]]) -> None:
    """The figures, one line per size and engine."""
    head = (
        f"{'size':<7}{'engine':<8}{'new rows':>9}{'inc stage s':>12}{'full stage s':>13}"
        f"{'stage ratio':>12}{'inc cmd s':>10}{'full cmd s':>11}{'cmd ratio':>10}  target"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        ok = "PASS" if r["stage_ratio"] is not None and r["stage_ratio"] <= TARGET else "MISS"
        print(
            f"{r['size']:<7}{r['engine']:<8}{r['recomputed'].get('new_rows', 0):>9,}"
            f"{r['incremental']['stage_s']:>12.2f}{r['full']['stage_s']:>13.2f}"
            f"{r['stage_ratio']:>12.3f}{r['incremental']['wall_s']:>10.2f}"
            f"{r['full']['wall_s']:>11.2f}{r['command_ratio']:>10.3f}  <= {TARGET} {ok}"
        )


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        description="Time an incremental one-day process update against a full rebuild "
        "of the same lake with the same engine (target: <= 0.05x).",
    )
    parser.add_argument("--sizes", default="sample,10x", help="comma-separated: sample, 10x")
    parser.add_argument("--engines", default="polars,spark", help="comma-separated: polars, spark")
    parser.add_argument("--keep", action="store_true", help="keep the work folders")
    parser.add_argument(
        "--ingest-only",
        action="store_true",
        help="only the ingest: one appended day vs a full ingest, and a --verify ingest",
    )
    parser.add_argument(
        "--whole-run",
        action="store_true",
        help="the whole `stockbatch run` (ingest, process, SQLite load, search sync): "
        "a daily run vs a full run",
    )
    parser.add_argument(
        "--search",
        default="none",
        choices=["none", "opensearch", "elasticsearch"],
        help="with --whole-run: start a local node and sync it in both runs",
    )
    parser.add_argument("--heap", default="1g", help="search node heap (--search)")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    sizes = [s for s in args.sizes.split(",") if s]

    def each(label: str, fn: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        """``fn`` in a fresh work folder, removed afterwards unless ``--keep``."""
        work = Path(tempfile.mkdtemp(prefix=f"bench-inc-{label}-"))
        try:
            return fn(work)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)

    def save(benchmark: str, stem: str, results: list[dict[str, Any]]) -> None:
        doc = {"benchmark": benchmark, "created_utc": stamp, "results": results,
               "environment": environment()}  # fmt: skip
        for name in (f"{stem}-{stamp}.json", f"{stem}-latest.json"):
            (OUT / name).write_text(json.dumps(doc, indent=2, default=str))

    if args.whole_run:
        wholes = [
            each(f"run-{size}", lambda w, z=size: bench_whole_run(z, w, args.search, args.heap))
            for size in sizes
        ]
        print_whole_table(wholes)
        save("incremental-run", "bench_incremental_run", wholes)
        return 0
    if args.ingest_only:
        ingests = [each(f"ingest-{size}", lambda w, z=size: bench_ingest(z, w)) for size in sizes]
        print_ingest_table(ingests)
        save("incremental-ingest", "bench_incremental_ingest", ingests)
        return 0
    results = [
        each(f"{size}-{engine}", lambda w, z=size, e=engine: bench(z, e, w))
        for size in sizes
        for engine in [e for e in args.engines.split(",") if e]
    ]
    print_table(results)
    save("incremental", "bench_incremental", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
