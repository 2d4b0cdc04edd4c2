"""Benchmark: loading the gold daily bars into OpenSearch and Elasticsearch,
stockbatch vs a raw ``_bulk``.

For each engine (``--engines``, default ``opensearch,elasticsearch``) and each size
(``sample``: the shared 10% Kaggle Huge sample; ``10x``: its deterministic 10x
scale-up from synth.py), in one run, against a real node that this script starts
(``stockbatch.services.opensearch.OpenSearchService`` /
``stockbatch.services.elasticsearch.ElasticsearchService``, the same code as the
tests, both with the same ``--heap``) in a temporary home and purges afterwards.
The engines run one after the other, never at the same time: start node A, measure
every size, stop it; then node B.

0. before any node starts, once per size: the gold, made by ``stockbatch run
   --source kaggle --path DIR`` into ``benchmarks/out/search-gold-<size>`` (reused
   by later runs), and the raw peer's NDJSON bodies (shared by both engines);
1. stockbatch: ``stockbatch.search.sync_search`` of that gold through the engine's
   ``SearchBackend`` (instruments and quarterly empty, so only the daily bars load):
   Parquet read, documents encoded, fresh index, ``_bulk`` with 429 retries,
   settings restored, refresh, count check, alias swap. Timed: the daily-bars
   dataset, from index creation to swap;
2. peer, "raw _bulk": the same documents (same ``_id``, same fields and values) as
   NDJSON request bodies of the same number of documents, built with ``json.dumps``
   and written to a file *before* the clock starts, then posted with plain
   ``urllib3`` to a fresh index with the same mapping and load settings
   (``LOAD_SETTINGS``), with the same number of concurrent requests; then the same
   serve settings (``SERVE_SETTINGS``) and a refresh. Timed: from index creation to
   the end of the refresh (bodies are read back from the page cache inside the clock).

Before the measured runs of each engine and size, a warm-up loads one gold file both
ways (JIT, caches) and checks that both indices hold the same documents.

Printed: per engine and size, wall time and docs/s of both (medians over
``--repeat``, order alternating), CPU seconds of this Python process (client-side
cost) and of the node, the ratio stockbatch docs/s / peer docs/s with the target
(>= 0.7x on each engine), and the two engines' load times for the same documents.
Results: ``benchmarks/out/bench_search-<UTC time>.json`` (+ ``-latest``).

Run: ``.venv/bin/python benchmarks/bench_search.py [--engines opensearch,elasticsearch]
[--sizes sample,10x] [--repeat 3]`` (needs ``STOCKBATCH_SHARED_DATA``; Java 17, a JDK
and Maven for the nodes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stockbatch.search import SearchBackend
    from stockbatch.services.base import LocalService

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
TARGET = 0.7  # stockbatch docs/s >= 0.7 x the raw _bulk's, on each engine
AS_OF = "2017-11-30"
ENGINES = ("opensearch", "elasticsearch")
LABELS = {"opensearch": "OpenSearch", "elasticsearch": "Elasticsearch"}
PREFIX = "bench"  # every index of the benchmark starts with it
CHECK_DOCS = 25  # documents compared between both indices after the warm-up

sys.path.insert(0, str(HERE))
import synth  # noqa: E402  (a sibling script, not a package)

dataset = synth.dataset


def gold_files(size: str) -> list[Path]:
    """The gold daily-features files of ``size``, made by the real pipeline once."""
    from stockbatch import lake

    home = OUT / f"search-gold-{size}"
    daily = home / "lake" / lake.GOLD / "daily_features"
    if not (home / "GOLD-COMPLETE").exists():
        print(f"{size}: building gold with `stockbatch run` into {home} ...", flush=True)
        cmd = [str(Path(sys.executable).with_name("stockbatch"))]
        cmd += ["run", "--source", "kaggle", "--path", str(dataset(size)), "--as-of", AS_OF, "-q"]
        subprocess.run(cmd, env={**os.environ, "STOCKBATCH_HOME": str(home)}, check=True)
        (home / "GOLD-COMPLETE").write_text(AS_OF + "\n")
    return lake.parquet_files(daily)


# ----------------------------------------------------------------------------- the peer


@dataclass
class Bodies:
    """The raw peer's prepared ``_bulk`` bodies: one file, (offset, length) per body."""

    path: Path
    spans: list[tuple[int, int]]
    docs: int


def _doc(row: dict[str, Any]) -> dict[str, Any]:
    """One gold row as the peer sends it: NaN as null, the date as ``YYYY-MM-DD``."""
    doc: dict[str, Any] = {
        k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()
    }
    doc["trade_date"] = row["trade_date"].isoformat()
    return doc


def build_ndjson(files: list[Path], chunk: int, path: Path) -> Bodies:
    """Write the bulk bodies of the raw peer to ``path``.

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
                doc = _doc(row)
                lines.append(json.dumps({"index": {"_id": f"{doc['symbol']}|{doc['trade_date']}"}}))
                lines.append(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
                docs += 1
                if len(lines) == 2 * chunk:
                    flush()
        if lines:
            flush()
    return Bodies(path, spans, docs)


def raw_bulk(url: str, index: str, bodies: Bodies, threads: int) -> dict[str, Any]:
    """Post the prepared bodies with urllib3 into a fresh ``index``; timed inside."""
    import urllib3

    from stockbatch.search.indices import DAILY_BARS
    from stockbatch.search.load import LOAD_SETTINGS, SERVE_SETTINGS

    # A secured node: the same user and CA as stockbatch's client (node_access).
    access = _ACCESS.get(url, {})
    http = urllib3.PoolManager(maxsize=threads + 1, ca_certs=access.get("ca_file"))
    auth = (
        urllib3.make_headers(basic_auth=f"{access['username']}:{access['password']}")
        if access.get("username")
        else {}
    )
    template = DAILY_BARS.template(PREFIX)["template"]
    body = {
        "settings": {"index": {**template["settings"]["index"], **LOAD_SETTINGS}},
        "mappings": template["mappings"],
    }
    json_headers = {"Content-Type": "application/json"}

    def call(method: str, target: str, data: bytes | None = None, **kw: Any) -> Any:
        headers = {**auth, **kw.pop("headers", {})}
        r = http.request(method, f"{url}{target}", body=data, timeout=300.0, headers=headers, **kw)
        if r.status >= 300:
            raise RuntimeError(f"{method} {target}: {r.status} {r.data[:300]!r}")
        return json.loads(r.data)

    fh = open(bodies.path, "rb")  # noqa: SIM115 (one handle for all, positional reads)

    def post(span: tuple[int, int]) -> int:
        data = os.pread(fh.fileno(), span[1], span[0])
        res = call(
            "POST", f"/{index}/_bulk", data, headers={"Content-Type": "application/x-ndjson"}
        )
        if res["errors"]:
            raise RuntimeError(f"raw _bulk had item errors: {json.dumps(res)[:300]}")
        return len(res["items"])

    try:
        started, cpu = time.perf_counter(), time.process_time()
        call("PUT", f"/{index}", json.dumps(body).encode(), headers=json_headers)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            docs = sum(pool.map(post, bodies.spans))
        serve = json.dumps({"index": {**SERVE_SETTINGS, "number_of_replicas": 0}}).encode()
        call("PUT", f"/{index}/_settings", serve, headers=json_headers)
        call("POST", f"/{index}/_refresh")
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu
    finally:
        fh.close()
    count = call("GET", f"/{index}/_count")["count"]
    http.clear()
    if count != docs:
        raise RuntimeError(f"raw peer: {count} docs searchable, {docs} sent")
    return {"wall_s": wall, "cpu_s": cpu, "docs": docs, "index": index}


# ----------------------------------------------------------------------------- stockbatch


def stockbatch_load(
    backend: SearchBackend, files: list[Path], run_id: str, threads: int, chunk: int
) -> dict[str, Any]:
    """sync_search of the gold daily bars (instruments and quarterly empty)."""
    from stockbatch import schema
    from stockbatch.search import sync_search

    started, cpu = time.perf_counter(), time.process_time()
    stats = sync_search(
        backend,
        instruments=schema.INSTRUMENTS.empty_table(),
        quarterly=schema.QUARTERLY_FEATURES.empty_table(),
        daily_files=files,
        run_id=run_id,
        checksum=uuid.uuid4().hex,  # never "unchanged": every repeat loads
        prefix=PREFIX,
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


def clean(backend: SearchBackend) -> None:
    """Delete every index of the benchmark (between runs: the same start for each).

    By name, not by wildcard: Elasticsearch 8 refuses wildcard deletes by default.
    """
    backend.delete_indices(backend.list_indices(f"{PREFIX}-*"))


def same_documents(backend: SearchBackend, ours: str, peer: str, files: list[Path]) -> int:
    """Compare ``CHECK_DOCS`` documents of the first gold file in both indices; their number."""
    import polars as pl

    from stockbatch.search.load import DAILY_COLUMNS

    frame = pl.read_parquet(files[0], columns=DAILY_COLUMNS)
    step = max(1, frame.height // CHECK_DOCS)
    rows = frame.gather_every(step).head(CHECK_DOCS).iter_rows(named=True)
    checked = 0
    for row in rows:
        doc_id = f"{row['symbol']}|{row['trade_date'].isoformat()}"
        a, b = backend.get_source(ours, doc_id), backend.get_source(peer, doc_id)
        if a != b or a != _doc(row):
            raise RuntimeError(f"document {doc_id} differs: stockbatch {a} vs raw _bulk {b}")
        checked += 1
    return checked


# ----------------------------------------------------------------------------- the nodes


def make_service(engine: str, home: Path, heap: str) -> LocalService[Any]:
    """The local node of ``engine`` under ``home`` (not started)."""
    if engine == "opensearch":
        from stockbatch.services.opensearch import OpenSearchService

        return OpenSearchService(home, heap=heap)
    from stockbatch.services.elasticsearch import ElasticsearchService

    return ElasticsearchService(home, heap=heap)


_ACCESS: dict[str, dict[str, Any]] = {}
"""node_access() of each started node, by URL (raw_bulk's credentials and CA)."""


def node_access(service: LocalService[Any]) -> dict[str, Any]:
    """:func:`stockbatch.search.connect` keywords for the node ``service`` runs, from its
    record: a secured node's admin user (the benchmarks' own index prefixes are outside
    the loader's role; the record's ``username`` if it names no admin), password and CA
    file; {} for an open node."""
    from stockbatch.services import recorded_endpoints

    record = recorded_endpoints(service.home).get(service.name) or {}
    user = record.get("admin_username") or record.get("username")
    password = record.get("admin_password") or record.get("password")
    access: dict[str, Any] = {}
    if user and password:
        access |= {"username": str(user), "password": str(password)}
    if record.get("ca_file"):
        access["ca_file"] = str(record["ca_file"])
    return access


def node_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) of the node's process tree so far (the ES launcher
    and its server JVM; the OpenSearch JVM)."""
    import psutil

    if pid is None:
        return math.nan
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return math.nan
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def node_rss_mb(pid: int | None) -> float:
    """Resident memory of the node's process tree, MB."""
    import psutil

    if pid is None:
        return math.nan
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs) / 2**20
    except psutil.Error:
        return math.nan


# ----------------------------------------------------------------------------- one engine


def bench_size(
    engine: str,
    size: str,
    url: str,
    backend: SearchBackend,
    node_pid: int | None,
    files: list[Path],
    bodies: Bodies,
    repeat: int,
    threads: int,
    chunk: int,
) -> dict[str, Any]:
    """All runs of one engine and size (after a warm-up on one file)."""
    warm = OUT / f"search-warmup-{chunk}.ndjson"
    warm_bodies = build_ndjson(files[:1], chunk, warm)
    try:
        clean(backend)
        ours = stockbatch_load(backend, files[:1], "warmup", threads, chunk)
        peer = raw_bulk(url, f"{PREFIX}-raw-warmup", warm_bodies, threads)
        checked = same_documents(backend, ours["index"], peer["index"], files)
    finally:
        warm.unlink(missing_ok=True)
    print(f"{engine} {size}: warm-up done, {checked} documents identical in both indices")
    runs: dict[str, list[dict[str, Any]]] = {"stockbatch": [], "raw_bulk": []}
    try:
        for i in range(repeat):
            order = ["stockbatch", "raw_bulk"] if i % 2 == 0 else ["raw_bulk", "stockbatch"]
            for tool in order:
                clean(backend)
                load = os.getloadavg()[0]
                node_cpu = node_cpu_s(node_pid)
                if tool == "stockbatch":
                    res = stockbatch_load(backend, files, f"bench-{size}-{i}", threads, chunk)
                else:
                    res = raw_bulk(url, f"{PREFIX}-raw-{size}-{i}", bodies, threads)
                res["node_cpu_s"] = node_cpu_s(node_pid) - node_cpu
                res["load_avg_1m_before"] = round(load, 2)
                res["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
                runs[tool].append(res)
                print(
                    f"{engine:<13} {size} #{i + 1} {tool:<10} {res['wall_s']:8.2f} s "
                    f"{res['docs'] / res['wall_s']:10,.0f} docs/s, client CPU "
                    f"{res['cpu_s']:.1f} s, node CPU {res['node_cpu_s']:.1f} s "
                    f"(load {load:.1f} -> {res['load_avg_1m_after']:.1f})",
                    flush=True,
                )
                if res["docs"] != bodies.docs:
                    raise RuntimeError(f"{tool} loaded {res['docs']} docs, expected {bodies.docs}")
    finally:
        clean(backend)
    med = {
        tool: {
            key: statistics.median(r[key] for r in rs) for key in ("wall_s", "cpu_s", "node_cpu_s")
        }
        for tool, rs in runs.items()
    }
    ratio = med["raw_bulk"]["wall_s"] / med["stockbatch"]["wall_s"]  # = docs/s ratio
    # Each repeat's two runs are back to back: their ratio shows how much a busy
    # machine moved the figures between repeats.
    pairs = [
        round(p["wall_s"] / o["wall_s"], 3)
        for o, p in zip(runs["stockbatch"], runs["raw_bulk"], strict=True)
    ]
    return {
        "engine": engine,
        "size": size,
        "docs": bodies.docs,
        "files": len(files),
        "bulk_docs": chunk,
        "threads": threads,
        "warmup_docs_compared": checked,
        "runs": runs,
        "median": med,
        "ratio_docs_per_s": round(ratio, 3),
        "ratio_per_repeat": pairs,
        "verdict": "PASS" if ratio >= TARGET else "MISS",
    }


def bench_engine(
    engine: str,
    home: Path,
    sizes: list[str],
    inputs: dict[str, tuple[list[Path], Bodies]],
    args: argparse.Namespace,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Start the node of ``engine``, measure every size, purge the node."""
    from stockbatch.search import connect

    service = make_service(engine, home, args.heap)
    service.purge()  # a fresh node: no indices from earlier runs
    print(f"starting a local {LABELS[engine]} node (heap {args.heap}) ...", flush=True)
    started = time.perf_counter()
    status = service.up()
    info: dict[str, Any] = {
        "engine": engine,
        "version": service.version,
        "heap": args.heap,
        "start_s": round(time.perf_counter() - started, 1),
        "pid": status.pid,
    }
    results = []
    try:
        _ACCESS[service.url] = access = node_access(service)
        backend = connect(
            service.url, timeout=60, kind=engine, pool_size=args.threads + 1, **access
        )
        try:
            info["rss_mb_after_start"] = round(node_rss_mb(status.pid), 0)
            for size in sizes:
                files, bodies = inputs[size]
                results.append(
                    bench_size(
                        engine,
                        size,
                        service.url,
                        backend,
                        status.pid,
                        files,
                        bodies,
                        args.repeat,
                        args.threads,
                        args.bulk_docs,
                    )
                )
            info["rss_mb_at_end"] = round(node_rss_mb(status.pid), 0)
        finally:
            backend.close()
    finally:
        service.purge()
    return info, results


# ----------------------------------------------------------------------------- output


def compare_engines(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per size measured on both engines: their load times for the same documents."""
    out = []
    by = {(r["engine"], r["size"]): r for r in results}
    for size in dict.fromkeys(r["size"] for r in results):
        os_, es = by.get(("opensearch", size)), by.get(("elasticsearch", size))
        if os_ is None or es is None:
            continue
        row: dict[str, Any] = {"size": size, "docs": os_["docs"]}
        for tool in ("stockbatch", "raw_bulk"):
            o, e = os_["median"][tool]["wall_s"], es["median"][tool]["wall_s"]
            row[tool] = {
                "opensearch_s": round(o, 2),
                "elasticsearch_s": round(e, 2),
                "elasticsearch_over_opensearch": round(e / o, 3),
            }
        out.append(row)
    return out


def print_table(results: list[dict[str, Any]], comparison: list[dict[str, Any]]) -> None:
    """Human-readable summary: engine x size side by side, then engine vs engine."""
    print()
    head = (
        f"{'engine':<13} {'size':<7} {'docs':>11} {'stockbatch s':>12} {'docs/s':>9} "
        f"{'peer s':>8} {'peer docs/s':>11} {'ratio':>6}  {'verdict':<7} "
        f"{'client CPU s (sb / peer)':>24} {'node CPU s (sb / peer)':>22}  per repeat"
    )
    print(head)
    print("-" * len(head))
    for res in results:
        sb, peer = res["median"]["stockbatch"], res["median"]["raw_bulk"]
        client = f"{sb['cpu_s']:.1f} / {peer['cpu_s']:.1f}"
        node = f"{sb['node_cpu_s']:.1f} / {peer['node_cpu_s']:.1f}"
        print(
            f"{LABELS[res['engine']]:<13} {res['size']:<7} {res['docs']:>11,} "
            f"{sb['wall_s']:12.2f} {res['docs'] / sb['wall_s']:9,.0f} "
            f"{peer['wall_s']:8.2f} {res['docs'] / peer['wall_s']:11,.0f} "
            f"{res['ratio_docs_per_s']:5.2f}x  {res['verdict']:<7} {client:>24} {node:>22}  "
            + " ".join(f"{x:.2f}x" for x in res["ratio_per_repeat"])
        )
    if results:
        r = results[0]
        print(
            f"ratio = stockbatch docs/s / raw _bulk docs/s, target >= {TARGET}x on each engine; "
            f"{r['bulk_docs']:,} docs per request, {r['threads']} concurrent requests, "
            f"medians of {len(r['runs']['stockbatch'])}; per repeat: the ratio of each "
            "back-to-back pair"
        )
    for row in comparison:
        sb, peer = row["stockbatch"], row["raw_bulk"]
        print(
            f"{row['size']} ({row['docs']:,} docs), Elasticsearch vs OpenSearch: stockbatch "
            f"{sb['elasticsearch_s']:.1f} s vs {sb['opensearch_s']:.1f} s "
            f"({sb['elasticsearch_over_opensearch']:.2f}x the time), raw _bulk "
            f"{peer['elasticsearch_s']:.1f} s vs {peer['opensearch_s']:.1f} s "
            f"({peer['elasticsearch_over_opensearch']:.2f}x)"
        )
    print()


def environment(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """What the figures depend on."""
    import opensearchpy
    import urllib3

    def git(*cmd: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(REPO), *cmd], capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "git_commit": git("rev-parse", "HEAD"),
        "src_dirty": bool(git("status", "--porcelain", "--", "src")),
        "opensearch_py": opensearchpy.__versionstr__,
        "urllib3": urllib3.__version__,
        "nodes": nodes,
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        import elasticsearch

        env["elasticsearch_py"] = elasticsearch.__versionstr__
    except ImportError:
        env["elasticsearch_py"] = None
    return env


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--engines", default=",".join(ENGINES), help="comma list of opensearch, elasticsearch"
    )
    parser.add_argument("--sizes", default="sample", help="comma list of sample, 10x")
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool, engine and size")
    parser.add_argument("--threads", type=int, default=2, help="concurrent _bulk requests")
    parser.add_argument("--bulk-docs", type=int, default=2_000, help="documents per request")
    parser.add_argument("--heap", default="512m", help="the JVM heap of each node (the same)")
    parser.add_argument(
        "--files", type=int, default=0, help="only the first N gold files per size (a quick look)"
    )
    args = parser.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        parser.error(f"--engines: {', '.join(unknown) or 'none'}: use {', '.join(ENGINES)}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    OUT.mkdir(parents=True, exist_ok=True)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    # Gold and the peer's bodies first, while no node runs (both engines share them).
    inputs: dict[str, tuple[list[Path], Bodies]] = {}
    home = Path(tempfile.mkdtemp(prefix="bench_search-home-", dir=OUT))
    nodes: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    try:
        for size in sizes:
            files = gold_files(size)
            if args.files > 0:
                files = files[: args.files]
            ndjson = OUT / f"search-peer-{size}-{args.bulk_docs}.ndjson"
            print(f"{size}: writing the raw peer's NDJSON bodies to {ndjson} ...", flush=True)
            inputs[size] = (files, build_ndjson(files, args.bulk_docs, ndjson))
        # One node at a time (2 cores): start, measure every size, purge; then the next.
        for engine in engines:
            info, res = bench_engine(engine, home, sizes, inputs, args)
            nodes.append(info)
            results.extend(res)
    finally:
        for _, bodies in inputs.values():
            bodies.path.unlink(missing_ok=True)
        shutil.rmtree(home, ignore_errors=True)
    comparison = compare_engines(results)
    print_table(results, comparison)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    env = {**environment(nodes), "load_avg_at_start": load_at_start}
    doc = {"environment": env, "results": results, "engines_compared": comparison}
    for name in (f"bench_search-{stamp}.json", "bench_search-latest.json"):
        (OUT / name).write_text(json.dumps(doc, indent=2, default=str))
    print(f"results: {OUT / f'bench_search-{stamp}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
