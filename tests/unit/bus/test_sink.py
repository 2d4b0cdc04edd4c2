"""The collector's bronze sink without a broker: files, ledger, catalog, reconcile, rollback.

Records are real rows (the demo copy of adm.us.txt) encoded and decoded by the
codec, handed to the sink as the collector hands them over.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from stockbatch import lake
from stockbatch.bus import codec
from stockbatch.bus.sink import BronzeSink, Taken
from stockbatch.lake import bronze
from stockbatch.schema import INSTRUMENTS
from stockbatch.settings import Settings
from stockbatch.sources.base import BRONZE_SOURCE_SCHEMA
from stockbatch.sources.kaggle import KaggleSource

TOPIC = "unit.bars"
RUN = "20260101T000000000Z-abc123"


@pytest.fixture(scope="module")
def adm(demo_data: Path) -> pa.Table:
    """Real rows: the demo copy of the Kaggle Huge file adm.us.txt (8,726 data lines)."""
    src = KaggleSource(demo_data / "huge")
    unit = next(u for u in src.units() if u.ref == "adm.us.txt")
    return src.read(unit)


def _taken(table: pa.Table, first_offset: int = 0) -> list[Taken]:
    envs = codec.encode_unit(
        table,
        ingest_run_id=RUN,
        source="kaggle-huge",
        source_file="adm.us.txt",
        unit_sha256="f" * 64,
        batch_rows=1000,
    )
    return [
        Taken(first_offset + i, codec.decode(e.key, e.value, e.headers), len(e.value))
        for i, e in enumerate(envs)
    ]


def _rows(settings: Settings) -> int:
    active = bronze.active_units(settings)
    return sum(len(bronze.read_bucket(settings, b, active)) for b in range(settings.lake.buckets))


def test_a_unit_is_active_only_once_all_its_parts_are_written(
    adm: pa.Table, tmp_path: Path
) -> None:
    s = Settings(home=tmp_path, progress=False)
    sink = BronzeSink(s, TOPIC)
    taken = _taken(adm)  # 9 parts at offsets 0..8
    first = sink.write({0: (0, 5, taken[:5])})
    assert (first.rows, first.units_activated, first.duplicates_skipped) == (5000, 0, 0)
    assert bronze.active_units(s).is_empty()
    assert [Path(f).name for f in first.files] == ["part-p000-000000000000-000000000005.parquet"]
    assert all(f.startswith("bronze/bars/batch=kafka-unit.bars/bucket=") for f in first.files)

    second = sink.write({0: (5, 9, taken[5:])})
    assert (second.rows, second.units_activated) == (3726, 1)
    active = bronze.active_units(s)
    assert active.select("ref", "batch", "rows").rows() == [("adm.us.txt", RUN, 8726)]
    assert _rows(s) == adm.num_rows
    ledger = pl.read_parquet(lake.layout(s).kafka_ledger)
    assert ledger["offset"].to_list() == list(range(9))

    again = sink.write({0: (9, 10, taken[:1])})  # a part the ledger holds already
    assert (again.duplicates_skipped, again.rows, again.files) == (1, 0, [])


def test_reconcile_and_rollback_remove_exactly_the_uncommitted_range(
    adm: pa.Table, tmp_path: Path
) -> None:
    s = Settings(home=tmp_path, progress=False)
    sink = BronzeSink(s, TOPIC)
    taken = _taken(adm)
    kept = sink.write({0: (0, 4, taken[:4])})
    left = sink.write({0: (4, 9, taken[4:])})
    assert sink.reconcile(0, 4) == len(left.files)
    root = lake.layout(s).root
    assert all((root / f).exists() for f in kept.files)
    assert not any((root / f).exists() for f in left.files)
    ledger = pl.read_parquet(lake.layout(s).kafka_ledger)
    assert ledger["offset"].to_list() == [0, 1, 2, 3]

    # Written again after the reconcile, then rolled back as after a refused commit.
    redone = sink.write({0: (4, 9, taken[4:])})
    assert redone.rows == 4726
    sink.rollback(redone.files, {0: 4})
    assert not any((root / f).exists() for f in redone.files)
    assert pl.read_parquet(lake.layout(s).kafka_ledger)["offset"].to_list() == [0, 1, 2, 3]


def test_an_empty_unit_instruments_and_a_dead_letter(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, progress=False)
    sink = BronzeSink(s, TOPIC)
    env = codec.encode_bars(
        BRONZE_SOURCE_SCHEMA.empty_table(),
        symbol="sbt.us.txt",
        ingest_run_id=RUN,
        source="kaggle-huge",
        source_file="sbt.us.txt",
        unit_sha256="e" * 64,
        part=0,
        parts=1,
    )
    # Hand-made edge case: two instrument rows.
    meta = pa.table(
        {
            "symbol": ["ADM", "SBT"],
            "name": ["Archer-Daniels-Midland", None],
            "exchange": ["N", "N"],
            "is_etf": [False, False],
            "source": ["kaggle-huge", "kaggle-huge"],
        },
        schema=INSTRUMENTS,
    )
    ins = codec.encode_instruments(meta, ingest_run_id=RUN, source="kaggle-huge")
    taken = [
        Taken(0, codec.decode(env.key, env.value, env.headers), len(env.value)),
        Taken(1, None, 3),  # dead-lettered: in the range, not in bronze or the ledger
        Taken(2, codec.decode(ins.key, ins.value, ins.headers), len(ins.value)),
    ]
    written = sink.write({1: (0, 3, taken)})
    assert (written.rows, written.units_activated, written.files) == (0, 1, [])
    assert written.instruments == 2
    assert bronze.active_units(s)["ref"].to_list() == ["sbt.us.txt"]
    assert pl.read_parquet(lake.layout(s).kafka_ledger)["offset"].to_list() == [0]
    assert pl.read_parquet(lake.layout(s).instruments)["symbol"].to_list() == ["ADM", "SBT"]
