"""Benchmark: one new day of gold into the search index, in place, vs a full reindex.

The issue-15 scenario on the shared 10% Kaggle Huge sample: every symbol gains its
last trading day. Gold before the day is each bucket's daily file without that day
(``part-00000``); the day arrives as one more part per bucket (``part-00001``), as
the incremental process stage writes it. For each engine (a real node this script
starts, one engine at a time), in one run:

1. peer, "full reindex": ``sync_search(..., full=True)`` of the gold with the new day
   into a fresh index with an alias swap (what every sync did before);
2. stockbatch's daily update: the gold before the day is loaded (untimed, it writes
   the record of what the index holds), then ``sync_search`` of the gold with the new
   day, which upserts the new documents into the live index. Timed: that sync.

Then the updated index is compared with the full reindex (document count and a
checksum over every document). Printed: both times, the ratio update / full and the
target (<= 0.05x). Results: ``benchmarks/out/bench_search_update-<UTC>.json``.

Run: ``.venv/bin/python benchmarks/bench_search_update.py [--engines opensearch,elasticsearch]``
(needs ``STOCKBATCH_SHARED_DATA``; the gold comes from bench_search.py's
``benchmarks/out/search-gold-sample``, made first when missing).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
TARGET = 0.05  # update time <= 0.05 x the full reindex's
sys.path.insert(0, str(HERE))

import bench_search  # noqa: E402  (a sibling script: the gold and the nodes)
from stockbatch.lake import files  # noqa: E402
from stockbatch.lake import gold as gold_layer  # noqa: E402
from stockbatch.search import SearchBackend, connect, sync_search  # noqa: E402
from stockbatch.search.indices import DAILY_BARS  # noqa: E402
from stockbatch.settings import Settings  # noqa: E402


def split_gold(daily: list[Path], root: Path) -> tuple[dict[str, Any], dict[str, Any], int]:
    """(gold before the last day, gold with it, rows of that day) as sync arguments."""
    days = [pl.read_parquet(p, columns=["trade_date"])["trade_date"].max() for p in daily]
    last = max(d for d in days if d is not None)
    before: dict[str, Any] = {"daily_files": [], "checksum": {}}
    after: dict[str, Any] = {"daily_files": [], "checksum": {}}
    new_rows = 0
    for src in daily:
        frame = pl.read_parquet(src)
        old, new = (
            frame.filter(pl.col("trade_date") < last),
            frame.filter(pl.col("trade_date") == last),
        )
        bucket = root / src.parent.name
        bucket.mkdir(parents=True, exist_ok=True)
        first = bucket / "part-00000.parquet"
        old.write_parquet(first)
        key = f"gold/daily_features/{src.parent.name}/part-00000.parquet"
        sha = files.file_sha256(first)
        for version in (before, after):
            version["daily_files"].append(first)
            version["checksum"][key] = sha
        if new.height:
            extra = bucket / "part-00001.parquet"
            new.write_parquet(extra)
            after["daily_files"].append(extra)
            after["checksum"][f"gold/daily_features/{src.parent.name}/part-00001.parquet"] = (
                files.file_sha256(extra)
            )
            new_rows += new.height
    return before, after, new_rows


def checksum(backend: SearchBackend, alias: str) -> tuple[int, str]:
    """Document count and SHA-256 over every (id, document), in id order."""
    h = hashlib.sha256()
    docs = sorted(backend.scan(alias, size=5_000))
    for doc_id, source in docs:
        h.update(json.dumps([doc_id, source], sort_keys=True).encode())
    return len(docs), h.hexdigest()


def bench_engine(engine: str, gold: Settings, work: Path, heap: str) -> dict[str, Any]:
    """Start a node of ``engine``, measure the full reindex and the update, stop it."""
    service = bench_search.make_service(engine, work / f"home-{engine}", heap)
    service.up()
    try:
        backend = connect(service.url, 60, kind=engine, **bench_search.node_access(service))
        common = {
            "instruments": gold_layer.instruments_table(gold),
            "quarterly": gold_layer.read_quarterly(gold),
        }
        before, after, new_rows = split_gold(gold_layer.daily_files(gold), work / "daily")
        started = time.perf_counter()
        sync_search(backend, run_id="full", prefix="full", full=True, **common, **after)
        full_s = time.perf_counter() - started
        state = work / f"state-{engine}"
        sync_search(backend, run_id="day-0", prefix="upd", state_dir=state, **common, **before)
        started = time.perf_counter()
        stats = sync_search(
            backend, run_id="day-1", prefix="upd", state_dir=state, **common, **after
        )
        update_s = time.perf_counter() - started
        daily = stats.indices["daily-bars"]
        same = checksum(backend, DAILY_BARS.alias("upd")) == checksum(
            backend, DAILY_BARS.alias("full")
        )
        return {
            "engine": engine,
            "docs": daily.docs,
            "new_rows": new_rows,
            "upserted": daily.docs_indexed,
            "in_place": daily.updated_in_place,
            "full_reindex_s": round(full_s, 3),
            "update_s": round(update_s, 3),
            "ratio": round(update_s / full_s, 4),
            "target": TARGET,
            "met": update_s / full_s <= TARGET,
            "equal_to_full_reindex": same,
        }
    finally:
        service.down()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints a table and writes the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="opensearch,elasticsearch")
    parser.add_argument("--heap", default="512m")
    args = parser.parse_args(argv)
    gold_home = bench_search.gold_files("sample")[0].parents[4]
    gold = Settings(home=gold_home)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-search-update-", dir=OUT) as tmp:
        work = Path(tmp)
        for engine in args.engines.split(","):
            print(f"{engine}: starting a node ...", flush=True)
            results.append(bench_engine(engine, gold, work, args.heap))
            shutil.rmtree(work / "daily", ignore_errors=True)
    print(f"\n{'engine':<14}{'docs':>11}{'new day':>9}{'full s':>9}{'update s':>10}{'ratio':>8}"
          f"{'target':>8}  equal")  # fmt: skip
    for r in results:
        print(
            f"{r['engine']:<14}{r['docs']:>11,}{r['new_rows']:>9,}{r['full_reindex_s']:>9.2f}"
            f"{r['update_s']:>10.2f}{r['ratio']:>7.3f}x{'<=' + str(TARGET):>8}  "
            f"{'yes' if r['equal_to_full_reindex'] else 'NO'}"
        )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    doc = {"benchmark": "bench_search_update", "at": stamp, "results": results}
    for name in (f"bench_search_update-{stamp}.json", "bench_search_update-latest.json"):
        (OUT / name).write_text(json.dumps(doc, indent=2))
    ok = all(r["equal_to_full_reindex"] and r["in_place"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
