"""Benchmark of the Spark engine: stockbatch's ``process_lake`` vs a plain PySpark peer,
and vs the Polars engine.

Per size, each command in a fresh ``_measure.py`` subprocess (house style of
bench_process.py):

- ``ingest``: ``stockbatch ingest --source kaggle --path DIR`` into a fresh home
  (CSV -> bronze Parquet; shared by the two stockbatch engines below);
- ``polars-engine``: ``stockbatch process --full`` on that home;
- ``spark-engine``: ``stockbatch process --full --engine spark`` on the same home
  (one Spark application, ``local[*]``: bronze Parquet in, the lake layout out,
  plus the state an incremental update starts from), JVM start included;
- ``spark-peer``: ``python spark_csv_peer.py`` (CSV straight to features in PySpark).

Ratios printed: spark-engine / spark-peer (target <= 0.5), (ingest +
spark-engine) / spark-peer, and spark-engine / polars-engine.

Run: ``STOCKBATCH_SHARED_DATA=... .venv/bin/python benchmarks/bench_spark.py
[--sizes sample,10x] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PYTHON = sys.executable
STOCKBATCH = str(Path(PYTHON).with_name("stockbatch"))
AS_OF = "2017-11-30"
OUT = HERE / "out"
TARGET = 0.5


def dataset(size: str) -> Path:
    """The CSV folder of one size (see synth.dataset)."""
    sys.path.insert(0, str(HERE))
    import synth

    return Path(synth.dataset(size))


def measured(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    wrapper = [PYTHON, str(HERE / "_measure.py"), "--cwd", str(REPO), "--", *cmd]
    load = round(os.getloadavg()[0], 2)
    done = subprocess.run(wrapper, env=env, capture_output=True, text=True, check=True)
    report: dict[str, Any] = json.loads(done.stdout)
    report["load_before"] = load
    if report.get("returncode") not in (0, 3):
        print(f"FAILED {cmd}: {report.get('stderr_tail')}", file=sys.stderr)
    return report


def bench_size(size: str, repeat: int) -> dict[str, Any]:
    data = dataset(size)
    runs: dict[str, list[dict[str, Any]]] = {
        k: [] for k in ("ingest", "spark-engine", "polars-engine", "spark-peer")
    }
    for _ in range(repeat):
        work = Path(tempfile.mkdtemp(prefix="bench-spark-"))
        env = {**os.environ, "STOCKBATCH_HOME": str(work / "home"), "STOCKBATCH_PROGRESS": "false"}
        runs["ingest"].append(
            measured(
                [
                    STOCKBATCH,
                    "ingest",
                    "--source",
                    "kaggle",
                    "--path",
                    str(data),
                    "--as-of",
                    AS_OF,
                    "--quiet",
                ],
                env,
            )
        )
        runs["polars-engine"].append(
            measured([STOCKBATCH, "process", "--as-of", AS_OF, "--full", "--quiet"], env)
        )
        runs["spark-engine"].append(
            measured(
                [STOCKBATCH, "process", "--as-of", AS_OF, "--full", "--engine", "spark", "--quiet"],
                env,
            )
        )
        runs["spark-peer"].append(
            measured(
                [
                    PYTHON,
                    str(HERE / "spark_csv_peer.py"),
                    "--path",
                    str(data),
                    "--out",
                    str(work / "peer"),
                    "--as-of",
                    AS_OF,
                ],
                env,
            )
        )
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(r["wall_s"] for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r["user_s"] + r["sys_s"] for r in v) for k, v in runs.items()}
    peak = {k: statistics.median(r["peak_mb"] for r in v) for k, v in runs.items()}
    return {"size": size, "repeat": repeat, "wall_s": med, "cpu_s": cpu, "peak_mb": peak,
            "runs": runs}  # fmt: skip


def print_table(results: list[dict[str, Any]]) -> None:
    for r in results:
        w = r["wall_s"]
        print(f"\n== {r['size']} (median of {r['repeat']}) ==")
        print(f"{'command':<16}{'wall s':>9}{'cpu s':>9}{'peak MB':>10}")
        for k in w:
            print(f"{k:<16}{w[k]:>9.1f}{r['cpu_s'][k]:>9.1f}{r['peak_mb'][k]:>10.0f}")
        ratio = w["spark-engine"] / w["spark-peer"]
        verdict = "PASS" if ratio <= TARGET else "MISS"
        print(f"spark-engine / spark-peer          {ratio:.2f}  (target <= {TARGET}: {verdict})")
        both = (w["ingest"] + w["spark-engine"]) / w["spark-peer"]
        print(f"(ingest + spark-engine) / peer     {both:.2f}")
        print(f"spark-engine / polars-engine       {w['spark-engine'] / w['polars-engine']:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="sample", help="comma list of sample,10x")
    parser.add_argument("--repeat", type=int, default=1, help="runs per size (median)")
    parser.add_argument("--as-of", default=AS_OF)
    args = parser.parse_args(argv)
    print(f"load average at start: {os.getloadavg()}")
    results = [bench_size(s, args.repeat) for s in args.sizes.split(",")]
    print_table(results)
    OUT.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    for name in (f"bench_spark-{stamp}.json", "bench_spark-latest.json"):
        (OUT / name).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
