"""The whole embedded pipeline through the CLI: demo data, bad input, reruns, exports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from stockbatch import schema
from stockbatch.cli import app

runner = CliRunner()


def sb(home: Path, *args: str) -> tuple[int, str]:
    """Invoke the CLI in-process with an isolated STOCKBATCH_HOME."""
    env = {"STOCKBATCH_HOME": str(home)}
    res = runner.invoke(app, list(args), env=env, catch_exceptions=False)
    return res.exit_code, res.output


def last_run(home: Path) -> dict:
    code, output = sb(home, "runs", "--last", "--json")
    assert code == 0, output
    return json.loads(output)


# ----------------------------------------------------------------------------- demo


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Path:
    home = tmp_path_factory.mktemp("demo")
    code, output = sb(
        home, "run", "--source", "kaggle", "--path", str(demo_data), "--as-of", "2023-06-30", "-q"
    )
    assert code == 0, output
    return home


def count_data_lines(folder: Path) -> int:
    """Non-blank lines after the header of every price file (independent of the code)."""
    total = 0
    for p in sorted(folder.rglob("*")):
        if p.suffix not in (".txt", ".csv") or p.name == "symbols_valid_meta.csv":
            continue
        lines = [ln for ln in p.read_bytes().splitlines() if ln.strip()]
        total += max(len(lines) - 1, 0)
    return total


def test_demo_counts_reconcile(demo_home: Path, demo_data: Path) -> None:
    run = last_run(demo_home)
    assert run["status"] == "succeeded"
    assert run["rows_in"] == count_data_lines(demo_data)
    assert run["rows_in"] == run["rows_clean"] + run["rows_quarantined"] + run["rows_deduplicated"]
    # Real quirks of the demo files (see data/demo/README.md) are quarantined with reasons.
    assert run["reasons"]["high_below_low"] >= 1
    assert run["reasons"]["weekend_date"] >= 1
    # Contract v2: AON's 1980s history has open = 0 ("not recorded"): kept, counted.
    assert run["reasons"]["non_positive_price"] == 0
    assert run["health"]["open_missing"] >= 1000
    assert sum(run["reasons"].values()) >= run["rows_quarantined"]


def test_demo_rerun_changes_nothing(demo_home: Path, demo_data: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in (demo_home / "lake" / "gold").rglob("*.parquet")}
    code, output = sb(
        demo_home,
        "run",
        "--source",
        "kaggle",
        "--path",
        str(demo_data),
        "--as-of",
        "2023-06-30",
        "-q",
    )
    assert code == 0, output
    assert "nothing changed" in output
    run = last_run(demo_home)
    assert run["process_skipped"] is True
    assert run["rows_changed_in_warehouse"] == 0
    after = {p: p.stat().st_mtime_ns for p in (demo_home / "lake" / "gold").rglob("*.parquet")}
    assert before == after


def test_demo_forced_rerun_same_data(demo_home: Path, demo_data: Path) -> None:
    """A forced full rebuild writes the same gold rows and changes no warehouse row."""
    gold = demo_home / "lake" / "gold" / "quarterly_features" / "part-00000.parquet"
    before = pl.read_parquet(gold)
    code, output = sb(
        demo_home,
        "run",
        "--source",
        "kaggle",
        "--path",
        str(demo_data),
        "--as-of",
        "2023-06-30",
        "--force",
        "-q",
    )
    assert code == 0, output
    assert pl.read_parquet(gold).equals(before)
    assert last_run(demo_home)["rows_changed_in_warehouse"] == 0


def test_symbols_normalised_and_distinct(demo_home: Path) -> None:
    q = pl.read_parquet(demo_home / "lake" / "gold" / "quarterly_features")
    symbols = set(q["symbol"].unique().to_list())
    assert {"BRK-B", "BTU", "BTU_", "AIG-WS", "AAPL", "EPR"} <= symbols


def test_export_quarterly_contract(demo_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.parquet"
    code, output = sb(demo_home, "export", "quarterly", "--out", str(out))
    assert code == 0, output
    table = pq.read_table(out)
    assert table.schema.names == schema.QUARTERLY_FEATURES.names
    assert table.schema.remove_metadata().equals(schema.QUARTERLY_FEATURES)
    meta = table.schema.metadata
    assert meta[b"stockbatch.label_columns"] == b"label_next_q_return"
    assert meta[b"stockbatch.process_run_id"]
    gold = pl.read_parquet(demo_home / "lake" / "gold" / "quarterly_features")
    assert pl.from_arrow(table).equals(gold)  # warehouse round trip is exact

    csv = tmp_path / "q.csv"
    code, output = sb(demo_home, "export", "quarterly", "--out", str(csv))
    assert code == 0, output
    back = pl.read_csv(csv)
    assert back.columns == list(schema.QUARTERLY_FEATURES.names)
    assert len(back) == table.num_rows
    assert (tmp_path / "q.csv.meta.json").exists()


def test_export_daily_contract(demo_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "d.parquet"
    code, output = sb(demo_home, "export", "daily", "--symbols", "AAPL,EPR", "--out", str(out))
    assert code == 0, output
    table = pq.read_table(out)
    assert table.schema.names == schema.DAILY_FEATURES.names
    df = pl.from_arrow(table)
    assert set(df["symbol"].unique()) == {"AAPL", "EPR"}
    gold = (
        pl.read_parquet(demo_home / "lake" / "gold" / "daily_features", hive_partitioning=False)
        .filter(pl.col("symbol").is_in(["AAPL", "EPR"]))
        .sort("symbol", "trade_date")
    )
    assert df.sort("symbol", "trade_date").equals(gold)


def test_export_bad_suffix_is_clear(demo_home: Path, tmp_path: Path) -> None:
    code, output = sb(demo_home, "export", "quarterly", "--out", str(tmp_path / "q.xlsx"))
    assert code == 2
    assert ".parquet or .csv" in output


def test_quarantine_reaches_warehouse(demo_home: Path) -> None:
    import sqlite3

    con = sqlite3.connect(demo_home / "warehouse.db")
    n = con.execute("select count(*) from quarantine").fetchone()[0]
    runs = con.execute("select count(*) from pipeline_runs").fetchone()[0]
    con.close()
    assert n == last_run(demo_home)["rows_quarantined"]
    assert runs >= 1


# ----------------------------------------------------------------------------- bad input

# Hand-made rows (clearly not market data) exercising every bad-input path.
GOOD = (
    "Date,Open,High,Low,Close,Volume,OpenInt\n"
    "2017-01-03,10,11,9,10.5,1000,0\n"
    "2017-01-04,10.5,11.5,10,11,1200,0\n"
    "2017-01-05,11,12,10.5,11.5,0,0\n"
)
BAD = (
    b"Date,Open,High,Low,Close,Volume,OpenInt\n"
    b"2017-01-03,10,11,9,10.5,1000,0\n"  # clean
    b"2017-01-04,10,11,9\n"  # wrong arity
    b"2017-01-05,ten,11,9,10.5,1000,0\n"  # non-numeric
    b"2017-01-06,10,11,9,10.5,1\xff00,0\n"  # non-UTF-8 byte in volume
    b"2017-01-07,10,11,9,10.5,1000,0\n"  # Saturday
    b"2030-01-02,10,11,9,10.5,1000,0\n"  # after --as-of
    b"2017-01-09,10,11,9,10.5,1000,0\n"  # identical twin ...
    b"2017-01-09,10,11,9,10.5,1000,0\n"  # ... collapsed to one row
    b"2017-01-10,10,11,9,10.5,1000,0\n"  # conflicting pair ...
    b"2017-01-10,10,11,9,10.6,1000,0\n"  # ... both quarantined
    b"2017-01-11,10,9,11,10,1000,0\n"  # high < low
    b"2017-01-12,-1,11,9,10,1000,0\n"  # negative open
    b"2017-01-13,10,11,9,10,-5,0\n"  # negative volume
    b"2017-01-17,,11,9,10,1000,0\n"  # missing open
    b"2017-01-18,10,11,9,10,,0\n"  # missing volume
    b"2017-02-30,10,11,9,10,1000,0\n"  # impossible date
)


@pytest.fixture()
def bad_dir(tmp_path: Path) -> Path:
    d = tmp_path / "input"
    d.mkdir()
    (d / "good.us.txt").write_text(GOOD)
    (d / "bad.us.txt").write_bytes(BAD)
    (d / "empty.us.txt").write_bytes(b"")
    (d / "headeronly.us.txt").write_text("Date,Open,High,Low,Close,Volume,OpenInt\n")
    (d / "mystery.csv").write_text("when,price\n2017-01-03,1\n")
    return d


def test_bad_input_is_accounted_for(tmp_path: Path, bad_dir: Path) -> None:
    home = tmp_path / "home"
    code, output = sb(
        home, "run", "--source", "kaggle", "--path", str(bad_dir), "--as-of", "2017-12-31", "-q"
    )
    assert code == 3, output  # completed, but one file was rejected
    assert "mystery.csv" in output
    assert "Traceback" not in output
    run = last_run(home)
    assert run["status"] == "partial"
    assert run["rejected_inputs"] == 1
    assert run["rows_in"] == 3 + 16
    assert run["rows_deduplicated"] == 1
    assert run["rows_clean"] == 3 + 1 + 1  # good file, first bad row, the collapsed twin
    assert run["rows_quarantined"] == 19 - 5 - 1
    r = run["reasons"]
    assert r["unparseable"] == 4  # arity, 'ten', \xff, 2017-02-30
    assert r["weekend_date"] == 1
    assert r["future_date"] == 1
    assert r["duplicate"] == 2
    assert r["high_below_low"] == 1
    assert r["non_positive_price"] == 1
    assert r["negative_volume"] == 1
    assert r["missing_price"] == 1
    assert r["missing_volume"] == 1
    assert run["health"]["zero_volume"] == 1


def test_empty_directory_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "nothing"
    empty.mkdir()
    code, output = sb(tmp_path / "home", "run", "--source", "kaggle", "--path", str(empty), "-q")
    assert code == 1
    assert "no input" in output.lower()
    assert "Traceback" not in output


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    code, output = sb(
        tmp_path / "home", "run", "--source", "kaggle", "--path", str(tmp_path / "nope"), "-q"
    )
    assert code == 1
    assert "does not exist" in output


def test_bad_as_of_is_a_usage_error(tmp_path: Path, bad_dir: Path) -> None:
    code, output = sb(
        tmp_path / "home",
        "run",
        "--source",
        "kaggle",
        "--path",
        str(bad_dir),
        "--as-of",
        "yesterday",
        "-q",
    )
    assert code == 2
    assert "2017-11-30" in output


def test_unconfigured_backend_is_refused_before_any_work(tmp_path: Path, bad_dir: Path) -> None:
    """PostgreSQL chosen but none set up: one line saying what to do, nothing ingested."""
    code, output = sb(
        tmp_path / "home",
        "run",
        "--source",
        "kaggle",
        "--path",
        str(bad_dir),
        "--warehouse",
        "postgresql",
        "-q",
    )
    assert code == 1
    assert "stockbatch services up postgresql" in output
    assert "Traceback" not in output
    assert not (tmp_path / "home" / "lake" / "bronze").exists()


def test_settings_from_environment(tmp_path: Path, demo_data: Path) -> None:
    """Every setting is an environment variable: here the bucket count and the home."""
    home = tmp_path / "envhome"
    env = {**os.environ, "STOCKBATCH_HOME": str(home), "STOCKBATCH_LAKE__BUCKETS": "3"}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "stockbatch.cli",
            "ingest",
            "--source",
            "kaggle",
            "--path",
            str(demo_data / "sp500"),
            "-q",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    buckets = {p.name for p in (home / "lake" / "bronze" / "bars").glob("batch=*/bucket=*")}
    assert buckets and all(int(b.split("=")[1]) < 3 for b in buckets)
    assert "landed" in res.stdout


def test_help_lists_commands() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("run", "ingest", "process", "load", "export", "runs"):
        assert cmd in res.output
