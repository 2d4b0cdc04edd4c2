"""The embedded warehouse: loading gold into it, querying it, and the whole embedded run.

What is measured, per size (``--sizes sample,10x``, default ``sample``), in one run:

1. **ingest + process**: ``stockbatch ingest`` then ``stockbatch process`` in a fresh
   ``STOCKBATCH_HOME`` (the commands of ``bench_process.py``); the gold it leaves is
   the input of every candidate below.
2. **whole run**: ``stockbatch run --search none --warehouse sqlite`` in another fresh
   home, the embedded product end to end. Target: at most ``RUN_TARGET`` (1.5x) the
   ingest + process time (issue 15).
3. **candidates**, each loading the same gold into a new database file, each command a
   fresh process under ``_measure.py`` (wall, CPU, peak RSS):

   - ``sqlite-current``: ``stockbatch load`` as it was before the straight insert
     (every keyed table staged in a temp table, then merged with ``INSERT ... SELECT
     ... ON CONFLICT``): the product's code with ``loader._all_new`` answering False.
   - ``sqlite-tuned``: ``stockbatch load`` as it is (a first load inserts straight
     into the empty tables, in primary-key order per bucket).
   - ``sqlite-adbc``: the same tables created by the product's migrations, then the
     gold daily and quarterly tables bulk-ingested by ``adbc-driver-sqlite`` (Arrow
     bound in C, no Python values), one transaction. Not a product path: ADBC opens
     its own connection, so it cannot share the run's one transaction.
   - ``duckdb``: the models' DDL (primary keys, CHECKs) compiled for PostgreSQL, run
     in DuckDB, then ``INSERT ... SELECT ... FROM read_parquet(gold)`` ordered by key.

   ``sqlite-adbc`` and ``duckdb`` load the three big tables (daily_bars,
   daily_features, quarterly_features); the product paths load these plus the
   instruments and the quarantine (898 + 32 rows on the sample: nothing in time).
   Each database is checked against gold (row counts, and a checksum of close and
   rsi_14 per table).
4. **queries**: the API's most used reads on each candidate's file, ``--queries`` times
   each over random symbols, p50/p95 in ms: one symbol's daily bars + features over
   one year (``/daily``: ``queries.daily_page``), the newest 30 days of one symbol
   (``queries.symbol_daily``), the whole quarterly table of one quarter
   (``queries.quarterly_table``). The same SQL text runs on each driver's cursor
   (sqlite3, duckdb) and the rows are fetched as Python tuples; on the SQLite files the
   product's query functions (SQLAlchemy, Arrow conversion: what the API runs) are
   timed too.
5. **a reader during a load**: a second process opens the file while the first holds a
   write transaction open (WAL on SQLite; DuckDB's single-writer file lock).

Ratios: every load vs ``sqlite-current``, and vs the ingest + process time.
Results: a table on stdout, ``benchmarks/out/bench_warehouse-<UTC>.json`` and
``bench_warehouse-latest.json``.

Run::

    export STOCKBATCH_SHARED_DATA=/path/to/shared/data
    .venv/bin/python benchmarks/bench_warehouse.py                      # sample
    .venv/bin/python benchmarks/bench_warehouse.py --sizes sample,10x   # ~3 GB disk for 10x

``duckdb`` and ``adbc-driver-sqlite`` are not project dependencies: a candidate whose
package is missing is skipped with a note (``uv pip install duckdb adbc-driver-sqlite``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
WORK = OUT / "bench_warehouse"
PYTHON = sys.executable
AS_OF = "2017-11-30"
RUN_TARGET = 1.5  # whole embedded run <= 1.5 x ingest + process (issue 15)
BUSY_LOAD = 1.5
CANDIDATES = ("sqlite-current", "sqlite-tuned", "sqlite-adbc", "duckdb")
NEEDS = {"sqlite-adbc": "adbc_driver_sqlite", "duckdb": "duckdb"}
BIG_TABLES = ("daily_bars", "daily_features", "quarterly_features")

sys.path.insert(0, str(HERE))
import synth  # noqa: E402  (a sibling script, not a package)


def _exe() -> str:
    return str(Path(PYTHON).with_name("stockbatch"))


def ingest_process_commands(data_dir: Path) -> list[list[str]]:
    """``stockbatch ingest`` + ``process`` (the same lines as bench_process.py)."""
    return [
        [_exe(), "ingest", "--source", "kaggle", "--path", str(data_dir), "--as-of", AS_OF, "-q"],
        [_exe(), "process", "--as-of", AS_OF, "--quiet"],
    ]


def run_command(data_dir: Path) -> list[str]:
    """The whole embedded run, search off."""
    return [
        *[_exe(), "run", "--source", "kaggle", "--path", str(data_dir), "--as-of", AS_OF],
        *["--search", "none", "--warehouse", "sqlite", "--quiet"],
    ]


def measured(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run one command under a fresh _measure.py wrapper; its report plus the load average."""
    wrapper = [PYTHON, str(HERE / "_measure.py"), "--cwd", str(REPO), "--", *cmd]
    load = round(os.getloadavg()[0], 2)
    done = subprocess.run(wrapper, env=env, capture_output=True, text=True, check=True)
    report: dict[str, Any] = json.loads(done.stdout)
    report["load_before"] = load
    report["cpu_s"] = round(report["user_s"] + report["sys_s"], 3)
    if report["returncode"] not in (0, 3):  # 3: completed, some inputs rejected
        raise SystemExit(f"{cmd} failed:\n" + "\n".join(report["stderr_tail"]))
    return report


def home_env(home: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "STOCKBATCH_HOME": str(home), "STOCKBATCH_PROGRESS": "false"}
    env.pop("STOCKBATCH_WAREHOUSE__URL", None)
    return {**env, **extra}


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# --------------------------------------------------------------------------- one load (child)


def gold_files(home: Path, table: str) -> list[Path]:
    return sorted((home / "lake" / "gold" / table).rglob("*.parquet"))


def load_one(candidate: str, home: Path, target: Path) -> None:
    """Load ``home``'s gold into ``target`` with one candidate (runs in its own process)."""
    if candidate in ("sqlite-current", "sqlite-tuned"):
        # What `stockbatch load --force` does, called in-process so the old path can be patched in.
        from stockbatch.pipeline.load import load
        from stockbatch.settings import Settings
        from stockbatch.warehouse import loader

        if candidate == "sqlite-current":  # the staging + merge path for every keyed load
            loader._all_new = lambda *args, **kwargs: False  # type: ignore[assignment]
        os.environ["STOCKBATCH_WAREHOUSE__URL"] = f"sqlite:///{target}"
        os.environ["STOCKBATCH_WAREHOUSE__KIND"] = "sqlite"
        os.environ["STOCKBATCH_SEARCH__KIND"] = "none"
        result = load(Settings(), force=True)
        print(result.summary())
    elif candidate == "sqlite-adbc":
        _load_adbc(home, target)
    elif candidate == "duckdb":
        _load_duckdb(home, target)
    else:
        raise SystemExit(f"unknown candidate {candidate}")


def _load_adbc(home: Path, target: Path) -> None:
    import adbc_driver_sqlite.dbapi as adbc
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from stockbatch import schema
    from stockbatch.warehouse import db

    db.migrate(f"sqlite:///{target}")
    conn = adbc.connect(str(target))
    cursor = conn.cursor()
    # The file is in WAL mode already (the migration's connection set it; it persists).
    # synchronous stays at its default: it cannot change inside ADBC's open transaction,
    # and with one commit it costs one fsync more than the product's NORMAL.
    cursor.execute("PRAGMA cache_size = -65536")
    tables = {
        "daily_bars": list(schema.DAILY_BAR_COLUMNS),
        "daily_features": ["symbol", "trade_date", *schema.DAILY_FEATURE_COLUMNS],
    }

    def sqlite_ready(t: pa.Table) -> pa.Table:
        for i, field in enumerate(t.schema):  # SQLite keeps dates as ISO text, bools as 0/1
            if pa.types.is_date(field.type) or pa.types.is_large_string(field.type):
                t = t.set_column(i, field.name, pc.cast(t.column(i), pa.string()))
            elif pa.types.is_boolean(field.type):
                t = t.set_column(i, field.name, pc.cast(t.column(i), pa.int64()))
        return t

    for path in gold_files(home, "daily_features"):
        part = pq.read_table(path)
        for name, columns in tables.items():
            cursor.adbc_ingest(name, sqlite_ready(part.select(columns)), mode="append")
    for path in gold_files(home, "quarterly_features"):
        cursor.adbc_ingest("quarterly_features", sqlite_ready(pq.read_table(path)), mode="append")
    conn.commit()
    conn.close()


def _duckdb_ddl() -> list[str]:
    """The models' CREATE TABLE statements (keys, NOT NULL, CHECKs) as PostgreSQL spells them."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql

    from stockbatch.warehouse import models

    dialect = postgresql.dialect()
    tables = [models.metadata.tables[n] for n in BIG_TABLES]
    return [str(sa.schema.CreateTable(t).compile(dialect=dialect)) for t in tables]


def _duckdb_indexes() -> list[str]:
    """The models' secondary indexes (quarterly_features.quarter), built after the load."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql

    from stockbatch.warehouse import models

    dialect = postgresql.dialect()
    return [
        str(sa.schema.CreateIndex(ix).compile(dialect=dialect))
        for n in BIG_TABLES
        for ix in models.metadata.tables[n].indexes
    ]


def _load_duckdb(home: Path, target: Path) -> None:
    import duckdb

    from stockbatch import schema

    con = duckdb.connect(str(target))
    con.execute("BEGIN")
    for ddl in _duckdb_ddl():
        con.execute(ddl)
    daily = [str(p) for p in gold_files(home, "daily_features")]
    quarterly = [str(p) for p in gold_files(home, "quarterly_features")]
    loads = {
        "daily_bars": (daily, list(schema.DAILY_BAR_COLUMNS), "symbol, trade_date"),
        "daily_features": (
            daily,
            ["symbol", "trade_date", *schema.DAILY_FEATURE_COLUMNS],
            "symbol, trade_date",
        ),
        "quarterly_features": (quarterly, list(schema.QUARTERLY_FEATURES.names), "symbol, quarter"),
    }
    for name, (files, columns, key) in loads.items():
        cols = ", ".join(f'"{c}"' for c in columns)
        con.execute(
            f"INSERT INTO {name} ({cols}) SELECT {cols} FROM read_parquet(?) ORDER BY {key}",
            [files],
        )
    for ddl in _duckdb_indexes():
        con.execute(ddl)
    con.execute("COMMIT")
    con.close()


# --------------------------------------------------------------------------- checks and queries


def _connect(candidate: str, path: Path) -> Any:
    if candidate == "duckdb":
        import duckdb

        return duckdb.connect(str(path), read_only=True)
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def checksums(candidate: str, path: Path) -> dict[str, Any]:
    """Row counts and value sums of the big tables (compared with gold's)."""
    con = _connect(candidate, path)
    try:
        out: dict[str, Any] = {}
        for name, col in (
            ("daily_bars", "close"),
            ("daily_features", "rsi_14"),
            ("quarterly_features", "q_return"),
        ):
            n, total = con.execute(f"SELECT count(*), sum({col}) FROM {name}").fetchone()
            out[name] = {"rows": int(n), f"sum_{col}": round(float(total or 0.0), 3)}
        return out
    finally:
        con.close()


def gold_checksums(home: Path) -> dict[str, Any]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    daily = pq.read_table(gold_files(home, "daily_features"), columns=["close", "rsi_14"])
    quarterly = pq.read_table(gold_files(home, "quarterly_features"), columns=["q_return"])

    def total(arr: Any) -> float:
        return round(float(pc.sum(arr).as_py() or 0.0), 3)

    return {
        "daily_bars": {"rows": daily.num_rows, "sum_close": total(daily["close"])},
        "daily_features": {"rows": daily.num_rows, "sum_rsi_14": total(daily["rsi_14"])},
        "quarterly_features": {
            "rows": quarterly.num_rows,
            "sum_q_return": total(quarterly["q_return"]),
        },
    }


def _daily_sql() -> str:
    from stockbatch import schema

    cols = [f"b.{c}" for c in schema.DAILY_BAR_COLUMNS] + [
        f"f.{c}" for c in schema.DAILY_FEATURE_COLUMNS
    ]
    return (
        f"SELECT {', '.join(cols)} FROM daily_bars b LEFT JOIN daily_features f "
        "ON b.symbol = f.symbol AND b.trade_date = f.trade_date "
    )


def query_sql() -> dict[str, str]:
    """The API's reads as plain SQL (one text for sqlite3 and duckdb; ? parameters)."""
    from stockbatch import schema

    q_cols = ", ".join(f'"{c}"' for c in schema.QUARTERLY_FEATURES.names)
    return {
        "daily_year": _daily_sql() + "WHERE b.symbol = ? AND b.trade_date >= ? "
        "AND b.trade_date <= ? ORDER BY b.symbol, b.trade_date LIMIT 5000",
        "daily_last30": _daily_sql() + "WHERE b.symbol = ? ORDER BY b.trade_date DESC LIMIT 30",
        "quarter_all": f"SELECT {q_cols} FROM quarterly_features WHERE quarter = ? "
        "ORDER BY symbol, quarter",
    }


def _pcts(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {
        "p50_ms": round(statistics.median(s) * 1e3, 3),
        "p95_ms": round(s[min(len(s) - 1, int(0.95 * len(s)))] * 1e3, 3),
        "n": len(s),
    }


def time_queries(candidate: str, path: Path, n: int, seed: int = 15) -> dict[str, Any]:
    """p50/p95 of each read over ``n`` random symbols (same symbols for every candidate)."""
    con = _connect(candidate, path)
    try:
        found = con.execute("SELECT DISTINCT symbol FROM daily_bars").fetchall()
        symbols = sorted(r[0] for r in found)
        found = con.execute("SELECT DISTINCT quarter FROM quarterly_features").fetchall()
        quarters = sorted(r[0] for r in found)
        rng = random.Random(seed)
        picks = [rng.choice(symbols) for _ in range(n)]
        qpicks = [rng.choice(quarters[-40:]) for _ in range(n)]
        params: dict[str, Callable[[int], list[Any]]] = {
            "daily_year": lambda i: [picks[i], "2016-01-01", "2016-12-31"],
            "daily_last30": lambda i: [picks[i]],
            "quarter_all": lambda i: [qpicks[i]],
        }
        if candidate == "duckdb":  # DATE columns: bind dates, not text
            params["daily_year"] = lambda i: [picks[i], dt.date(2016, 1, 1), dt.date(2016, 12, 31)]
        out: dict[str, Any] = {}
        for name, sql in query_sql().items():
            samples, rows = [], 0
            for i in range(n):
                started = time.perf_counter()
                rows += len(con.execute(sql, params[name](i)).fetchall())
                samples.append(time.perf_counter() - started)
            out[name] = {**_pcts(samples), "rows_per_query": round(rows / n, 1)}
    finally:
        con.close()
    if candidate.startswith("sqlite"):
        out.update(_time_product_queries(path, picks, qpicks))
    return out


def _time_product_queries(path: Path, picks: list[str], qpicks: list[str]) -> dict[str, Any]:
    """The same reads through ``stockbatch.warehouse.queries`` (what the API runs)."""
    from stockbatch.warehouse import db, queries

    engine = db.engine_for(f"sqlite:///{path}")
    calls: dict[str, Callable[[int], Any]] = {
        "api_daily_page": lambda i: queries.daily_page(
            engine, [picks[i]], start=dt.date(2016, 1, 1), end=dt.date(2016, 12, 31)
        ),
        "api_symbol_daily": lambda i: queries.symbol_daily(engine, picks[i], 30),
        "api_quarterly_table": lambda i: queries.quarterly_table(engine, quarters=[qpicks[i]]),
    }
    out: dict[str, Any] = {}
    try:
        for name, call in calls.items():
            samples = []
            for i in range(len(picks)):
                started = time.perf_counter()
                call(i)
                samples.append(time.perf_counter() - started)
            out[name] = _pcts(samples)
    finally:
        engine.dispose()
    return out


READER = """
import sys, sqlite3
kind, path = sys.argv[1], sys.argv[2]
try:
    if kind == "duckdb":
        import duckdb
        con = duckdb.connect(path, read_only=True)
    else:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
    n = con.execute("SELECT count(*) FROM daily_bars").fetchone()[0]
    print(f"read {n} rows")
except Exception as exc:
    print(f"refused: {type(exc).__name__}: {str(exc).splitlines()[0]}")
"""


def reader_during_load(candidate: str, path: Path) -> str:
    """Can another process read ``path`` while this one holds a write transaction open?"""
    if candidate == "duckdb":
        import duckdb

        writer: Any = duckdb.connect(str(path))
        writer.execute("BEGIN")
        writer.execute("DELETE FROM daily_bars WHERE symbol = ''")
    else:
        writer = sqlite3.connect(str(path), isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("DELETE FROM daily_bars WHERE symbol = ''")
    try:
        kind = "duckdb" if candidate == "duckdb" else "sqlite"
        done = subprocess.run(
            [PYTHON, "-c", READER, kind, str(path)], capture_output=True, text=True, timeout=120
        )
        return (done.stdout.strip() or done.stderr.strip().splitlines()[-1])[:200]
    finally:
        writer.execute("ROLLBACK")
        writer.close()


# --------------------------------------------------------------------------- one size


def bench_size(size: str, candidates: list[str], n_queries: int, skip_run: bool) -> dict[str, Any]:
    data_dir = synth.dataset(size)
    root = WORK / size
    result: dict[str, Any] = {"size": size, "data_dir": str(data_dir)}

    home = fresh(root / "home")
    steps = [measured(cmd, home_env(home)) for cmd in ingest_process_commands(data_dir)]
    result["ingest_process"] = {
        "wall_s": round(sum(s["wall_s"] for s in steps), 3),
        "cpu_s": round(sum(s["cpu_s"] for s in steps), 3),
        "steps": steps,
    }
    ip_wall = result["ingest_process"]["wall_s"]
    print(f"[{size}] ingest + process: {ip_wall:.1f} s", file=sys.stderr)
    gold = gold_checksums(home)
    result["gold"] = gold

    if not skip_run:
        run_home = fresh(root / "run-home")
        run = measured(run_command(data_dir), home_env(run_home))
        run["ratio_vs_ingest_process"] = round(run["wall_s"] / ip_wall, 3)
        run["target"] = RUN_TARGET
        run["met"] = run["ratio_vs_ingest_process"] <= RUN_TARGET
        run["warehouse_mb"] = round((run_home / "warehouse.db").stat().st_size / 2**20, 1)
        result["run"] = run
        shutil.rmtree(run_home, ignore_errors=True)
        print(f"[{size}] whole run: {run['wall_s']:.1f} s", file=sys.stderr)

    result["candidates"] = {}
    for cand in candidates:
        if cand in NEEDS and importlib.util.find_spec(NEEDS[cand]) is None:
            result["candidates"][cand] = {"skipped": f"{NEEDS[cand]} is not installed"}
            continue
        target = root / f"{cand}.{'duckdb' if cand == 'duckdb' else 'db'}"
        for suffix in ("", "-wal", "-shm", ".wal"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        cmd = [PYTHON, __file__, "--load-one", cand, "--home", str(home), "--target", str(target)]
        try:
            report = measured(cmd, home_env(home))
        except SystemExit as exc:  # one failing candidate does not end the benchmark
            result["candidates"][cand] = {"skipped": f"failed: {str(exc)[-300:]}"}
            continue
        report["file_mb"] = round(target.stat().st_size / 2**20, 1)
        report["matches_gold"] = checksums(cand, target) == gold
        report["queries"] = time_queries(cand, target, n_queries)
        report["reader_during_load"] = reader_during_load(cand, target)
        result["candidates"][cand] = report
        print(f"[{size}] {cand}: {report['wall_s']:.1f} s", file=sys.stderr)
        for suffix in ("", "-wal", "-shm", ".wal"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
    base = result["candidates"].get("sqlite-current", {}).get("wall_s")
    for report in result["candidates"].values():
        if "wall_s" in report:
            report["ratio_vs_sqlite_current"] = round(report["wall_s"] / base, 3) if base else None
            report["ratio_vs_ingest_process"] = round(report["wall_s"] / ip_wall, 3)
    shutil.rmtree(home, ignore_errors=True)
    return result


def print_table(results: list[dict[str, Any]]) -> None:
    for r in results:
        ip = r["ingest_process"]
        print(f"\n== {r['size']} ==  ingest + process: ", end="")
        print(f"{ip['wall_s']:.1f} s wall, {ip['cpu_s']:.1f} s CPU")
        if "run" in r:
            run = r["run"]
            verdict = "PASS" if run["met"] else "MISS"
            print(
                f"whole embedded run: {run['wall_s']:.1f} s wall, {run['cpu_s']:.1f} s CPU, "
                f"{run['ratio_vs_ingest_process']:.2f}x ingest + process "
                f"(target <= {RUN_TARGET}x: {verdict}); load avg before {run['load_before']}"
            )
        head = (
            f"{'candidate':<15}{'load s':>8}{'CPU s':>8}{'MB':>8}{'vs cur':>8}{'vs i+p':>8}"
            f"{'gold':>6}  {'daily_year p50/p95':>19}  {'last30 p50/p95':>16}  "
            f"{'quarter p50/p95':>17}  reader during a load"
        )
        print(head)
        for name, c in r["candidates"].items():
            if "skipped" in c:
                print(f"{name:<15}skipped: {c['skipped']}")
                continue
            q = c["queries"]

            def pq(k: str, q: dict[str, Any] = q) -> str:
                return f"{q[k]['p50_ms']:.2f}/{q[k]['p95_ms']:.2f} ms"

            ratio = c["ratio_vs_sqlite_current"]
            print(
                f"{name:<15}{c['wall_s']:>8.1f}{c['cpu_s']:>8.1f}{c['file_mb']:>8.0f}"
                f"{(f'{ratio:.2f}x' if ratio else '-'):>8}{c['ratio_vs_ingest_process']:>7.2f}x"
                f"{('ok' if c['matches_gold'] else 'DIFF'):>6}  {pq('daily_year'):>19}  "
                f"{pq('daily_last30'):>16}  {pq('quarter_all'):>17}  {c['reader_during_load']}"
            )
            if "api_daily_page" in q:
                print(
                    f"{'':<15}API functions: daily_page {pq('api_daily_page')}, symbol_daily "
                    f"{pq('api_symbol_daily')}, quarterly_table {pq('api_quarterly_table')}"
                )


def environment() -> dict[str, Any]:
    def out(cmd: list[str]) -> str:
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    versions = {"sqlite": sqlite3.sqlite_version, "python": platform.python_version()}
    for mod in ("duckdb", "adbc_driver_sqlite", "pyarrow", "sqlalchemy"):
        if importlib.util.find_spec(mod) is not None:
            versions[mod] = getattr(__import__(mod), "__version__", "?")
    return {
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "versions": versions,
        "git_commit": out(["git", "rev-parse", "HEAD"]),
        "src_dirty": bool(out(["git", "status", "--porcelain", "src"])),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="Embedded warehouse candidates (see docstring).")
    parser.add_argument("--sizes", default="sample", help="comma-separated: sample, 10x")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--queries", type=int, default=200, help="repetitions per query")
    parser.add_argument("--skip-run", action="store_true", help="no whole `stockbatch run`")
    parser.add_argument("--load-one", help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--target", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_one:
        load_one(args.load_one, args.home, args.target)
        return 0
    load = os.getloadavg()[0]
    if load > BUSY_LOAD:
        print(f"warning: 1-minute load average {load:.2f}: figures will be noisy", file=sys.stderr)
    env = environment()
    results = [
        bench_size(size, args.candidates.split(","), args.queries, args.skip_run)
        for size in args.sizes.split(",")
    ]
    env["load_avg_after"] = os.getloadavg()
    print_table(results)
    loads = f"load average before {env['load_avg']}, after {env['load_avg_after']}"
    print(f"\n{loads}; {env['cpus']} CPUs")
    OUT.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    doc = json.dumps({"environment": env, "results": results}, indent=1, default=str)
    (OUT / f"bench_warehouse-{stamp}.json").write_text(doc)
    (OUT / "bench_warehouse-latest.json").write_text(doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
