"""`stockbatch run` on each shared Kaggle layout: counts reconcile, contract columns."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from stockbatch import schema
from stockbatch.cli import app

runner = CliRunner()


def data_lines(folder: Path) -> tuple[int, int]:
    """(non-blank data lines, price files) counted independently of stockbatch."""
    total = files = 0
    for p in sorted(folder.rglob("*")):
        if p.suffix not in (".txt", ".csv") or p.name == "symbols_valid_meta.csv":
            continue
        files += 1
        lines = [ln for ln in p.read_bytes().splitlines() if ln.strip()]
        total += max(len(lines) - 1, 0)
    return total, files


def run_layout(home: Path, folder: Path) -> dict:
    env = {"STOCKBATCH_HOME": str(home)}
    res = runner.invoke(
        app,
        ["run", "--source", "kaggle", "--path", str(folder), "--as-of", "2018-03-31", "-q"],
        env=env,
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["runs", "--last", "--json"], env=env)
    return json.loads(res.output)


@pytest.mark.slow
def test_huge_sample_reconciles(tmp_path: Path, huge_sample: Path) -> None:
    run = run_layout(tmp_path, huge_sample)
    lines, files = data_lines(huge_sample)
    assert files == 900
    assert run["rows_in"] == lines
    assert run["rows_in"] == run["rows_clean"] + run["rows_quarantined"] + run["rows_deduplicated"]
    manifest = json.loads((tmp_path / "lake" / "runs" / f"{run['run_id']}.json").read_text())
    assert manifest["ingest"]["units_seen"] == 900
    assert manifest["ingest"]["empty_units"] == 2  # vist.us.txt and sbt.us.txt are empty
    per_file = manifest["counts"]["per_file"]
    for counts in per_file.values():
        assert counts["rows_in"] == (
            counts["rows_clean"] + counts["rows_quarantined"] + counts["rows_deduplicated"]
        )
    q = pl.read_parquet(tmp_path / "lake" / "gold" / "quarterly_features")
    assert q.columns == list(schema.QUARTERLY_FEATURES.names)
    assert q["symbol"].n_unique() >= 890
    assert q.filter(pl.col("q_complete").not_())["quarter"].unique().to_list() == ["2017Q4"]
    # No look-ahead: a row becomes usable only after its quarter closed.
    assert (q["available_at"] > q["quarter_end"]).all()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("folder", "source"),
    [
        ("sp500-5yr-sample", "kaggle-sp500"),
        ("nasdaq-sample", "kaggle-nasdaq"),
    ],
)
def test_other_layouts_reconcile(
    tmp_path: Path, shared_data: Path, folder: str, source: str
) -> None:
    path = shared_data / "kaggle" / folder
    run = run_layout(tmp_path, path)
    lines, _ = data_lines(path)
    assert run["rows_in"] == lines
    assert run["rows_in"] == run["rows_clean"] + run["rows_quarantined"] + run["rows_deduplicated"]
    daily = pl.read_parquet(tmp_path / "lake" / "gold" / "daily_features", hive_partitioning=False)
    assert daily.columns == list(schema.DAILY_FEATURES.names)
    assert daily["source"].unique().to_list() == [source]
