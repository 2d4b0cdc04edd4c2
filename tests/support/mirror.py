"""The warehouse must equal gold after every run: a scenario of corrections, a shrinking
file and a symbol leaving gold, checked after each step (SQLite and PostgreSQL)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from stockbatch import lake, schema
from stockbatch.lake import gold
from stockbatch.settings import Settings
from stockbatch.warehouse import db, queries

FILES = ("acn.us.txt", "adm.us.txt", "eem.us.txt")
AS_OF = "2017-12-31"


def _sorted(table: pa.Table, keys: tuple[str, ...]) -> pa.Table:
    return table.sort_by([(k, "ascending") for k in keys])


def assert_warehouse_mirrors_gold(settings: Settings) -> dict[str, int]:
    """Warehouse daily (bars + features), quarterly and instruments == gold, row for row."""
    engine = db.engine_for(db.resolve_urls(settings).reader)
    try:
        parts = list(queries.daily_table(engine))
        stored = pa.concat_tables(parts) if parts else schema.DAILY_FEATURES.empty_table()
        files = gold.daily_files(settings)
        lake_daily = pa.concat_tables(
            [lake.read_canonical(p, schema.DAILY_FEATURES) for p in files]
        )
        key = ("symbol", "trade_date")
        assert stored.num_rows == lake_daily.num_rows, (stored.num_rows, lake_daily.num_rows)
        assert _sorted(stored, key).equals(_sorted(lake_daily, key))
        q_stored = queries.quarterly_table(engine)
        q_gold = gold.read_quarterly(settings)
        qkey = ("symbol", "quarter")
        assert q_stored.num_rows == q_gold.num_rows, (q_stored.num_rows, q_gold.num_rows)
        assert _sorted(q_stored, qkey).equals(_sorted(q_gold, qkey))
        inst = set(queries.instruments(engine)["symbol"].to_pylist())
        assert inst == set(gold.instruments_table(settings)["symbol"].to_pylist())
        return {"daily": stored.num_rows, "quarterly": q_stored.num_rows, "symbols": len(inst)}
    finally:
        engine.dispose()


def mirror_scenario(
    data: Path, demo_huge: Path, run: Callable[[], None], settings: Settings
) -> list[dict[str, int]]:
    """Run the pipeline over corrections of the input folder ``data``; after each run the
    warehouse must mirror gold. Returns the sizes seen after each step."""
    data.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy(demo_huge / name, data / name)
    sizes = []

    def step() -> None:
        run()
        sizes.append(assert_warehouse_mirrors_gold(settings))

    step()
    acn = data / "acn.us.txt"
    original = acn.read_text()
    acn.write_text(original + "2017-11-13,143.9,144.5,143.1,144.2,1000000,0\n")
    step()  # one new day
    acn.write_text(original + "2017-11-14,143.9,144.5,143.1,144.2,1000000,0\n")
    step()  # that day's date corrected: 2017-11-13 must leave the warehouse
    adm = data / "adm.us.txt"
    adm.write_text("".join(adm.read_text().splitlines(keepends=True)[:800]))
    step()  # a file cut to 800 lines: its later days and quarters must leave
    eem = data / "eem.us.txt"
    header = eem.read_text().splitlines(keepends=True)[0]
    eem.write_text(header + "2017-11-11,1.0,1.1,0.9,1.0,100,0\n")  # a Saturday: quarantined
    step()  # no clean row left: the symbol leaves gold, and the warehouse
    adm.write_text(header)
    step()  # a file cut to its header: that symbol leaves gold too
    return sizes
