"""Benchmark: loading the gold daily bars into OpenSearch, stockbatch vs a raw ``_bulk``.

For each size (``sample``: the shared 10% Kaggle Huge sample; ``10x``: its
deterministic 10x scale-up from synth.py), in one run, against a real OpenSearch
node that this script starts (``stockbatch.services.opensearch.OpenSearchService``,
the same jars as the tests) and purges at the end:

0. gold, once per size: ``stockbatch run --source kaggle --path DIR`` into
   ``benchmarks/out/opensearch-gold-<size>`` (reused by later runs);
1. stockbatch: ``stockbatch.search.sync_search`` of that gold (instruments and
   quarterly empty, so only the daily bars load): Parquet read, documents encoded,
   fresh index, ``_bulk`` with 429 retries, settings restored, refresh, count
   check, alias swap. Timed: the daily-bars dataset, from index creation to swap;
2. peer, "raw _bulk": the same documents (same ``_id``, same fields and values) as
   NDJSON request bodies of the same number of documents, built with ``json.dumps``
   and written to a file *before* the clock starts, then posted with plain
   ``urllib3`` to a fresh index with the same mapping and load settings, with the
   same number of concurrent requests; then settings restored and a refresh.
   Timed: from index creation to the end of the refresh (bodies are read back
   from the page cache inside the clock).

Printed: wall time and docs/s of both (medians over ``--repeat``, order
alternating), CPU seconds of this Python process (client-side cost), and the
ratio stockbatch docs/s / peer docs/s with the target (>= 0.7x). Results:
``benchmarks/out/bench_opensearch-<UTC time>.json`` (+ ``-latest``).

Run: ``.venv/bin/python benchmarks/bench_opensearch.py [--sizes sample,10x]``
(needs ``STOCKBATCH_SHARED_DATA``; Java 17, a JDK and Maven for the node's jars).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
TARGET = 0.7  # stockbatch docs/s >= 0.7 x the raw _bulk's
AS_OF = "2017-11-30"

sys.path.insert(0, str(HERE))
import synth  # noqa: E402  (a sibling script, not a package)

dataset = synth.dataset


def gold_files(size: str) -> list[Path]:
    """The gold daily-features files of ``size``, made by the real pipeline once."""
    from stockbatch import lake

    home = OUT / f"opensearch-gold-{size}"
    daily = home / "lake" / lake.GOLD / "daily_features"
    if not (home / "GOLD-COMPLETE").exists():
        print(f"{size}: building gold with `stockbatch run` into {home} ...", flush=True)
        cmd = [str(Path(sys.executable).with_name("stockbatch"))]
        cmd += ["run", "--source", "kaggle", "--path", str(dataset(size)), "--as-of", AS_OF, "-q"]
        subprocess.run(cmd, env={**os.environ, "STOCKBATCH_HOME": str(home)}, check=True)
        (home / "GOLD-COMPLETE").write_text(AS_OF + "\n")
    return lake.parquet_files(daily)


# ----------------------------------------------------------------------------- the peer


def build_ndjson(files: list[Path], chunk: int, path: Path) -> tuple[list[tuple[int, int]], int]:
    """Write the bulk bodies of the raw peer to ``path``; return (offset, length) per body.

    Independent of stockbatch's encoder: one ``json.dumps`` per row, NaN as null.
    """
    import polars as pl

    from stockbatch.search.load import DAILY_COLUMNS

    spans: list[tuple[int, int]] = []
    docs = 0
    with open(path, "wb") as out:
        lines: list[str] = []

        def flush() -> None:
            body = ("\n".join(lines) + "\n").encode()
            spans.append((out.tell(), len(body)))
            out.write(body)
            lines.clear()

        for p in files:
            for row in pl.read_parquet(p, columns=DAILY_COLUMNS).iter_rows(named=True):
                doc = {
                    k: (None if isinstance(v, float) and math.isnan(v) else v)
                    for k, v in row.items()
                }
                day = doc["trade_date"].isoformat()
                doc["trade_date"] = day
                lines.append(json.dumps({"index": {"_id": f"{doc['symbol']}|{day}"}}))
                lines.append(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
                docs += 1
                if len(lines) == 2 * chunk:
                    flush()
        if lines:
            flush()
    return spans, docs


def raw_bulk(
    url: str, index: str, path: Path, spans: list[tuple[int, int]], threads: int
) -> dict[str, Any]:
    """Post the prepared bodies with urllib3 into a fresh ``index``; timed inside."""
    import urllib3

    from stockbatch.search.indices import DAILY_BARS
    from stockbatch.search.load import LOAD_SETTINGS, SERVE_SETTINGS

    http = urllib3.PoolManager(maxsize=threads + 1)
    template = DAILY_BARS.template("bench")["template"]
    body = {
        "settings": {"index": {**template["settings"]["index"], **LOAD_SETTINGS}},
        "mappings": template["mappings"],
    }
    json_headers = {"Content-Type": "application/json"}

    def call(method: str, target: str, data: bytes | None = None, **kw: Any) -> Any:
        r = http.request(method, f"{url}{target}", body=data, timeout=300.0, **kw)
        if r.status >= 300:
            raise RuntimeError(f"{method} {target}: {r.status} {r.data[:300]!r}")
        return json.loads(r.data)

    fh = open(path, "rb")  # noqa: SIM115 (one handle per call, positional reads)

    def post(span: tuple[int, int]) -> int:
        data = os.pread(fh.fileno(), span[1], span[0])
        res = call(
            "POST", f"/{index}/_bulk", data, headers={"Content-Type": "application/x-ndjson"}
        )
        if res["errors"]:
            raise RuntimeError(f"raw _bulk had item errors: {json.dumps(res)[:300]}")
        return len(res["items"])

    started, cpu = time.perf_counter(), time.process_time()
    call("PUT", f"/{index}", json.dumps(body).encode(), headers=json_headers)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        docs = sum(pool.map(post, spans))
    serve = json.dumps({"index": {**SERVE_SETTINGS, "number_of_replicas": 0}}).encode()
    call("PUT", f"/{index}/_settings", serve, headers=json_headers)
    call("POST", f"/{index}/_refresh")
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    fh.close()
    count = call("GET", f"/{index}/_count")["count"]
    if count != docs:
        raise RuntimeError(f"raw peer: {count} docs searchable, {docs} sent")
    return {"wall_s": wall, "cpu_s": cpu, "docs": docs}


# ----------------------------------------------------------------------------- stockbatch


def stockbatch_load(
    client: Any, files: list[Path], run_id: str, threads: int, chunk: int
) -> dict[str, Any]:
    """sync_search of the gold daily bars (instruments and quarterly empty)."""
    from stockbatch import schema
    from stockbatch.search import sync_search

    started, cpu = time.perf_counter(), time.process_time()
    stats = sync_search(
        client,
        instruments=schema.INSTRUMENTS.empty_table(),
        quarterly=schema.QUARTERLY_FEATURES.empty_table(),
        daily_files=files,
        run_id=run_id,
        checksum=uuid.uuid4().hex,  # never "unchanged": every repeat loads
        prefix="bench",
        keep_previous=False,
        chunk_docs=chunk,
        threads=threads,
    )
    total = time.perf_counter() - started
    daily = stats.indices["daily-bars"]
    return {
        "wall_s": daily.seconds,
        "sync_wall_s": total,
        "cpu_s": time.process_time() - cpu,
        "docs": daily.docs_indexed,
        "index": daily.index,
    }


def clean(client: Any) -> None:
    """Delete every index of the benchmark (between repeats: same start for each)."""
    client.indices.delete(index="bench-*", expand_wildcards="all", ignore_unavailable=True)


def bench_size(
    size: str, url: str, client: Any, repeat: int, threads: int, chunk: int
) -> dict[str, Any]:
    """All runs of one size."""
    files = gold_files(size)
    ndjson = OUT / f"opensearch-peer-{size}-{chunk}.ndjson"
    print(f"{size}: writing the raw peer's NDJSON bodies to {ndjson} ...", flush=True)
    spans, docs = build_ndjson(files, chunk, ndjson)
    runs: dict[str, list[dict[str, Any]]] = {"stockbatch": [], "raw_bulk": []}
    try:
        for i in range(repeat):
            order = ["stockbatch", "raw_bulk"] if i % 2 == 0 else ["raw_bulk", "stockbatch"]
            for tool in order:
                clean(client)
                load = os.getloadavg()[0]
                if tool == "stockbatch":
                    res = stockbatch_load(client, files, f"bench-{size}-{i}", threads, chunk)
                else:
                    res = raw_bulk(url, f"bench-raw-{size}-{i}", ndjson, spans, threads)
                res["load_avg_1m_before"] = round(load, 2)
                runs[tool].append(res)
                print(
                    f"{size} #{i + 1} {tool:<10} {res['wall_s']:8.2f} s "
                    f"{res['docs'] / res['wall_s']:10,.0f} docs/s (load {load:.1f})",
                    flush=True,
                )
                if res["docs"] != docs:
                    raise RuntimeError(f"{tool} loaded {res['docs']} docs, expected {docs}")
    finally:
        clean(client)
        ndjson.unlink(missing_ok=True)
    med = {
        tool: {
            "wall_s": statistics.median(r["wall_s"] for r in rs),
            "cpu_s": statistics.median(r["cpu_s"] for r in rs),
        }
        for tool, rs in runs.items()
    }
    ratio = med["raw_bulk"]["wall_s"] / med["stockbatch"]["wall_s"]  # = docs/s ratio
    return {
        "size": size,
        "docs": docs,
        "files": len(files),
        "bulk_docs": chunk,
        "threads": threads,
        "runs": runs,
        "median": med,
        "ratio_docs_per_s": round(ratio, 3),
        "verdict": "PASS" if ratio >= TARGET else "MISS",
    }


def print_table(results: list[dict[str, Any]]) -> None:
    """Human-readable summary."""
    print()
    head = (
        f"{'size':<7} {'tool':<22} {'docs':>11} {'wall s':>8} {'docs/s':>10} {'client CPU s':>12}"
    )
    print(head)
    print("-" * len(head))
    for res in results:
        for tool, label in (
            ("stockbatch", "stockbatch sync_search"),
            ("raw_bulk", "raw _bulk (urllib3)"),
        ):
            m = res["median"][tool]
            print(
                f"{res['size']:<7} {label:<22} {res['docs']:>11,} {m['wall_s']:8.2f} "
                f"{res['docs'] / m['wall_s']:10,.0f} {m['cpu_s']:12.2f}"
            )
        print(
            f"{res['size']:<7} stockbatch / raw _bulk docs/s = {res['ratio_docs_per_s']:.2f}x "
            f"({res['verdict']}, target >= {TARGET}x); {res['bulk_docs']:,} docs per request, "
            f"{res['threads']} concurrent requests, medians of {len(res['runs']['stockbatch'])}"
        )
        print()


def environment() -> dict[str, Any]:
    """What the figures depend on."""
    import opensearchpy

    from stockbatch.services.opensearch import OPENSEARCH_VERSION

    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "git_commit": commit,
        "opensearch": OPENSEARCH_VERSION,
        "opensearch_py": opensearchpy.__versionstr__,
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="sample", help="comma list of sample, 10x")
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool and size")
    parser.add_argument("--threads", type=int, default=2, help="concurrent _bulk requests")
    parser.add_argument("--bulk-docs", type=int, default=2_000, help="documents per request")
    parser.add_argument("--heap", default="1g", help="the node's JVM heap")
    args = parser.parse_args(argv)

    from stockbatch.search import connect
    from stockbatch.services.opensearch import OpenSearchService

    OUT.mkdir(parents=True, exist_ok=True)
    service = OpenSearchService(OUT / "opensearch-bench-home", heap=args.heap)
    service.purge()  # a fresh node: no indices from earlier runs
    print("starting a local OpenSearch node ...", flush=True)
    service.up()
    results = []
    try:
        client = connect(service.url, timeout=60, pool_size=args.threads + 1)
        for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
            files = gold_files(size)
            # Warm-up (JIT, caches), not measured: both paths on one file.
            warm = OUT / "opensearch-warmup.ndjson"
            spans, _ = build_ndjson(files[:1], args.bulk_docs, warm)
            stockbatch_load(client, files[:1], "warmup", args.threads, args.bulk_docs)
            raw_bulk(service.url, "bench-raw-warmup", warm, spans, args.threads)
            warm.unlink()
            clean(client)
            results.append(
                bench_size(size, service.url, client, args.repeat, args.threads, args.bulk_docs)
            )
    finally:
        service.purge()
    print_table(results)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    doc = {"environment": environment(), "results": results}
    for name in (f"bench_opensearch-{stamp}.json", "bench_opensearch-latest.json"):
        (OUT / name).write_text(json.dumps(doc, indent=2, default=str))
    print(f"results: {OUT / f'bench_opensearch-{stamp}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
