"""The whole pipeline on PostgreSQL + a search engine (OpenSearch, Elasticsearch),
through the CLI, against the real services of tests/integration/conftest.py.

- ``stockbatch run --warehouse postgresql --search <engine>`` loads both; a second
  run changes nothing in either (OpenSearch on the demo data, Elasticsearch on every
  fourth file of the shared Huge sample: 225 real files, about 470,000 rows; the
  whole sample's load is measured by benchmarks/bench_search.py and bench_warehouse.py);
- the quarterly export from PostgreSQL equals the one from SQLite, row for row;
- the search node down (each engine): the PostgreSQL load still completes, the run
  is ``partial`` (exit 3) with the index recorded stale; ``load --search-only``
  catches up;
- PostgreSQL down: a clear one-line error within a bounded time, exit 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

from integration.conftest import Postgres
from integration.search.search_support import SearchNode

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.search]

AS_OF = "2023-06-30"


@dataclass
class Stack:
    """A stockbatch home wired to a fresh database and an index prefix of its own."""

    home: Path
    env: dict[str, str]
    urls: dict[str, str]
    prefix: str
    node: SearchNode | None = None

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stockbatch.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def last_manifest(self) -> dict[str, object]:
        runs = sorted((self.home / "lake" / "runs").glob("*.json"))
        doc: dict[str, object] = json.loads(runs[-1].read_text())
        return doc


@pytest.fixture(params=["opensearch", "elasticsearch"])
def search_node(request: pytest.FixtureRequest) -> SearchNode:
    """The session's node of each search engine in turn."""
    node: SearchNode = request.getfixturevalue(f"{request.param}_node")
    return node


@pytest.fixture
def stack(pg: Postgres, search_node: SearchNode, tmp_path: Path) -> Iterator[Stack]:
    pg.ensure_running()
    search_node.ensure_running()
    name = f"p_{uuid.uuid4().hex[:10]}"
    urls = pg.service.create_database(name)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "STOCKBATCH_HOME": str(tmp_path / "home"),
        "STOCKBATCH_WAREHOUSE__KIND": "postgresql",
        "STOCKBATCH_WAREHOUSE__URL": urls["loader"],
        "STOCKBATCH_WAREHOUSE__OWNER_URL": urls["owner"],
        "STOCKBATCH_WAREHOUSE__READER_URL": urls["reader"],
        **search_node.env(prefix),
        "STOCKBATCH_SEARCH__TIMEOUT_S": "5",
        "STOCKBATCH_PROGRESS": "false",
    }
    yield Stack(home=tmp_path / "home", env=env, urls=urls, prefix=prefix, node=search_node)
    pg.ensure_running()
    search_node.ensure_running()
    pg.service.drop_database(name)


@pytest.fixture(scope="module")
def huge_quarter(huge_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every fourth file of the shared Huge sample (Stocks and ETFs), linked into a folder:
    real files of every size at a quarter of the whole sample's load time."""
    root = tmp_path_factory.mktemp("huge-quarter")
    for folder in ("Stocks", "ETFs"):
        (root / folder).mkdir()
        for p in sorted((huge_sample / folder).iterdir())[::4]:
            (root / folder / p.name).symlink_to(p)
    return root


def _count(url: str, table: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def _docs(node: SearchNode, alias: str) -> int:
    backend = node.backend(10)
    backend.refresh(alias, timeout=60)
    return backend.count(alias)


def test_run_loads_both_and_rerun_changes_nothing(
    stack: Stack, search_node: SearchNode, demo_data: Path, huge_quarter: Path, tmp_path: Path
) -> None:
    # Elasticsearch on a quarter of the shared Huge sample; OpenSearch on the demo data
    # (full-size loads are measured by benchmarks/bench_search.py).
    data, as_of = (huge_quarter, "2017-11-30") if search_node.kind == "elasticsearch" else (
        demo_data, AS_OF)  # fmt: skip
    args = ("run", "--source", "kaggle", "--path", str(data), "--as-of", as_of)
    first = stack.cli(*args, timeout=1_200)
    assert first.returncode == 0, first.stdout + first.stderr
    gold = stack.home / "lake" / "gold"
    daily_rows = pl.scan_parquet(gold / "daily_features" / "**" / "*.parquet").select(pl.len())
    n_daily = int(daily_rows.collect().item())
    n_quarterly = pl.read_parquet(gold / "quarterly_features" / "part-00000.parquet").height
    assert _count(stack.urls["reader"], "daily_features") == n_daily
    assert _count(stack.urls["reader"], "quarterly_features") == n_quarterly
    assert _docs(search_node, f"{stack.prefix}-daily-bars") == n_daily
    assert _docs(search_node, f"{stack.prefix}-quarterly-features") == n_quarterly
    n_instruments = _count(stack.urls["reader"], "instruments")
    assert _docs(search_node, f"{stack.prefix}-instruments") == n_instruments

    second = stack.cli(*args, timeout=1_200)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "nothing changed" in second.stdout
    load = stack.last_manifest()["load"]
    assert isinstance(load, dict)
    assert load["rows_changed"] == 0
    assert all(i["unchanged"] for i in load["search"]["indices"].values())

    # The ML export reads PostgreSQL (reader role) and equals SQLite's.
    pg_out = tmp_path / "pg.parquet"
    done = stack.cli("export", "quarterly", "--out", str(pg_out))
    assert done.returncode == 0, done.stdout + done.stderr
    lite_env = {**stack.env, "STOCKBATCH_HOME": str(tmp_path / "lite")}
    for k in ("STOCKBATCH_WAREHOUSE__KIND", "STOCKBATCH_SEARCH__KIND"):
        lite_env[k] = "sqlite" if "WAREHOUSE" in k else "none"
    for k in ("STOCKBATCH_WAREHOUSE__URL", "STOCKBATCH_WAREHOUSE__OWNER_URL",
              "STOCKBATCH_WAREHOUSE__READER_URL"):  # fmt: skip
        lite_env.pop(k)
    lite = Stack(home=tmp_path / "lite", env=lite_env, urls={}, prefix="")
    assert lite.cli(*args, timeout=1_200).returncode == 0
    lite_out = tmp_path / "lite.parquet"
    assert lite.cli("export", "quarterly", "--out", str(lite_out)).returncode == 0
    assert pl.read_parquet(pg_out).equals(pl.read_parquet(lite_out))


def test_search_node_down_leaves_index_stale_then_search_only_catches_up(
    stack: Stack, search_node: SearchNode, demo_data: Path
) -> None:
    args = ("run", "--source", "kaggle", "--path", str(demo_data), "--as-of", AS_OF)
    search_node.service.down()
    started = time.monotonic()
    run = stack.cli(*args)
    assert run.returncode == 3, run.stdout + run.stderr  # completed, degraded
    assert time.monotonic() - started < 120
    said = run.stdout + run.stderr
    assert "STALE" in said and "--search-only" in said, said
    doc = stack.last_manifest()
    assert doc["status"] == "partial"
    load = doc["load"]
    assert isinstance(load, dict) and load["search"]["stale"] is True
    assert _count(stack.urls["reader"], "daily_features") > 0  # the warehouse was loaded

    search_node.ensure_running()
    again = stack.cli("load", "--search-only")
    assert again.returncode == 0, again.stdout + again.stderr
    n_daily = _count(stack.urls["reader"], "daily_features")
    assert _docs(search_node, f"{stack.prefix}-daily-bars") == n_daily
    state = json.loads((stack.home / "lake" / "gold" / "_search.json").read_text())
    assert state["kind"] == search_node.kind and state["stale"] is False, state


@pytest.mark.parametrize("search_node", ["opensearch"], indirect=True)  # PostgreSQL's test
def test_postgres_down_is_a_clear_bounded_error(
    stack: Stack, pg: Postgres, demo_data: Path
) -> None:
    args = ("run", "--source", "kaggle", "--path", str(demo_data), "--as-of", AS_OF)
    assert stack.cli(*args).returncode == 0
    before = _count(stack.urls["reader"], "daily_features")
    pid = pg.service.status().pid
    assert pid
    os.kill(pid, signal.SIGSTOP)  # accepts nothing, answers nothing: the worst case
    try:
        started = time.monotonic()
        done = stack.cli("load", "--force", timeout=120)
        took = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert done.returncode == 1, done.stdout + done.stderr
    assert took < 60
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "PostgreSQL" in err[0] or "postgres" in err[0].lower()
    assert _count(stack.urls["reader"], "daily_features") == before  # nothing half-written
