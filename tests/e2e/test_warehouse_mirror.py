"""The SQLite warehouse equals gold after every run (issue: rows that left gold stayed)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from stockbatch.cli import app
from stockbatch.settings import Settings
from support.mirror import AS_OF, mirror_scenario


def test_sqlite_warehouse_mirrors_gold_after_corrections(tmp_path: Path, demo_data: Path) -> None:
    home, data = tmp_path / "home", tmp_path / "in"
    runner = CliRunner()

    def run() -> None:
        args = ["run", "--path", str(data), "--as-of", AS_OF, "--home", str(home), "-q"]
        res = runner.invoke(app, args, catch_exceptions=False)
        assert res.exit_code == 0, res.output

    sizes = mirror_scenario(data, demo_data / "huge", run, Settings(home=home))
    assert sizes[1]["daily"] == sizes[0]["daily"] + 1
    assert sizes[2]["daily"] == sizes[1]["daily"]  # the date moved, no extra row
    assert sizes[3]["daily"] < sizes[2]["daily"] and sizes[3]["quarterly"] < sizes[2]["quarterly"]
    assert sizes[4]["symbols"] == sizes[3]["symbols"] - 1
    assert sizes[5]["symbols"] == sizes[4]["symbols"] - 1 == 1
