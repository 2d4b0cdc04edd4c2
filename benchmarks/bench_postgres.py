"""Benchmark: stockbatch's PostgreSQL load of the gold daily tables vs psql's ``\\copy``.

For each size (``sample``: the shared 10% Kaggle Huge sample; ``10x``: its
deterministic scale-up from synth.py), on a real PostgreSQL server this script
starts (``stockbatch.services.PostgresService``, the same code as the tests) and
stops, in one run:

1. the gold layer is built once per size with ``stockbatch ingest`` + ``process``
   into ``benchmarks/out/pg-lake-<size>`` (reused later; not timed), or taken from
   ``--lake DIR`` (an already processed STOCKBATCH_HOME);
2. **stockbatch**: ``daily_bars`` and ``daily_features`` emptied, a CHECKPOINT,
   then timed: what the load stage does for them, as the loader role, in ONE
   transaction: per gold bucket, read the Parquet file and
   ``tx.load_table(...)`` both tables (binary COPY into a temp staging table,
   ANALYZE, count, one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE IS DISTINCT
   FROM``), then COMMIT;
3. **stockbatch rerun**: the same again on the loaded tables (nothing changes:
   the cost of an idempotent rerun; no peer);
4. **psql \\copy** (the peer): the same rows pre-written as CSV (not timed) and
   loaded into two empty tables made ``LIKE daily_bars INCLUDING ALL`` (same
   columns, primary keys and CHECK constraints), after a CHECKPOINT, by
   ``psql -c "\\copy t FROM 'f.csv' CSV"`` per table (timed, client start included);
5. ``--partitioning``: the same stockbatch load into tables range-partitioned by
   year of ``trade_date`` (in a second database), and a typical API read (one
   symbol's bars joined with its features, ``queries.daily_table``) on 50 symbols
   against both layouts.

Ratio printed: stockbatch rows/s / psql rows/s (target >= 0.7). Repeats
(``--repeat``, default 2) alternate which tool goes first; the table shows
medians. Results: the table on stdout and ``benchmarks/out/bench_postgres-<UTC
time>.json`` (+ ``-latest``).

Run: ``.venv/bin/python benchmarks/bench_postgres.py [--sizes sample,10x]
[--partitioning]`` (needs ``STOCKBATCH_SHARED_DATA`` unless ``--lake`` is given,
and PostgreSQL's server binaries: ``apt-get install postgresql``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
TARGET = 0.7  # stockbatch rows/s >= 0.7 x psql \copy rows/s
AS_OF = "2017-11-30"

sys.path.insert(0, str(HERE))
import synth  # noqa: E402  (a sibling script, not a package)
from stockbatch import lake, schema  # noqa: E402
from stockbatch.services.postgresql import PostgresService, find_pg_bindir  # noqa: E402
from stockbatch.warehouse import bulk, db, loader, queries  # noqa: E402

KEY = ("symbol", "trade_date")
TABLES = ("daily_bars", "daily_features")


dataset = synth.dataset


def gold_home(size: str) -> Path:
    """A STOCKBATCH_HOME whose lake holds the gold layer of ``size`` (built once)."""
    home = OUT / f"pg-lake-{size}"
    if (home / "GOLD_COMPLETE").exists():
        return home
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "STOCKBATCH_HOME": str(home)}
    cli = [sys.executable, "-m", "stockbatch.cli"]
    src = str(dataset(size))
    print(f"[{size}] building the gold layer in {home} (once) ...", file=sys.stderr)
    for args in (
        ["ingest", "--source", "kaggle", "--path", src, "--as-of", AS_OF, "--quiet"],
        ["process", "--as-of", AS_OF, "--quiet"],
    ):
        subprocess.run([*cli, *args], env=env, check=True)
    (home / "GOLD_COMPLETE").write_text("\n")
    return home


def gold_files(home: Path) -> list[Path]:
    """The gold daily bucket files (what the load stage reads)."""
    files = lake.parquet_files(home / "lake" / "gold" / "daily_features")
    if not files:
        raise SystemExit(f"no gold daily files under {home}/lake/gold: run the process stage")
    return files


def split(daily: pa.Table) -> dict[str, pa.Table]:
    """One gold daily table -> the rows of daily_bars and of daily_features."""
    return {
        "daily_bars": daily.select(list(schema.DAILY_BAR_COLUMNS)),
        "daily_features": daily.select(["symbol", "trade_date", *schema.DAILY_FEATURE_COLUMNS]),
    }


def stockbatch_load(engine: sa.Engine, files: list[Path]) -> dict[str, Any]:
    """The load stage for the two daily tables, in one transaction; timed."""
    started = time.perf_counter()
    stats: dict[str, list[int]] = {t: [0, 0, 0] for t in TABLES}
    with loader.run_transaction(engine) as tx:
        for path in files:
            for table, rows in split(lake.read_canonical(path, schema.DAILY_FEATURES)).items():
                s = tx.load_table(table, [rows], key=KEY)
                stats[table] = [
                    a + b
                    for a, b in zip(stats[table], (s.inserted, s.updated, s.unchanged), strict=True)
                ]
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 3), "stats": stats}


def write_peer_csv(files: list[Path], folder: Path) -> dict[str, Path]:
    """The same rows as the peer reads them: one CSV per table (not timed)."""
    paths = {t: folder / f"{t}.csv" for t in TABLES}
    writers: dict[str, pa_csv.CSVWriter] = {}
    try:
        for path in files:
            for table, rows in split(lake.read_canonical(path, schema.DAILY_FEATURES)).items():
                # NaN -> empty field (NULL), as stockbatch stores it.
                cols = [bulk.csv_column(c.combine_chunks()) for c in rows.columns]
                batch = pa.table(cols, names=rows.column_names)
                if table not in writers:
                    writers[table] = pa_csv.CSVWriter(
                        str(paths[table]),
                        batch.schema,
                        write_options=pa_csv.WriteOptions(include_header=False),
                    )
                writers[table].write_table(batch)
    finally:
        for w in writers.values():
            w.close()
    return paths


def psql_copy(psql: str, url: str, csvs: dict[str, Path]) -> dict[str, Any]:
    """``psql -c "\\copy peer_<t> FROM 'f.csv' CSV"`` per table; timed."""
    u = sa.make_url(url)
    env = {**os.environ, "PGPASSWORD": u.password or ""}
    conninfo = [
        "-h",
        u.host or "127.0.0.1",
        "-p",
        str(u.port),
        "-U",
        u.username or "",
        "-d",
        u.database or "",
    ]
    started = time.perf_counter()
    for table, path in csvs.items():
        subprocess.run(
            [
                psql,
                *conninfo,
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-c",
                f"\\copy peer_{table} FROM '{path}' CSV",
            ],
            env=env,
            check=True,
        )
    return {"seconds": round(time.perf_counter() - started, 3)}


def reset(service: PostgresService, owner_url: str, database: str) -> None:
    """Empty the stockbatch tables, recreate the peer's, CHECKPOINT (same start for both)."""
    owner = db.engine_for(owner_url)
    with owner.begin() as conn:
        conn.exec_driver_sql("TRUNCATE daily_bars, daily_features")
        for t in TABLES:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS peer_{t}")
            conn.exec_driver_sql(f"CREATE TABLE peer_{t} (LIKE {t} INCLUDING ALL)")
        db.grant_roles(conn)
    owner.dispose()
    checkpoint(service, database)


def checkpoint(service: PostgresService, database: str) -> None:
    """CHECKPOINT as the superuser: every measured load starts with no dirty buffers."""
    su = db.engine_for(service.url("superuser", database=database), isolation_level="AUTOCOMMIT")
    with su.connect() as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")  # clean up dead tuples left by TRUNCATE/DROP
        conn.exec_driver_sql("CHECKPOINT")
    su.dispose()


def partition(owner_url: str, years: range) -> None:
    """Recreate daily_bars/daily_features range-partitioned by year of trade_date."""
    owner = db.engine_for(owner_url)
    with owner.begin() as conn:
        for t in TABLES:
            conn.exec_driver_sql(
                f"CREATE TABLE {t}_p (LIKE {t} INCLUDING ALL) PARTITION BY RANGE (trade_date)"
            )
            conn.exec_driver_sql(f"DROP TABLE {t}")
            conn.exec_driver_sql(f"ALTER TABLE {t}_p RENAME TO {t}")
            for y in years:
                conn.exec_driver_sql(
                    f"CREATE TABLE {t}_{y} PARTITION OF {t} "
                    f"FOR VALUES FROM ('{y}-01-01') TO ('{y + 1}-01-01')"
                )
        db.grant_roles(conn)
    owner.dispose()


def per_symbol_reads(engine: sa.Engine, symbols: list[str]) -> float:
    """Median seconds of one symbol's bars + features (the API's symbol page query)."""
    times = []
    for s in symbols:
        t = time.perf_counter()
        rows = sum(part.num_rows for part in queries.daily_table(engine, [s]))
        times.append(time.perf_counter() - t)
        assert rows > 0
    return statistics.median(times)


def run_size(
    size: str, args: argparse.Namespace, service: PostgresService, psql: str
) -> dict[str, Any]:
    """Every measurement of one size."""
    home = Path(args.lake) if args.lake else gold_home(size)
    files = gold_files(home)
    rows = sum(lake.read_canonical(p, schema.DAILY_FEATURES).num_rows for p in files)
    urls = service.create_database("bench")
    db.migrate(urls["owner"])
    tmp = Path(tempfile.mkdtemp(prefix="pg-bench-csv-"))
    result: dict[str, Any] = {"size": size, "rows_per_table": rows, "rows": 2 * rows, "runs": []}
    try:
        csvs = write_peer_csv(files, tmp)
        os.chmod(tmp, 0o755)  # psql runs as us, but keep the files readable for a DBA's rerun
        engine = db.engine_for(urls["loader"])
        for i in range(args.repeat):
            order = ["stockbatch", "psql"] if i % 2 == 0 else ["psql", "stockbatch"]
            run: dict[str, Any] = {}
            reset(service, urls["owner"], "bench")
            for tool in order:
                checkpoint(service, "bench")
                if tool == "stockbatch":
                    run["stockbatch"] = stockbatch_load(engine, files)
                    run["stockbatch_rerun"] = stockbatch_load(engine, files)
                else:
                    run["psql"] = psql_copy(psql, urls["loader"], csvs)
            result["runs"].append(run)
            print(
                f"[{size}] run {i + 1}: "
                + ", ".join(f"{k} {v['seconds']:.1f}s" for k, v in run.items()),
                file=sys.stderr,
            )
        engine.dispose()
        if args.partitioning:
            result["partitioning"] = compare_partitioning(service, urls, files)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        service.drop_database("bench")
    return result


def compare_partitioning(
    service: PostgresService, plain: dict[str, str], files: list[Path]
) -> dict[str, Any]:
    """Load time and per-symbol read time: plain tables vs yearly range partitions."""
    dates = [lake.read_canonical(p, schema.DAILY_FEATURES)["trade_date"] for p in files]
    lo = min(pc.min(d).as_py() for d in dates).year
    hi = max(pc.max(d).as_py() for d in dates).year
    part = service.create_database("bench_part")
    db.migrate(part["owner"])
    partition(part["owner"], range(lo, hi + 1))
    out: dict[str, Any] = {"partitions_per_table": hi - lo + 1}
    try:
        symbols = sorted(
            {
                s
                for p in files[:2]
                for s in lake.read_canonical(p, schema.DAILY_FEATURES)["symbol"].to_pylist()
            }
        )
        random.Random(7).shuffle(symbols)
        symbols = symbols[:50]
        for name, urls in (("plain", plain), ("partitioned", part)):
            owner = db.engine_for(urls["owner"])
            with owner.begin() as conn:
                conn.exec_driver_sql("TRUNCATE daily_bars, daily_features")
            owner.dispose()
            checkpoint(service, "bench" if name == "plain" else "bench_part")
            engine = db.engine_for(urls["loader"])
            load = stockbatch_load(engine, files)
            with engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE daily_bars")
                conn.exec_driver_sql("ANALYZE daily_features")
            per_symbol_reads(engine, symbols[:5])  # warm the cache the same way for both
            out[name] = {
                "load_s": load["seconds"],
                "per_symbol_read_ms": round(1000 * per_symbol_reads(engine, symbols), 2),
            }
            engine.dispose()
    finally:
        service.drop_database("bench_part")
    return out


def median(runs: list[dict[str, Any]], tool: str) -> float:
    """Median seconds of ``tool`` over the runs."""
    return statistics.median(r[tool]["seconds"] for r in runs)


def print_table(results: list[dict[str, Any]]) -> None:
    """The summary: rows/s of each tool, the ratio and PASS/MISS."""
    print(f"{'size':<8}{'rows':>12}  {'tool':<18}{'seconds':>9}{'rows/s':>12}  ratio vs psql")
    for r in results:
        peer = r["rows"] / median(r["runs"], "psql")
        for tool in ("stockbatch", "stockbatch_rerun", "psql"):
            secs = median(r["runs"], tool)
            rate = r["rows"] / secs
            ratio = ""
            if tool == "stockbatch":
                verdict = "PASS" if rate / peer >= TARGET else "MISS"
                ratio = f"{rate / peer:.2f}x (target >= {TARGET}: {verdict})"
            elif tool == "stockbatch_rerun":
                ratio = f"{rate / peer:.2f}x (unchanged rerun: 0 rows written)"
            print(f"{r['size']:<8}{r['rows']:>12,}  {tool:<18}{secs:>9.1f}{rate:>12,.0f}  {ratio}")
        if "partitioning" in r:
            p = r["partitioning"]
            plain, parts = p["plain"], p["partitioned"]
            print(
                f"{r['size']:<8}partitioning, {p['partitions_per_table']} yearly partitions/table: "
                f"load {plain['load_s']:.1f}s plain vs {parts['load_s']:.1f}s partitioned; "
                f"one symbol's daily rows {plain['per_symbol_read_ms']:.1f} ms vs "
                f"{parts['per_symbol_read_ms']:.1f} ms (median of 50)"
            )


def main() -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the module docstring and benchmarks/README.md.",
    )
    parser.add_argument(
        "--sizes", default="sample", help="comma-separated: sample,10x (default sample)"
    )
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs per size (default 2); medians shown"
    )
    parser.add_argument(
        "--lake", default=None, help="an already processed STOCKBATCH_HOME to load (one size)"
    )
    parser.add_argument(
        "--partitioning", action="store_true", help="also measure yearly range partitions"
    )
    args = parser.parse_args()
    bindir = find_pg_bindir()
    psql = str(bindir / "psql") if (bindir / "psql").exists() else (shutil.which("psql") or "psql")
    home = Path(tempfile.mkdtemp(prefix="pg-bench-"))
    service = PostgresService(home)
    results = []
    version = None
    try:
        service.up()
        version = service.status().detail
        for size in args.sizes.split(","):
            results.append(run_size(size.strip(), args, service, psql))
    finally:
        service.purge()
        shutil.rmtree(home, ignore_errors=True)
    print_table(results)
    OUT.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    doc = {
        "results": results,
        "env": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "postgres": version,
            "loadavg_1m_end": os.getloadavg()[0],
            "git_commit": subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
            ).stdout.strip(),
        },
    }
    for name in (f"bench_postgres-{stamp}.json", "bench_postgres-latest.json"):
        (OUT / name).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
