"""The PostgreSQL warehouse equals gold after every run: corrections, a shortened file and
a symbol leaving gold delete their rows in the load's one transaction."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from integration.conftest import Postgres
from stockbatch.cli import app
from stockbatch.settings import Settings, WarehouseSettings
from support.mirror import AS_OF, mirror_scenario

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


def test_postgresql_warehouse_mirrors_gold_after_corrections(
    pg: Postgres, tmp_path: Path, demo_data: Path
) -> None:
    pg.ensure_running()
    name = f"m_{uuid.uuid4().hex[:10]}"
    urls = pg.service.create_database(name)
    home, data = tmp_path / "home", tmp_path / "in"
    env = {
        "STOCKBATCH_HOME": str(home),
        "STOCKBATCH_WAREHOUSE__KIND": "postgresql",
        "STOCKBATCH_WAREHOUSE__URL": urls["loader"],
        "STOCKBATCH_WAREHOUSE__OWNER_URL": urls["owner"],
        "STOCKBATCH_WAREHOUSE__READER_URL": urls["reader"],
    }
    settings = Settings(
        home=home,
        warehouse=WarehouseSettings(
            kind="postgresql",
            url=urls["loader"],
            owner_url=urls["owner"],
            reader_url=urls["reader"],
        ),
    )
    runner = CliRunner()

    def run() -> None:
        args = ["run", "--path", str(data), "--as-of", AS_OF, "-q"]
        res = runner.invoke(app, args, env=env, catch_exceptions=False)
        assert res.exit_code == 0, res.output

    try:
        sizes = mirror_scenario(data, demo_data / "huge", run, settings)
        assert sizes[2]["daily"] == sizes[1]["daily"]
        assert sizes[4]["symbols"] == sizes[3]["symbols"] - 1
    finally:
        pg.service.drop_database(name)
