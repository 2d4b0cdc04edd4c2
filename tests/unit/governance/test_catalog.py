"""The data catalog on a real demo home: the demo sample through ``stockbatch run``, a
quarterly snapshot, then a second run on unchanged inputs (which writes no data, so it
must not become the datasets' "last run"). Counts are checked against the files and the
SQLite warehouse, read independently here."""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from stockbatch.cli import app as cli_app
from stockbatch.governance import catalog
from stockbatch.settings import Settings

AS_OF = "2023-06-30"
QUARTER = "2022Q4"

_runner = CliRunner()


def sb(home: Path, *args: str, code: int = 0, **env: str) -> str:
    """``stockbatch ARGS`` in-process on ``home``; fails unless it exits ``code``."""
    result = _runner.invoke(cli_app, list(args), env={"STOCKBATCH_HOME": str(home), **env})
    assert result.exit_code == code, (
        f"stockbatch {' '.join(args)} exited {result.exit_code}:\n{result.output}"
        + (f"\n{result.exception!r}" if result.exception else "")
    )
    return result.stdout


@dataclass
class Home:
    path: Path
    first: str
    """The run that wrote the data."""
    second: str
    """A rerun on the same inputs: it wrote nothing but its own run record."""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Home:
    path = tmp_path_factory.mktemp("catalog-demo")
    run = ("run", "--source", "kaggle", "--path", str(demo_data), "--as-of", AS_OF, "-q")
    sb(path, *run)
    sb(path, "export", "snapshot", "--quarter", QUARTER, "--run-id", "snap-1")
    sb(path, *run)
    ids = sorted(p.stem for p in (path / "lake" / "runs").glob("*.json"))
    assert len(ids) == 2, ids
    return Home(path, ids[0], ids[1])


@pytest.fixture(scope="module")
def cat(home: Home) -> catalog.Catalog:
    return catalog.build_catalog(Settings(home=home.path))


LAKE = {
    "bronze.bars": "bronze/bars",
    "silver.bars": "silver/bars",
    "silver.quarantine": "silver/quarantine",
    "silver.instruments": "silver/instruments",
    "gold.daily_features": "gold/daily_features",
    "gold.quarterly_features": "gold/quarterly_features",
}
TABLES = ("instruments", "daily_bars", "daily_features", "quarterly_features", "quarantine",
          "pipeline_runs", "data_quality", "audit_log")  # fmt: skip
INDICES = ("instruments", "quarterly-features", "daily-bars")


def test_every_dataset_is_listed(cat: catalog.Catalog) -> None:
    names = [d.name for d in cat.datasets]
    expected = [
        *LAKE,
        *(f"warehouse.{t}" for t in TABLES),
        *(f"search.{i}" for i in INDICES),
        f"snapshot.quarterly.{QUARTER}",
    ]
    assert names == expected
    assert "warehouse.api_users" not in names and "warehouse.api_tokens" not in names
    for d in cat.datasets:
        assert d.kind in catalog.KINDS
        assert d.owner and d.team
        for up in d.upstream:
            assert cat.get(up) is not None, f"{d.name}: upstream {up} is not in the catalog"


def test_every_column_is_described(cat: catalog.Catalog) -> None:
    for d in cat.datasets:
        assert d.columns, d.name
        blank = [c.name for c in d.columns if not c.description.strip()]
        assert not blank, f"{d.name}: columns without a description: {blank}"
        assert all(c.type for c in d.columns), d.name


def test_lake_counts_match_the_files(cat: catalog.Catalog, home: Home) -> None:
    lake = home.path / "lake"
    for name, folder in LAKE.items():
        files = sorted((lake / folder).rglob("*.parquet"))
        assert files, folder
        rows = pl.scan_parquet(files).select(pl.len()).collect().item()
        d = cat.get(name)
        assert d is not None and d.status == catalog.OK, name
        assert (d.rows, d.files) == (rows, len(files)), name
    gold = pl.read_parquet(sorted((lake / "gold/daily_features").rglob("*.parquet")))
    assert cat.get("gold.daily_features").newest_date == str(gold["trade_date"].max())  # type: ignore[union-attr]
    silver = pl.read_parquet(sorted((lake / "silver/bars").rglob("*.parquet")))
    assert cat.get("silver.bars").newest_date == str(silver["trade_date"].max())  # type: ignore[union-attr]


def test_warehouse_counts_match_the_tables(cat: catalog.Catalog, home: Home) -> None:
    with sqlite3.connect(home.path / "warehouse.db") as conn:
        for table in TABLES:
            (rows,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            d = cat.get(f"warehouse.{table}")
            assert d is not None and d.rows == rows, table
            assert d.status == (catalog.OK if rows else catalog.EMPTY)
        (newest,) = conn.execute("SELECT max(trade_date) FROM daily_bars").fetchone()
    assert cat.get("warehouse.daily_bars").newest_date == newest  # type: ignore[union-attr]


def test_last_runs_follow_the_manifests(cat: catalog.Catalog, home: Home) -> None:
    docs = {p.stem: json.loads(p.read_text()) for p in (home.path / "lake" / "runs").glob("*.json")}
    # The rerun found nothing new: it processed and loaded nothing.
    assert docs[home.second]["process"]["skipped"] is True
    assert not docs[home.first]["process"]["skipped"]
    tables = ("daily_bars", "daily_features", "quarterly_features", "instruments", "quarantine")
    for name in (*LAKE, *(f"warehouse.{t}" for t in tables)):
        assert cat.get(name).last_run == home.first, name  # type: ignore[union-attr]
    # Both runs are recorded in the warehouse: the newest wrote pipeline_runs last.
    assert cat.get("warehouse.pipeline_runs").last_run == home.second  # type: ignore[union-attr]
    snap = cat.get(f"snapshot.quarterly.{QUARTER}")
    assert snap is not None and snap.last_run == "snap-1"


def test_checksums_are_the_recorded_ones(cat: catalog.Catalog, home: Home) -> None:
    lake = home.path / "lake"
    state = json.loads((lake / "gold" / "_state.json").read_text())
    quarterly = cat.get("gold.quarterly_features")
    assert quarterly is not None and quarterly.checksum is not None
    key = "gold/quarterly_features/part-00000.parquet"
    assert quarterly.checksum.value == state["gold_checksums"][key]
    assert cat.get("silver.bars").checksum.value == state["fingerprint"]  # type: ignore[union-attr]
    # The warehouse holds the current gold: its checksum is gold's.
    daily = cat.get("gold.daily_features").checksum  # type: ignore[union-attr]
    loaded = cat.get("warehouse.daily_bars").checksum  # type: ignore[union-attr]
    assert daily is not None and loaded is not None and daily.value == loaded.value
    assert "gold has changed" not in loaded.covers
    snap = cat.get(f"snapshot.quarterly.{QUARTER}")
    assert snap is not None and snap.checksum is not None
    manifest = json.loads((home.path / "exports/quarterly" / QUARTER / "snap-1.json").read_text())
    assert snap.checksum.value == manifest["sha256"]
    assert (
        snap.rows
        == pq.read_metadata(home.path / "exports/quarterly" / QUARTER / "snap-1.parquet").num_rows
    )
    for d in cat.datasets:
        if d.checksum is not None:
            assert d.checksum.covers, d.name


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_backends_are_listed_not_fatal(home: Home) -> None:
    port = _closed_port()
    s = Settings(home=home.path)
    s.search = s.search.model_validate(
        {**s.search.model_dump(), "kind": "opensearch", "url": f"http://u:s3cret@127.0.0.1:{port}"}
    )
    s.warehouse = s.warehouse.model_validate(
        {**s.warehouse.model_dump(), "kind": "postgresql",
         "url": f"postgresql+psycopg://u:p@127.0.0.1:{port}/stockbatch"}
    )  # fmt: skip
    cat = catalog.build_catalog(s)
    for d in cat.datasets:
        if d.kind in ("search", "warehouse"):
            assert d.status == catalog.UNREACHABLE, (d.name, d.status, d.note)
            assert d.rows is None and d.note and "s3cret" not in d.note
    assert cat.get("gold.daily_features").status == catalog.OK  # type: ignore[union-attr]


def test_damaged_files_are_reported_not_fatal(home: Home, tmp_path: Path) -> None:
    copy = tmp_path / "home"
    shutil.copytree(home.path, copy)
    part = sorted((copy / "lake/gold/daily_features").rglob("*.parquet"))[0]
    part.write_bytes(b"not parquet")
    manifest = copy / "exports/quarterly" / QUARTER / "snap-1.json"
    manifest.chmod(0o600)
    manifest.write_text("{")
    cat = catalog.build_catalog(Settings(home=copy))
    gold = cat.get("gold.daily_features")
    assert gold is not None and gold.status == catalog.DAMAGED
    assert gold.note and part.name in gold.note
    snap = cat.get("snapshot.quarterly")
    assert snap is not None and snap.status == catalog.DAMAGED
    assert cat.get("warehouse.daily_bars").status == catalog.OK  # type: ignore[union-attr]


def test_an_empty_home(tmp_path: Path) -> None:
    cat = catalog.build_catalog(Settings(home=tmp_path))
    assert {d.status for d in cat.datasets} <= {catalog.MISSING, catalog.NOT_CONFIGURED}
    assert not (tmp_path / "warehouse.db").exists()  # reading never creates the warehouse
    out = sb(tmp_path, "catalog")
    assert "gold.daily_features" in out


def test_cli_json_and_table(home: Home, cat: catalog.Catalog) -> None:
    doc = json.loads(sb(home.path, "catalog", "--json"))
    assert [d["name"] for d in doc["datasets"]] == [d.name for d in cat.datasets]
    by = {d["name"]: d for d in doc["datasets"]}
    assert by["gold.daily_features"]["rows"] == cat.get("gold.daily_features").rows  # type: ignore[union-attr]
    assert by["gold.daily_features"]["columns"][0]["description"]
    one = json.loads(sb(home.path, "catalog", "--json", "--dataset", "silver.quarantine"))
    assert one["name"] == "silver.quarantine" and one["upstream"] == ["bronze.bars"]
    table = sb(home.path, "catalog")
    for name in ("bronze.bars", "warehouse.audit_log", f"snapshot.quarterly.{QUARTER}"):
        assert name in table
    detail = sb(home.path, "catalog", "--dataset", "gold.daily_features")
    assert "[price]" in detail  # units print as text, not as Rich markup
    sb(home.path, "catalog", "--dataset", "nope", code=2)
