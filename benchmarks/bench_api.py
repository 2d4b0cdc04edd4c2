"""Benchmark: the REST API (``stockbatch serve``) vs a direct psycopg query, on PostgreSQL.

On the shared Huge sample loaded into PostgreSQL (``stockbatch run --warehouse
postgresql`` into a benchmark home, made once and reused; ``--fresh`` rebuilds it),
in one run:

1. ``stockbatch serve`` is started (a subprocess on a free port of 127.0.0.1) with
   a bearer token of an analyst user made for the run (revoked at the end);
2. ``GET /api/v1/daily?symbols=X&start=&end=`` for ten years of one symbol
   (``--symbol``, default PG: ~2,500 rows), as JSON (``limit`` set so one page
   holds every row) and as ``format=parquet``, is driven by ``hey`` (Debian's
   HTTP load generator) with ``--concurrency`` clients (default 50); every request's
   latency (to the last byte of the body) is taken from ``hey -o csv``;
3. the peer: the same rows read by a direct psycopg query, with the same number of
   concurrent clients (threads, each with its own connection, as the reader role)
   and requests. The SQL is the very statement the API runs for the JSON page
   (captured from ``warehouse.queries.daily_page`` with a SQLAlchemy
   ``before_cursor_execute`` hook), executed with ``fetchall()``;
   the three tools are warmed up (``--warmup`` requests each), then run in
   ``--rounds`` rounds (default 3, ``--requests`` split among them, default 2,000),
   the order turning each round so no tool always runs first on the shared machine;
   p50/p95/p99 are computed the same way (numpy) for all three from every request's
   latency, requests/s is requests over the summed wall time of the rounds;
   before timing, the JSON page, the Parquet file and the direct query's rows are
   checked to hold the same rows and values;
4. the full quarterly table: ``GET /api/v1/quarterly?format=parquet`` downloaded to
   a file (analyst token, httpx) vs ``stockbatch export quarterly --out x.parquet``
   (a subprocess: interpreter start and imports included), best of 3 each, and the
   files compared (same rows and values). For context, the export is also timed
   in-process (``export.export_quarterly``, no interpreter start).

Printed: one line per figure, then a table with the ratios against their targets:
Parquet p95 / direct p95 <= 2, JSON p95 / direct p95 <= 3, quarterly download /
export <= 1.5 ("target met" or "MISSED"). Results also go to
``benchmarks/out/bench_api-<UTC time>.json`` (+ ``-latest``).

Run: ``.venv/bin/python benchmarks/bench_api.py [--symbol PG] [--requests 2000]
[--concurrency 50] [--home DIR] [--fresh]`` (needs ``STOCKBATCH_SHARED_DATA`` or
``../shared/data`` for the first load, PostgreSQL's server binaries
(``bash scripts/setup-services.sh``) and ``hey`` (installed with apt-get when
missing and running as root)).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
AS_OF = "2017-11-30"
SAMPLE = Path("kaggle") / "huge-stock-market-sample"
MARKER = "BENCH_API_LOADED.json"
USER = "bench-api-analyst"
PORTS = range(8200, 8300)
MAX_CONNECTIONS = 200  # the API's pools (up to 2 x 60) + the peer's clients + margin
TARGETS = {"parquet": 2.0, "json": 3.0, "quarterly": 1.5}

sys.path.insert(0, str(HERE))
from stockbatch import schema  # noqa: E402
from stockbatch.services.postgresql import PostgresService  # noqa: E402
from stockbatch.settings import Settings  # noqa: E402
from stockbatch.warehouse import db, queries  # noqa: E402


def log(msg: str) -> None:
    """Progress on stderr (the figures go to stdout)."""
    print(f"[bench_api] {msg}", file=sys.stderr, flush=True)


# --- set-up: hey, the home, PostgreSQL, the data, a user, the server ----------------


def ensure_hey() -> str:
    """The path of ``hey``; installed with apt-get when missing and running as root."""
    found = shutil.which("hey")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit(
            "hey (HTTP load generator) is missing: install it with `sudo apt-get install -y hey` "
            "(Debian/Ubuntu) and run again"
        )
    log("installing hey with apt-get ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", "hey"], env=env, check=False).returncode:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", "hey"], env=env, check=True)
    found = shutil.which("hey")
    if not found:
        raise SystemExit("apt-get installed hey but it is not on PATH")
    return found


def shared_sample() -> Path:
    """The shared Huge sample: ``$STOCKBATCH_SHARED_DATA`` or ``../shared/data``."""
    root = Path(os.environ.get("STOCKBATCH_SHARED_DATA") or REPO.parent / "shared" / "data")
    path = root / SAMPLE
    if not path.is_dir():
        raise SystemExit(f"no {path}: set STOCKBATCH_SHARED_DATA to the shared data folder")
    return path


class Home:
    """A benchmark STOCKBATCH_HOME on PostgreSQL and the CLI run inside it."""

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        self.env = {
            **os.environ,
            "STOCKBATCH_HOME": str(self.path),
            "STOCKBATCH_WAREHOUSE__KIND": "postgresql",
            "STOCKBATCH_SEARCH__KIND": "none",
            "STOCKBATCH_PROGRESS": "false",
        }
        self.started_pg = False

    def cli(self, *args: str, stdin: str | None = None, check: bool = True) -> Any:
        return subprocess.run(
            [sys.executable, "-m", "stockbatch.cli", *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            check=check,
        )

    def settings(self) -> Settings:
        return Settings(home=self.path, warehouse={"kind": "postgresql"})

    def pg_up(self) -> None:
        status = self.cli("services", "status", check=False)
        if re.search(r"^postgresql: running", status.stdout + status.stderr, re.M):
            log(f"PostgreSQL already running for {self.path}")
            return
        log(f"starting PostgreSQL for {self.path} ...")
        first = not (self.path / "services" / "postgresql").exists()
        port = ["--port", str(free_port())] if first else []  # later starts reuse it
        self.cli("services", "up", "postgresql", *port)
        self.started_pg = True

    def ensure_connections(self, needed: int) -> dict[str, int]:
        """Raise ``max_connections`` (ALTER SYSTEM, then a restart) to at least ``needed``.

        The service's generated configuration allows 40 connections (3 kept for the
        superuser); the peer alone opens one per client, and the API's two pools (reader
        and auth store, 20 + 40 overflow each) open more than 37 under 50 clients, which
        PostgreSQL refuses ("remaining connection slots are reserved").
        """
        su = db.engine_for(
            PostgresService(self.path).url("superuser"), isolation_level="AUTOCOMMIT"
        )
        with su.connect() as conn:
            before = int(conn.exec_driver_sql("SHOW max_connections").scalar_one())
            if before < needed:
                conn.exec_driver_sql(f"ALTER SYSTEM SET max_connections = {int(needed)}")
        su.dispose()
        if before >= needed:
            return {"max_connections_before": before, "max_connections": before}
        log(f"raising PostgreSQL max_connections {before} -> {needed} (restart) ...")
        self.cli("services", "down", "postgresql")
        self.cli("services", "up", "postgresql")
        return {"max_connections_before": before, "max_connections": needed}

    def pg_down(self) -> None:
        if self.started_pg:
            log("stopping PostgreSQL (data kept for the next run)")
            self.cli("services", "down", "postgresql", check=False)

    def loaded(self) -> dict[str, Any] | None:
        marker = self.path / MARKER
        if not marker.exists():
            return None
        info: dict[str, Any] = json.loads(marker.read_text())
        try:
            engine = db.engine_for(db.resolve_urls(self.settings()).reader)
            with engine.connect() as conn:
                n = conn.exec_driver_sql("SELECT count(*) FROM daily_bars").scalar_one()
            engine.dispose()
        except Exception as exc:  # a stale marker: rebuild
            log(f"the marker is there but the warehouse cannot be read ({exc}); rebuilding")
            return None
        return info if n == info.get("daily_bars") else None

    def load(self, source: Path) -> dict[str, Any]:
        """``stockbatch run`` of the sample into PostgreSQL (timed, for the record)."""
        log(f"loading {source} into PostgreSQL (stockbatch run) ...")
        started = time.perf_counter()
        self.cli(
            "run", "--source", "kaggle", "--path", str(source), "--as-of", AS_OF,
            "--warehouse", "postgresql", "--quiet",
        )  # fmt: skip
        seconds = time.perf_counter() - started
        engine = db.engine_for(db.resolve_urls(self.settings()).reader)
        with engine.connect() as conn:
            n = conn.exec_driver_sql("SELECT count(*) FROM daily_bars").scalar_one()
        engine.dispose()
        info = {"source": str(source), "daily_bars": n, "load_s": round(seconds, 1)}
        (self.path / MARKER).write_text(json.dumps(info) + "\n")
        log(f"loaded {n:,} daily bars in {seconds:.1f}s")
        return info


def fresh(home: Home) -> None:
    """Drop the benchmark home (its PostgreSQL first)."""
    if home.path.exists():
        home.cli("services", "down", "--purge", check=False)
        shutil.rmtree(home.path)


def make_token(home: Home) -> tuple[int, str]:
    """An analyst user (token-only) and a one-day token: (id, token)."""
    add = home.cli("users", "add", USER, "--role", "analyst", check=False)
    if add.returncode and "exists already" not in add.stdout + add.stderr:
        raise SystemExit(f"users add failed: {add.stdout}{add.stderr}")
    made = home.cli("tokens", "create", USER, "--expires-days", "1")
    token = made.stdout.strip().splitlines()[-1]
    found = re.search(r"token (\d+) for", made.stderr)
    return (int(found.group(1)) if found else -1), token


def free_port() -> int:
    """A free port in 8200-8299 on 127.0.0.1."""
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit("no free port in 8200-8299")


class Server:
    """``stockbatch serve`` as a subprocess; stopped with SIGTERM."""

    def __init__(self, home: Home, log_file: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_file = log_file
        cmd = [sys.executable, "-m", "stockbatch.cli", "serve", "--host", "127.0.0.1"]
        with log_file.open("wb") as fh:
            self.proc = subprocess.Popen(
                [*cmd, "--port", str(self.port)], env=home.env, stdout=fh, stderr=fh
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"stockbatch serve exited: {self.output()}")
            try:
                if httpx.get(self.base + "/readyz", timeout=2).status_code == 200:
                    log(f"stockbatch serve ready at {self.base} (pid {self.proc.pid})")
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise SystemExit(f"stockbatch serve not ready after 90 s: {self.output()}")

    def output(self) -> str:
        return self.log_file.read_text("utf-8", "replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- the measured things ------------------------------------------------------------


def pick_range(engine: sa.Engine, symbol: str | None) -> tuple[str, dt.date, dt.date, int]:
    """The symbol (``--symbol``, else the default PG, else the longest history) and its
    last ten years: (symbol, start, end, rows)."""
    with engine.connect() as conn:
        spans = {
            s: (lo, hi)
            for s, lo, hi in conn.exec_driver_sql(
                "SELECT symbol, min(trade_date), max(trade_date) FROM daily_bars GROUP BY symbol"
            )
        }
        sym = symbol.upper() if symbol else ("PG" if "PG" in spans else None)
        if sym is None:
            sym = max(spans, key=lambda s: spans[s][1] - spans[s][0])
        if sym not in spans:
            raise SystemExit(f"--symbol {sym}: not in the warehouse")
        lo, hi = spans[sym]
        start = dt.date(hi.year - 10, hi.month, hi.day) + dt.timedelta(days=1)
        if lo > start:
            raise SystemExit(f"{sym} has data from {lo} only: pick a symbol with >= 10 years")
        rows = conn.exec_driver_sql(
            "SELECT count(*) FROM daily_bars WHERE symbol = %(s)s AND trade_date BETWEEN "
            "%(a)s AND %(b)s",
            {"s": sym, "a": start, "b": hi},
        ).scalar_one()
    return sym, start, hi, int(rows)


def summarise(latencies_s: list[float], wall_s: float, loads: list[float]) -> dict[str, Any]:
    """p50/p95/p99 (ms, numpy's percentiles: the same computation for every tool) and
    requests/s (requests over the summed wall time of the rounds)."""
    ms = np.array(latencies_s) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "rps": round(len(ms) / wall_s, 1),
        "requests": len(ms),
        "loadavg_rounds": [round(x, 1) for x in loads],
    }


def run_hey(hey: str, url: str, token: str, n: int, c: int) -> tuple[list[float], float]:
    """``hey -n N -c C -o csv`` with the bearer token: every request's latency (s, to the
    last byte of the body) and the wall time (s); every answer must be a 200."""
    cmd = [hey, "-n", str(n), "-c", str(c), "-t", "120", "-o", "csv"]
    cmd += ["-H", f"Authorization: Bearer {token}", url]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    lines = done.stdout.strip().splitlines()
    head = lines[0].split(",")
    i_lat, i_code, i_off = (
        head.index("response-time"),
        head.index("status-code"),
        head.index("offset"),
    )
    lat, ends, codes = [], [], {}
    for line in lines[1:]:
        f = line.split(",")
        lat.append(float(f[i_lat]))
        ends.append(float(f[i_off]) + float(f[i_lat]))
        codes[f[i_code]] = codes.get(f[i_code], 0) + 1
    if len(lat) != n or codes != {"200": n}:
        raise SystemExit(f"hey: {len(lat)} answers of {n}, status codes {codes}\n{done.stderr}")
    return lat, max(ends)


def captured_sql(engine: sa.Engine, sym: str, start: dt.date, end: dt.date, limit: int) -> Any:
    """The exact SQL and parameters ``queries.daily_page`` runs for this request."""
    seen: list[tuple[str, Any]] = []

    def hook(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        seen.append((statement, params))

    sa.event.listen(engine, "before_cursor_execute", hook)
    try:
        table = queries.daily_page(engine, [sym], start=start, end=end, limit=limit)
    finally:
        sa.event.remove(engine, "before_cursor_execute", hook)
    daily = [s for s in seen if "daily_features" in s[0]]
    if len(daily) != 1:
        raise SystemExit(f"expected one daily query, saw {len(seen)} statements")
    return daily[0][0], daily[0][1], table


def direct_peer(
    conninfo: str, sql: str, params: Any, n: int, c: int, expect_rows: int
) -> tuple[list[float], float]:
    """``n`` executions of ``sql`` + ``fetchall()`` by ``c`` threads, each with its own
    psycopg connection (opened before the clock starts, autocommit: one round trip per
    query): every request's latency (s) and the wall time (s)."""
    conns = [psycopg.connect(conninfo, autocommit=True) for _ in range(c)]
    lock = threading.Lock()
    left = [n]
    lat: list[float] = []

    def worker(conn: psycopg.Connection[Any]) -> None:
        mine = []
        while True:
            with lock:
                if left[0] == 0:
                    break
                left[0] -= 1
            t = time.perf_counter()
            with conn.cursor() as cur:
                cur.execute(sql, params)
                rows = cur.fetchall()
            mine.append(time.perf_counter() - t)
            if len(rows) != expect_rows:
                raise RuntimeError(f"direct query returned {len(rows)} rows, not {expect_rows}")
        with lock:
            lat.extend(mine)

    try:
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(c) as pool:
            for f in [pool.submit(worker, conn) for conn in conns]:
                f.result()
        wall = time.perf_counter() - started
    finally:
        for conn in conns:
            conn.close()
    return lat, wall


def check_direct(conninfo: str, sql: str, params: Any, table: pa.Table) -> None:
    """The direct query reads the very rows and values the API serves."""
    with psycopg.connect(conninfo, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    if not queries._to_arrow(rows, schema.DAILY_FEATURES).equals(table):
        raise SystemExit("the direct query's rows differ from the API's")


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(a - b) <= 1e-12 * max(abs(a), abs(b), 1)
    return bool(a == b)


def check_answers(server: Server, token: str, daily_url: str, table: pa.Table) -> dict[str, int]:
    """The JSON page and the Parquet file hold the rows the direct query reads."""
    auth = {"Authorization": f"Bearer {token}"}
    js = httpx.get(daily_url, headers=auth, timeout=60)
    js.raise_for_status()
    body = js.json()
    if len(body["items"]) != table.num_rows or body["next_cursor"] is not None:
        raise SystemExit(f"JSON: {len(body['items'])} rows, expected {table.num_rows} in one page")
    for name in table.column_names:
        got_js = [item[name] for item in body["items"]]
        want = [v.isoformat() if isinstance(v, dt.date) else v for v in table[name].to_pylist()]
        if not all(_same_value(a, b) for a, b in zip(got_js, want, strict=True)):
            raise SystemExit(f"the JSON answer's column {name} differs from the direct rows")
    pa_resp = httpx.get(daily_url + "&format=parquet", headers=auth, timeout=60)
    pa_resp.raise_for_status()
    got = pq.read_table(pa.BufferReader(pa_resp.content))
    if not got.replace_schema_metadata(None).equals(table.replace_schema_metadata(None)):
        raise SystemExit("the Parquet answer differs from the rows queries.daily_page reads")
    return {"json_bytes": len(js.content), "parquet_bytes": len(pa_resp.content)}


def quarterly_download(server: Server, token: str, path: Path) -> float:
    """Seconds to download the full quarterly table as Parquet to ``path``."""
    started = time.perf_counter()
    with (
        httpx.stream(
            "GET",
            server.base + "/api/v1/quarterly?format=parquet",
            headers={"Authorization": f"Bearer {token}"},
            timeout=600,
        ) as resp,
        path.open("wb") as fh,
    ):
        resp.raise_for_status()
        for chunk in resp.iter_bytes():
            fh.write(chunk)
    return time.perf_counter() - started


def quarterly_export(home: Home, path: Path) -> float:
    """Seconds of ``stockbatch export quarterly --out path`` (a subprocess)."""
    started = time.perf_counter()
    home.cli("export", "quarterly", "--out", str(path))
    return time.perf_counter() - started


def quarterly_export_in_process(home: Home, path: Path) -> float:
    """Seconds of ``export.export_quarterly`` called in this process (no interpreter start,
    imports done): what the command does once it is running, for context."""
    from stockbatch import export

    started = time.perf_counter()
    export.export_quarterly(home.settings(), path, ".parquet")
    return time.perf_counter() - started


def same_table(a: Path, b: Path) -> bool:
    """Same rows and values (the lineage metadata may differ by its time stamps)."""
    ta, tb = pq.read_table(a), pq.read_table(b)
    return bool(ta.replace_schema_metadata(None).equals(tb.replace_schema_metadata(None)))


# --- report -------------------------------------------------------------------------


def verdict(ratio: float, target: float) -> str:
    return "target met" if ratio <= target else "MISSED"


def report(res: dict[str, Any]) -> None:
    """One line per figure, then the table with the ratios."""
    d = res["daily"]
    print()
    print(
        f"daily {d['symbol']} {d['start']}..{d['end']}: {d['rows']:,} rows, "
        f"{res['requests']:,} requests, {res['concurrency']} concurrent clients"
    )
    for name in ("json", "parquet", "direct"):
        f = res[name]
        print(
            f"  {name:<8} p50 {f['p50_ms']:8.1f} ms  p95 {f['p95_ms']:8.1f} ms  "
            f"p99 {f['p99_ms']:8.1f} ms  {f['rps']:8.1f} req/s  "
            f"(load {'/'.join(str(x) for x in f['loadavg_rounds'])} per round)"
        )
    q = res["quarterly"]
    print(
        f"quarterly table ({q['rows']:,} rows): download {q['download_s']:.2f} s vs "
        f"export {q['export_s']:.2f} s (best of 3 each; tries {q['download_tries']} / "
        f"{q['export_tries']})"
    )
    print(
        f"  (for context: the same export in-process, without the command's interpreter start "
        f"and imports: {q['export_in_process_s']:.2f} s; download / that = "
        f"{res['ratios']['quarterly_in_process']:.2f}x)"
    )
    print()
    print(f"{'figure':<36}{'value':>10}{'target':>10}  verdict")
    for key, label in (
        ("parquet", "Parquet p95 / direct p95"),
        ("json", "JSON p95 / direct p95"),
        ("quarterly", "quarterly download / export"),
    ):
        r = res["ratios"][key]
        print(f"{label:<36}{r:>9.2f}x{TARGETS[key]:>9.1f}x  {verdict(r, TARGETS[key])}")
    env = res["env"]
    print(
        f"\n({env['cpus']} cores shared with other work: 1-minute load {env['loadavg_start']:.1f} "
        f"at start, {env['loadavg_end']:.1f} at end; hey, the server, PostgreSQL and the "
        "direct clients all run on them)"
    )


def main() -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the module docstring and benchmarks/README.md.",
    )
    parser.add_argument("--symbol", default=None, help="symbol with >= 10 years (default PG)")
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per tool")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent clients")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds (requests split among them; order turns)"
    )
    parser.add_argument(
        "--warmup", type=int, default=200, help="warm-up requests per tool (at least --concurrency)"
    )
    parser.add_argument(
        "--home", type=Path, default=OUT / "api-home", help="benchmark STOCKBATCH_HOME (reused)"
    )
    parser.add_argument("--fresh", action="store_true", help="rebuild the benchmark home")
    args = parser.parse_args()
    if args.requests < args.concurrency * args.rounds:
        parser.error("--requests must be at least --concurrency x --rounds")
    hey = ensure_hey()
    home = Home(args.home)
    if args.fresh:
        fresh(home)
    home.path.mkdir(parents=True, exist_ok=True)
    load1 = os.getloadavg()[0]
    if load1 > 1.0:
        log(f"the machine is busy (1-minute load {load1:.1f}): figures will be noisy")
    res: dict[str, Any] = {"requests": args.requests, "concurrency": args.concurrency}
    server = None
    token_id = -1
    tmp = Path(tempfile.mkdtemp(prefix="bench-api-"))
    try:
        home.pg_up()
        res["load"] = home.loaded() or home.load(shared_sample())
        res["pg"] = home.ensure_connections(MAX_CONNECTIONS)
        urls = db.resolve_urls(home.settings())
        engine = db.engine_for(urls.reader)
        sym, start, end, rows = pick_range(engine, args.symbol)
        limit = rows + 1  # a full page gets a next_cursor; one more makes it the last page
        sql, params, table = captured_sql(engine, sym, start, end, limit)
        engine.dispose()
        res["daily"] = {"symbol": sym, "start": str(start), "end": str(end), "rows": rows}
        log(f"{sym} {start}..{end}: {rows:,} rows")
        token_id, token = make_token(home)
        server = Server(home, tmp / "serve.log")
        url = f"{server.base}/api/v1/daily?symbols={sym}&start={start}&end={end}&limit={limit}"
        res["sizes"] = check_answers(server, token, url, table)
        conninfo = sa.make_url(urls.reader).set(drivername="postgresql")
        conninfo_s = conninfo.render_as_string(hide_password=False)
        check_direct(conninfo_s, sql, params, table)
        n, c, rounds = args.requests, args.concurrency, args.rounds
        warm = max(args.warmup, c) // c * c
        # hey runs n // c requests on each of its c clients: a multiple of c, or it does fewer.
        per_round = max(n // rounds // c, 1) * c
        res["requests"] = per_round * rounds

        def hey_tool(target: str) -> Any:
            return lambda k: run_hey(hey, target, token, k, c)

        tools = {
            "json": hey_tool(url),
            "parquet": hey_tool(url + "&format=parquet"),
            "direct": lambda k: direct_peer(conninfo_s, sql, params, k, c, rows),
        }
        for name, tool in tools.items():
            log(f"{name}: warm-up, {warm} requests, {c} clients")
            tool(warm)
        lat: dict[str, list[float]] = {name: [] for name in tools}
        wall = dict.fromkeys(tools, 0.0)
        loads: dict[str, list[float]] = {name: [] for name in tools}
        names = list(tools)
        for r in range(rounds):  # the order turns each round: none always runs first
            order = names[r % 3 :] + names[: r % 3]
            for name in order:
                k = per_round
                log(f"round {r + 1}/{rounds}: {name}, {k} requests, {c} clients ...")
                loads[name].append(os.getloadavg()[0])
                got, seconds = tools[name](k)
                lat[name] += got
                wall[name] += seconds
        for name in tools:
            res[name] = summarise(lat[name], wall[name], loads[name])
        log("quarterly: download vs export, best of 3 each ...")
        down, exp, inproc = [], [], []
        for i in range(3):  # turn which goes first
            order = ["download", "export", "in-process"]
            for what in order[i:] + order[:i]:
                if what == "download":
                    down.append(quarterly_download(server, token, tmp / "download.parquet"))
                elif what == "export":
                    exp.append(quarterly_export(home, tmp / "export.parquet"))
                else:
                    inproc.append(quarterly_export_in_process(home, tmp / "inproc.parquet"))
        for other in ("export.parquet", "inproc.parquet"):
            if not same_table(tmp / "download.parquet", tmp / other):
                raise SystemExit(f"the quarterly download differs from {other}")
        res["quarterly"] = {
            "rows": pq.read_metadata(tmp / "export.parquet").num_rows,
            "download_s": round(min(down), 3),
            "export_s": round(min(exp), 3),
            "export_in_process_s": round(min(inproc), 3),
            "download_tries": " ".join(f"{x:.2f}" for x in down),
            "export_tries": " ".join(f"{x:.2f}" for x in exp),
            "export_in_process_tries": " ".join(f"{x:.2f}" for x in inproc),
        }
        res["ratios"] = {
            "parquet": round(res["parquet"]["p95_ms"] / res["direct"]["p95_ms"], 3),
            "json": round(res["json"]["p95_ms"] / res["direct"]["p95_ms"], 3),
            "quarterly": round(min(down) / min(exp), 3),
            "quarterly_in_process": round(min(down) / min(inproc), 3),
        }
    finally:
        if server is not None:
            server.stop()
        if token_id >= 0:
            home.cli("tokens", "revoke", str(token_id), check=False)
        home.pg_down()
        shutil.rmtree(tmp, ignore_errors=True)
    res["env"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_start": load1,
        "loadavg_end": os.getloadavg()[0],
        "hey": hey,
        "git_commit": subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip(),
        "src_dirty": bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--", "src"],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
        ),
    }
    report(res)
    OUT.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    for name in (f"bench_api-{stamp}.json", "bench_api-latest.json"):
        (OUT / name).write_text(json.dumps(res, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
