"""Sizing of a full rebuild from the benchmarks' measured throughputs (docs/deployment.md).

Rows per GB come from the repository's demo CSVs (data/demo/kaggle, measured here);
each stage's rate comes from one benchmark in benchmarks/README.md (named next to
it). The result is the CPU work of each stage and the cores it needs to finish in
a target wall-clock window, at an assumed scaling efficiency.

    .venv/bin/python scripts/sizing.py                      # 4 h window, 70 % efficiency
    .venv/bin/python scripts/sizing.py --window-hours 8 --efficiency 0.6
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo" / "kaggle"

# The three Kaggle layouts (README: "detected per file"); symbols_valid_meta.csv is
# metadata, not bars.
LAYOUTS = {
    "huge": ("huge/**/*.us.txt",),
    "sp500": ("sp500/**/*_data.csv",),
    "nasdaq": ("nasdaq/stocks/*.csv", "nasdaq/etfs/*.csv"),
}

SIZES_GB = (10, 100, 1000)
GB = 10**9

# The benchmark machine: 2 cores, shared with other jobs during most runs. Dividing a
# wall-clock rate by 2 gives a per-core rate that is, if anything, too low (the
# command got less than 2 cores): conservative.
BENCH_CORES = 2


@dataclass(frozen=True)
class Rate:
    """One stage's measured throughput."""

    stage: str
    rows: float  # rows (bars or documents) in the measurement
    seconds: float  # wall seconds, or CPU seconds when cpu is True
    source: str
    cpu: bool = False  # seconds are CPU seconds (already per core)
    parallel: bool = True  # more cores make it faster (False: one stream)

    @property
    def per_core(self) -> float:
        """Rows per second per core (per stream when not parallel)."""
        cores = 1 if (self.cpu or not self.parallel) else BENCH_CORES
        return self.rows / self.seconds / cores


RATES = (
    Rate(
        "ingest (CSV -> bronze, direct)",
        18.8e6,
        34.1,
        "bench_incremental.py --ingest-only, 10x, full ingest: 34.1 s (stage), 18.8 M rows",
    ),
    Rate(
        "process (bronze -> silver/gold, Polars)",
        18.8e6,
        51.37,
        "bench_incremental.py, 10x, polars, full stage: 51.37 s, 18.8 M rows",
    ),
    Rate(
        "process (Spark engine, local[*])",
        1.88e6,
        320.4,
        "bench_spark.py, sample: `process --full --engine spark` 320.4 s, 1.88 M rows",
    ),
    Rate(
        "index (gold -> OpenSearch)",
        1_883_012,
        20.7 + 70.9,
        "bench_search.py, sample, OpenSearch: 1,883,012 docs, client 20.7 + node 70.9 CPU s",
        cpu=True,
    ),
    Rate(
        "load (gold -> PostgreSQL)",
        1_883_012,
        43.7,
        "bench_postgres.py, sample: 3,766,024 table rows (2 per bar) in 43.7 s, "
        "one transaction on one connection",
        parallel=False,
    ),
)

# Rows per bucket in the 10x run of bench_process.py (18.8 M rows, the default 8
# buckets), whose process peaked at 2,073 MB with ingest: a bucket this size is known to
# fit in the process Job's memory (deploy/k8s/cronjob-process.yaml).
ROWS_PER_BUCKET = 18.8e6 / 8
MAX_BUCKETS = 1024  # settings.LakeSettings.buckets: le=1024

# The Kafka path (produce + collect) against the direct ingest, same data: 9.89 s /
# 5.26 s on a quiet machine (bench_kafka.py, quiet re-run). The cluster size ingests
# through Kafka, so its ingest costs this much more.
KAFKA_FACTOR = 9.89 / 5.26


def demo_rows_and_bytes() -> dict[str, tuple[int, int]]:
    """``layout -> (data rows, bytes)`` of the demo CSVs (header and blank lines are
    not rows)."""
    out: dict[str, tuple[int, int]] = {}
    for layout, patterns in LAYOUTS.items():
        rows = size = 0
        for pattern in patterns:
            for path in sorted(DEMO.glob(pattern)):
                data = path.read_bytes()
                size += len(data)
                lines = [line for line in data.splitlines() if line.strip()]
                rows += max(0, len(lines) - 1)
        out[layout] = (rows, size)
    return out


def hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window-hours", type=float, default=4.0, help="target wall clock")
    parser.add_argument(
        "--efficiency",
        type=float,
        default=0.7,
        help="share of linear speed-up kept when a stage is spread over many cores (assumed)",
    )
    args = parser.parse_args()
    window_s = args.window_hours * 3600

    demo = demo_rows_and_bytes()
    print("## Bytes per row (data/demo/kaggle)\n")
    print("| layout | rows | bytes | bytes/row |")
    print("|---|---:|---:|---:|")
    for layout, (rows, size) in demo.items():
        print(f"| {layout} | {rows:,} | {size:,} | {size / rows:.1f} |")
    # The smallest bytes/row means the most rows per GB, the most work: the
    # conservative choice, and the layout every benchmark measured (Huge).
    layout, (rows, size) = min(demo.items(), key=lambda kv: kv[1][1] / kv[1][0])
    bytes_per_row = size / rows
    print(f"\nUsed: {layout}, {bytes_per_row:.1f} bytes/row (the most rows per GB).\n")

    print("## Rates\n")
    print("| stage | rows/s per core | from |")
    print("|---|---:|---|")
    for r in RATES:
        unit = "" if r.parallel else " (one stream)"
        print(f"| {r.stage} | {r.per_core:,.0f}{unit} | {r.source} |")
    print(f"| Kafka path factor | x{KAFKA_FACTOR:.2f} on ingest | bench_kafka.py, quiet re-run |")

    print(
        f"\n## A full rebuild in {args.window_hours:g} h, scaling efficiency "
        f"{args.efficiency:.0%}\n"
    )
    print(
        "| input | rows | buckets | ingest via Kafka | process, Polars | process, Spark "
        "| index | load, one stream | cores for the window (Polars) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    ingest, polars, spark, index, load = RATES
    for gb in SIZES_GB:
        n = gb * GB / bytes_per_row
        core_s = {
            "ingest": n / ingest.per_core * KAFKA_FACTOR,
            "polars": n / polars.per_core,
            "spark": n / spark.per_core,
            "index": n / index.per_core,
        }
        load_s = n / load.per_core
        buckets = -(-n // ROWS_PER_BUCKET)
        bucket_cell = (
            f"{buckets:,.0f}" if buckets <= MAX_BUCKETS else f"{buckets:,.0f} (> {MAX_BUCKETS})"
        )
        # The stages run one after the other; the load is one stream, so it takes its
        # own wall time out of the window and the rest share what is left.
        left_s = window_s - load_s
        parallel_s = core_s["ingest"] + core_s["polars"] + core_s["index"]
        cores = (
            f"{math.ceil(parallel_s / (left_s * args.efficiency)):,}"
            if left_s > 0
            else "none: the load alone exceeds the window"
        )
        label = f"{gb} GB" if gb < 1000 else f"{gb // 1000} TB"
        cells = " | ".join(
            f"{core_s[k] / 3600:,.1f} core-h" for k in ("ingest", "polars", "spark", "index")
        )
        print(
            f"| {label} | {n / 1e6:,.0f} M | {bucket_cell} | {cells} | {hours(load_s)} | {cores} |"
        )


if __name__ == "__main__":
    main()
