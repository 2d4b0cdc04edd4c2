"""A real PostgreSQL server for the integration tests, started once per test session.

``pg`` (tests/integration/conftest.py, shared with the pipeline tests) is a
:class:`~stockbatch.services.postgresql.PostgresService` (Debian's PostgreSQL
binaries, a throwaway cluster under a fresh temporary home), stopped at the end
of the session whatever happened. A machine without the binaries fails the
fixture with what to install: these tests never skip.

``warehouse`` gives each test its own freshly migrated database (same roles and
privileges as the main one), dropped afterwards. ``gold`` is the demo sample
run through the real ingest and process stages: gold-shaped Arrow tables.

Tests that stop, kill or restart ``pg.service`` must leave it running
(``pg.ensure_running()``) for the tests after them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from integration.conftest import Postgres
from stockbatch import lake, schema
from stockbatch.warehouse import db

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

AS_OF = "2023-06-30"


@pytest.fixture
def warehouse(pg: Postgres) -> Iterator[db.WarehouseUrls]:
    """A migrated database of its own for one test: the URLs of its three roles."""
    pg.ensure_running()
    name = f"t_{uuid.uuid4().hex[:10]}"
    urls = pg.service.create_database(name)
    db.migrate(urls["owner"])
    yield db.WarehouseUrls(owner=urls["owner"], loader=urls["loader"], reader=urls["reader"])
    pg.ensure_running()
    pg.service.drop_database(name)


@dataclass(frozen=True)
class Gold:
    """The demo sample's gold layer as the pipeline's load stage reads it."""

    daily: pa.Table
    quarterly: pa.Table
    quarantine: pa.Table
    instruments: pa.Table

    @property
    def bars(self) -> pa.Table:
        """The ``daily_bars`` columns."""
        return self.daily.select(list(schema.DAILY_BAR_COLUMNS))

    @property
    def features(self) -> pa.Table:
        """The ``daily_features`` columns."""
        return self.daily.select(["symbol", "trade_date", *schema.DAILY_FEATURE_COLUMNS])


@pytest.fixture(scope="session")
def gold(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Gold:
    """Run the real ingest + process stages on the demo sample; read back the gold layer."""
    home = tmp_path_factory.mktemp("pg-gold")
    env = {**os.environ, "STOCKBATCH_HOME": str(home)}
    cli = [sys.executable, "-m", "stockbatch.cli"]
    for args in (
        ["ingest", "--source", "kaggle", "--path", str(demo_data), "--as-of", AS_OF, "--quiet"],
        ["process", "--as-of", AS_OF, "--quiet"],
    ):
        done = subprocess.run([*cli, *args], env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"stockbatch {args[0]} failed:\n{done.stdout}{done.stderr}"
    root = home / "lake"
    daily = pa.concat_tables(
        lake.read_canonical(p, schema.DAILY_FEATURES)
        for p in lake.parquet_files(root / "gold" / "daily_features")
    )
    quarterly = lake.read_canonical(
        root / "gold" / "quarterly_features" / "part-00000.parquet", schema.QUARTERLY_FEATURES
    )
    quarantine = pa.concat_tables(
        lake.read_canonical(p, schema.QUARANTINE)
        for p in lake.parquet_files(root / "silver" / "quarantine")
    )
    symbols = pl.from_arrow(daily.select(["symbol", "source"])).unique("symbol").sort("symbol")
    assert isinstance(symbols, pl.DataFrame)
    instruments = pa.table(
        {
            "symbol": symbols["symbol"].to_arrow().cast(pa.string()),
            "name": [f"{s} Inc." for s in symbols["symbol"]],
            "source": symbols["source"].to_arrow().cast(pa.string()),
        }
    )
    assert daily.num_rows > 10_000 and quarterly.num_rows > 100 and quarantine.num_rows > 0
    return Gold(daily=daily, quarterly=quarterly, quarantine=quarantine, instruments=instruments)
