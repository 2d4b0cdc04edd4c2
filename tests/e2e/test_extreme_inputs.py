"""Contract v2 end to end (issue 11, cases 2 and 7): one old date or one absurd value is
quarantined and never stops the run, and no export value is ever infinite or NaN."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from stockbatch import runs
from stockbatch.cli import app
from stockbatch.settings import Settings

AS_OF = "2017-12-31"
HEADER = "Date,Open,High,Low,Close,Volume,OpenInt\n"


def _run(home: Path, data: Path) -> None:
    res = CliRunner().invoke(
        app, ["run", "--path", str(data), "--as-of", AS_OF, "--home", str(home), "-q"]
    )
    assert res.exit_code == 0, res.output


def _scan_finite(table: pa.Table) -> int:
    """Raise on any NaN or infinity in a float column; returns the values checked."""
    checked = 0
    for name in table.column_names:
        col = table.column(name)
        if not pa.types.is_floating(col.type):
            continue
        for v in col.to_pylist():
            if v is not None:
                assert math.isfinite(v), f"{name} = {v}"
                checked += 1
    return checked


def test_old_dates_and_absurd_values_are_quarantined_and_exports_stay_finite(
    tmp_path: Path, demo_data: Path
) -> None:
    data, home = tmp_path / "in", tmp_path / "home"
    data.mkdir()
    shutil.copy(demo_data / "huge" / "acn.us.txt", data / "acn.us.txt")
    (data / "old.us.txt").write_text(
        HEADER
        + "1800-01-02,1,2,1,1.5,100,0\n"  # before 1885: date_out_of_range
        + "1884-12-31,1,2,1,1.5,100,0\n"  # still out of range
        + "1961-12-29,1,2,1,1.5,100,0\n"  # a real session before the old calendar's start
        + "1962-01-02,1.5,2,1,1.8,100,0\n"
    )
    (data / "huge.us.txt").write_text(
        HEADER
        + "2017-11-06,1e308,1e308,1e308,1e308,100,0\n"  # implausible_value
        + "2017-11-07,1e-320,1e-320,1e-320,1e-320,100,0\n"  # implausible_value
        + "2017-11-08,1.0,1.1,0.9,1.0,1e23,0\n"  # implausible_value (volume)
        + "2017-11-09,1e9,1e9,1e9,1e9,1e13,0\n"  # the bounds themselves: allowed
        + "2017-11-10,1e-6,1e-6,1e-6,1e-6,1e13,0\n"  # a x1e15 fall: finite features
        + "2017-11-13,1e9,1e9,1e9,1e9,0,0\n"
    )
    _run(home, data)
    doc = runs.last_manifests(Settings(home=home))[0]
    reasons = doc["counts"]["reasons"]
    assert reasons["date_out_of_range"] == 2
    assert reasons["implausible_value"] == 3
    c = doc["counts"]
    assert c["rows_in"] == c["rows_clean"] + c["rows_quarantined"] + c["rows_deduplicated"]

    daily, quarterly = tmp_path / "daily.parquet", tmp_path / "q.parquet"
    runner = CliRunner()
    for args in (
        ["export", "daily", "--out", str(daily), "--home", str(home)],
        ["export", "quarterly", "--out", str(quarterly), "--home", str(home)],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
    d, q = pq.read_table(daily), pq.read_table(quarterly)
    assert _scan_finite(d) > 1000 and _scan_finite(q) > 100
    old = d.filter(pa.compute.equal(d["symbol"], "OLD"))
    assert [str(x) for x in old["trade_date"].to_pylist()] == ["1961-12-29", "1962-01-02"]
    extreme = d.filter(pa.compute.equal(d["symbol"], "HUGE"))
    assert extreme.num_rows == 3
