"""Benchmark: stockbatch's process stage (CSV -> silver -> gold) vs the plain-pandas peer.

For each size (``sample``: the shared 10% Kaggle Huge sample; ``10x``: its
deterministic 10x scale-up from synth.py, about the full dataset's size), in
one run:

- stockbatch: ``stockbatch ingest --source kaggle --path DIR --as-of D`` then
  ``stockbatch process --as-of D``, each in a subprocess with a fresh, empty
  ``STOCKBATCH_HOME``;
- pandas: ``python benchmarks/pandas_peer.py --path DIR --out OUT --as-of D``.

Each command runs under a fresh ``_measure.py`` wrapper (wall time; peak RSS,
see that module for why two figures). stockbatch's time is the sum of its two
commands, its memory the larger of their peaks. Repeats alternate the order of
the two tools; the table reports medians. Targets: wall-time ratio
stockbatch/pandas <= 0.4 and stockbatch's peak memory below the peer's. CPU
time (user + sys of the command's processes) is shown too: on a shared,
busy machine it is the steadier of the two time figures (the load average
before each command is recorded in the JSON).

Results: a table on stdout and ``benchmarks/out/bench_process-<UTC time>.json``
(plus ``bench_process-latest.json``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
PYTHON = sys.executable
AS_OF = "2017-11-30"
TIME_TARGET = 0.4  # stockbatch wall time <= 0.4 x the peer's
MEMORY_TARGET = 1.0  # stockbatch peak memory < the peer's
DEFAULT_REPEAT = {"sample": 3, "10x": 1}
BUSY_LOAD = 1.5  # a 1-minute load average above this before a run means noisy figures

sys.path.insert(0, str(HERE))
import synth  # noqa: E402  (a sibling script, not a package)


def stockbatch_commands(data_dir: Path, as_of: str) -> list[list[str]]:
    """The stockbatch command lines of one measurement (the only place that names them)."""
    exe = str(Path(PYTHON).with_name("stockbatch"))
    return [
        [exe, "ingest", "--source", "kaggle", "--path", str(data_dir), "--as-of", as_of, "--quiet"],
        [exe, "process", "--as-of", as_of, "--quiet"],
    ]


def peer_command(data_dir: Path, out_dir: Path, as_of: str) -> list[str]:
    """The pandas peer's command line."""
    return [
        PYTHON,
        str(HERE / "pandas_peer.py"),
        "--path",
        str(data_dir),
        "--out",
        str(out_dir),
        "--as-of",
        as_of,
    ]


dataset = synth.dataset


def measured(cmd: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Run one command under a fresh _measure.py wrapper and return its report."""
    wrapper = [PYTHON, str(HERE / "_measure.py"), "--cwd", str(cwd), "--", *cmd]
    load = round(os.getloadavg()[0], 2)
    done = subprocess.run(wrapper, env=env, capture_output=True, text=True, check=True)
    report: dict[str, Any] = json.loads(done.stdout)
    report["load_before"] = load
    return report


def _counts_from_text(lines: list[str]) -> dict[str, int]:
    """rows_in/clean/quarantined/deduplicated from a one-line summary, either tool's."""
    text = " ".join(lines)
    found: dict[str, int] = {}
    patterns = {
        "rows_in": r"rows[ _]in[ =]+([\d,]+)",
        "rows_clean": r"(?:rows_)?clean[ =]+([\d,]+)",
        "rows_quarantined": r"(?:rows_)?quarantined[ =]+([\d,]+)",
        "rows_deduplicated": r"(?:rows_)?deduplicated[ =]+([\d,]+)",
    }
    for key, pattern in patterns.items():
        m = re.search(pattern, text)
        if m:
            found[key] = int(m.group(1).replace(",", ""))
    return found


def run_stockbatch(data_dir: Path, work: Path, as_of: str) -> dict[str, Any]:
    """One stockbatch measurement in a fresh home."""
    home = Path(tempfile.mkdtemp(prefix="stockbatch-home-", dir=work))
    env = {**os.environ, "STOCKBATCH_HOME": str(home), "STOCKBATCH_PROGRESS": "false"}
    steps = [measured(cmd, env, REPO) for cmd in stockbatch_commands(data_dir, as_of)]
    shutil.rmtree(home, ignore_errors=True)
    # Exit code 3 = completed, some inputs rejected (e.g. an empty file); still a full run.
    ok = all(s["returncode"] in (0, 3) for s in steps)
    return {
        "tool": "stockbatch",
        "ok": ok,
        "wall_s": round(sum(s["wall_s"] for s in steps), 3),
        "cpu_s": round(sum(s["user_s"] + s["sys_s"] for s in steps), 3),
        "peak_mb": max(s["peak_mb"] for s in steps),
        "counts": _counts_from_text(steps[-1]["stdout_tail"] + steps[-1]["stderr_tail"]),
        "steps": steps,
    }


def run_peer(data_dir: Path, work: Path, as_of: str) -> dict[str, Any]:
    """One pandas-peer measurement into a fresh output folder."""
    out_dir = Path(tempfile.mkdtemp(prefix="pandas-out-", dir=work))
    step = measured(peer_command(data_dir, out_dir, as_of), dict(os.environ), REPO)
    summary_path = out_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    shutil.rmtree(out_dir, ignore_errors=True)
    keys = ("rows_in", "rows_clean", "rows_quarantined", "rows_deduplicated")
    return {
        "tool": "pandas",
        "ok": step["returncode"] == 0,
        "wall_s": step["wall_s"],
        "cpu_s": round(step["user_s"] + step["sys_s"], 3),
        "peak_mb": step["peak_mb"],
        "counts": {k: summary[k] for k in keys if k in summary},
        "phases_s": summary.get("timings_s"),
        "steps": [step],
    }


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r["ok"]]
    return round(statistics.median(values), 3) if values else None


def bench_size(size: str, repeat: int, as_of: str, tools: list[str]) -> dict[str, Any]:
    """All measurements of one size."""
    data_dir = dataset(size)
    work = Path(tempfile.mkdtemp(prefix=f"bench-{size}-", dir=OUT))
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in tools}
    runner = {"stockbatch": run_stockbatch, "pandas": run_peer}
    try:
        for i in range(repeat):
            order = tools if i % 2 == 0 else list(reversed(tools))
            for tool in order:
                print(f"[{size}] run {i + 1}/{repeat}: {tool} ...", file=sys.stderr, flush=True)
                result = runner[tool](data_dir, work, as_of)
                runs[tool].append(result)
                status = "ok" if result["ok"] else "FAILED"
                print(
                    f"[{size}] run {i + 1}/{repeat}: {tool} {status} {result['wall_s']:.1f}s "
                    f"peak {result['peak_mb']:.0f} MB",
                    file=sys.stderr,
                    flush=True,
                )
                if not result["ok"]:
                    for step in result["steps"]:
                        for line in step["stderr_tail"]:
                            print(f"    {line}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary: dict[str, Any] = {"size": size, "path": str(data_dir), "repeat": repeat, "tools": {}}
    for tool, tool_runs in runs.items():
        summary["tools"][tool] = {
            "wall_s_median": _median(tool_runs, "wall_s"),
            "cpu_s_median": _median(tool_runs, "cpu_s"),
            "peak_mb_median": _median(tool_runs, "peak_mb"),
            "ok_runs": sum(r["ok"] for r in tool_runs),
            "counts": next((r["counts"] for r in tool_runs if r["ok"]), {}),
            "runs": tool_runs,
        }
    sb, pd_ = summary["tools"].get("stockbatch"), summary["tools"].get("pandas")
    if sb and pd_ and sb["wall_s_median"] and pd_["wall_s_median"]:
        t_ratio = sb["wall_s_median"] / pd_["wall_s_median"]
        m_ratio = sb["peak_mb_median"] / pd_["peak_mb_median"]
        summary["ratios"] = {
            "time": round(t_ratio, 3),
            "cpu": round(sb["cpu_s_median"] / pd_["cpu_s_median"], 3),
            "time_target": TIME_TARGET,
            "time_verdict": "PASS" if t_ratio <= TIME_TARGET else "MISS",
            "memory": round(m_ratio, 3),
            "memory_target": f"< {MEMORY_TARGET}",
            "memory_verdict": "PASS" if m_ratio < MEMORY_TARGET else "MISS",
        }
        summary["counts_agree"] = sb["counts"] == pd_["counts"]
    return summary


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: list[dict[str, Any]]) -> None:
    """The human summary."""
    head = (
        f"{'size':<7} {'tool':<11} {'runs':>4} {'time s':>9} {'cpu s':>9} {'peak MB':>9} "
        f"{'rows_in':>11} {'clean':>11} {'quarant.':>9} {'dedup':>6}"
    )
    print(head)
    print("-" * len(head))
    for res in results:
        for tool, t in res["tools"].items():
            c = t["counts"]
            wall = _fmt(t["wall_s_median"], ".1f")
            cpu = _fmt(t["cpu_s_median"], ".1f")
            print(
                f"{res['size']:<7} {tool:<11} {t['ok_runs']:>4} {wall:>9} {cpu:>9} "
                f"{_fmt(t['peak_mb_median'], '.0f'):>9} {c.get('rows_in', '-'):>11} "
                f"{c.get('rows_clean', '-'):>11} {c.get('rows_quarantined', '-'):>9} "
                f"{c.get('rows_deduplicated', '-'):>6}"
            )
        r = res.get("ratios")
        if r:
            print(
                f"{res['size']:<7} {'ratio':<11} {'':>4} {r['time']:>8.2f}x {r['cpu']:>8.2f}x "
                f"{r['memory']:>8.2f}x"
                f"   time {r['time_verdict']} (target <= {TIME_TARGET}x), "
                f"memory {r['memory_verdict']} (target < {MEMORY_TARGET}x)"
                + ("" if res.get("counts_agree", True) else "   ROW COUNTS DIFFER")
            )
        print()


def environment() -> dict[str, Any]:
    """What the figures depend on."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(REPO), "status", "--porcelain", "src"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
        )
    except OSError:
        commit, dirty = "", False
    versions = {}
    for mod in ("pandas", "polars", "pyarrow", "numpy"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "git_commit": commit,
        "src_dirty": dirty,
        "versions": versions,
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        description="Time stockbatch's process stage against the plain-pandas peer "
        "(wall time and peak RSS; ratios vs targets).",
    )
    parser.add_argument(
        "--sizes",
        default="sample,10x",
        help="comma-separated: sample (shared 10%% Huge sample), 10x (synth.py "
        "scale-up, built and cached on first use). Default: sample,10x",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="runs per tool and size (default: 3 for sample, 1 for 10x)",
    )
    parser.add_argument("--as-of", default=AS_OF, help=f"as-of date (default {AS_OF})")
    parser.add_argument(
        "--tools", default="stockbatch,pandas", help="comma-separated subset of stockbatch,pandas"
    )
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if not set(tools) <= {"stockbatch", "pandas"}:
        parser.error("--tools takes stockbatch and/or pandas")
    OUT.mkdir(parents=True, exist_ok=True)
    env = environment()
    if env["load_avg_at_start"][0] > BUSY_LOAD:
        print(
            f"warning: load average {env['load_avg_at_start'][0]} on {env['cpus']} CPUs: "
            "other work is running, figures will be noisy",
            file=sys.stderr,
        )
    results = [
        bench_size(size, args.repeat or DEFAULT_REPEAT.get(size, 1), args.as_of, tools)
        for size in sizes
    ]
    print_table(results)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    report = {
        "benchmark": "process",
        "as_of": args.as_of,
        "created_utc": stamp,
        "targets": {"time_ratio_max": TIME_TARGET, "memory_ratio_below": MEMORY_TARGET},
        "environment": env,
        "results": results,
    }
    path = OUT / f"bench_process-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    shutil.copyfile(path, OUT / "bench_process-latest.json")
    print(f"results: {path}")
    failed = [(r["size"], t) for r in results for t, v in r["tools"].items() if v["ok_runs"] == 0]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
