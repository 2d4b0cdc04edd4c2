"""Loads into PostgreSQL: COPY stats, incremental reruns, one transaction per run, faults."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlalchemy as sa

from stockbatch.warehouse import db, loader, queries

from .conftest import Gold, Postgres

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

DAILY_KEY = ("symbol", "trade_date")


def _load_run(engine: sa.Engine, gold: Gold) -> dict[str, loader.LoadStats]:
    with loader.run_transaction(engine) as tx:
        return {
            "instruments": tx.load_table("instruments", [gold.instruments], key=("symbol",)),
            "daily_bars": tx.load_table("daily_bars", [gold.bars], key=DAILY_KEY),
            "daily_features": tx.load_table("daily_features", [gold.features], key=DAILY_KEY),
            "quarterly_features": tx.load_table(
                "quarterly_features", [gold.quarterly], key=("symbol", "quarter")
            ),
            "quarantine": tx.replace_quarantine([gold.quarantine]),
        }


def _snapshot(engine: sa.Engine) -> dict[str, pa.Table]:
    return {
        "daily": pa.concat_tables(queries.daily_table(engine)),
        "quarterly": queries.quarterly_table(engine),
        "instruments": queries.instruments(engine),
    }


def _with_close(table: pa.Table, row: int, close: float) -> pa.Table:
    closes = table["close"].to_pylist()
    closes[row] = close
    return table.set_column(table.schema.get_field_index("close"), "close", pa.array(closes))


def test_copy_load_then_unchanged_rerun_then_one_change(
    warehouse: db.WarehouseUrls, gold: Gold
) -> None:
    engine = db.engine_for(warehouse.loader)
    try:
        first = _load_run(engine, gold)
        assert first["daily_bars"] == loader.LoadStats(gold.daily.num_rows, 0, 0)
        assert first["daily_features"].inserted == gold.daily.num_rows
        assert first["quarterly_features"].inserted == gold.quarterly.num_rows
        assert first["quarantine"].inserted == gold.quarantine.num_rows
        counts = queries.table_counts(engine)
        assert counts["daily_bars"] == counts["daily_features"] == gold.daily.num_rows

        again = _load_run(engine, gold)
        assert all(s.changed == 0 for s in again.values()), again  # nothing written at all
        assert again["daily_bars"].unchanged == gold.daily.num_rows

        bars = gold.bars
        changed = _with_close(bars, 100, bars["close"][100].as_py() * 1.01)
        stats = loader.load_table(engine, "daily_bars", [changed], key=DAILY_KEY)
        assert (stats.inserted, stats.updated, stats.unchanged) == (0, 1, bars.num_rows - 1)
        with engine.connect() as conn:
            stored = conn.execute(
                sa.text("SELECT close FROM daily_bars WHERE symbol = :s AND trade_date = :d"),
                {"s": bars["symbol"][100].as_py(), "d": bars["trade_date"][100].as_py()},
            ).scalar_one()
        assert stored == changed["close"][100].as_py()
    finally:
        engine.dispose()


def test_incremental_load_writes_only_new_and_changed_rows(
    warehouse: db.WarehouseUrls, gold: Gold
) -> None:
    engine = db.engine_for(warehouse.loader)
    try:
        # The history up to a cut-off first, then the full gold with 3 revised old values.
        cut = pc.max(gold.daily["trade_date"]).as_py().replace(day=1)
        old = gold.bars.filter(pc.less(gold.bars["trade_date"], pa.scalar(cut, pa.date32())))
        loader.load_table(engine, "daily_bars", [old], key=DAILY_KEY)
        revised = gold.bars
        for row in (0, 10, 20):
            revised = _with_close(revised, row, revised["close"][row].as_py() + 0.01)
        stats = loader.load_table(engine, "daily_bars", [revised], key=DAILY_KEY)
        new_rows = gold.bars.num_rows - old.num_rows
        assert new_rows > 0
        assert (stats.inserted, stats.updated) == (new_rows, 3)
        assert stats.unchanged == old.num_rows - 3
        # n_tup_upd counts the rows PostgreSQL itself rewrote: exactly the 3 changes.
        # A backend reports its statistics when it goes idle or exits (not at once), so
        # close the loading connections and read until the report has arrived.
        engine.dispose()
        updated = -1
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                updated = conn.exec_driver_sql(
                    "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'daily_bars'"
                ).scalar_one()
            if updated == 3:
                break
            time.sleep(0.5)
        assert updated == 3
    finally:
        engine.dispose()


def _killing_batches(
    table: pa.Table, pg: Postgres, pid_of: list[int], how: str, after: int
) -> Iterator[pa.RecordBatch]:
    """Yield ``table`` in chunks; after ``after`` chunks, kill the loading backend."""
    for i, batch in enumerate(table.to_batches(max_chunksize=5_000)):
        if i == after:
            pid = pid_of[0]
            if how == "terminate":
                with pg.superuser() as conn:
                    assert conn.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (
                        True,
                    )
            else:  # SIGKILL of the backend: the postmaster resets every session and recovers
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)
        yield batch


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("how", ["terminate", "sigkill"])
def test_killed_backend_mid_copy_keeps_the_previous_state(
    pg: Postgres, warehouse: db.WarehouseUrls, gold: Gold, how: str
) -> None:
    engine = db.engine_for(warehouse.loader)
    try:
        half = gold.daily.num_rows // 2
        v1 = Gold(
            daily=gold.daily.slice(0, half),
            quarterly=gold.quarterly,
            quarantine=gold.quarantine,
            instruments=gold.instruments,
        )
        _load_run(engine, v1)
        before = _snapshot(engine)
        bars_v2 = _with_close(gold.bars, 5, gold.bars["close"][5].as_py() * 2)
        pid_of: list[int] = []
        with (
            pytest.raises(db.WarehouseUnavailable, match="unavailable"),
            loader.run_transaction(engine) as tx,
        ):
            pid_of.append(tx.conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
            tx.load_table("instruments", [gold.instruments.slice(0, 3)], key=("symbol",))
            tx.load_table("daily_features", [gold.features], key=DAILY_KEY)  # done
            # Killed while COPY streams the bars into the staging table.
            tx.load_table(
                "daily_bars", _killing_batches(bars_v2, pg, pid_of, how, 3), key=DAILY_KEY
            )
        deadline = time.monotonic() + 60
        while not pg.service.status().running:  # after SIGKILL: crash recovery first
            assert time.monotonic() < deadline, "PostgreSQL did not recover"
            time.sleep(0.2)
        assert pg.service.status().pid is not None
        after = _snapshot(engine)  # the pool reconnects (pre-ping drops the dead connection)
        for name, table in before.items():
            assert after[name].equals(table), f"{name} changed by a killed load"

        # The rerun completes and gives the new state.
        stats = loader.load_table(engine, "daily_bars", [bars_v2], key=DAILY_KEY)
        assert (stats.inserted, stats.updated) == (gold.daily.num_rows - half, 1 if half > 5 else 0)
        daily = pa.concat_tables(queries.daily_table(engine))
        assert daily.num_rows == gold.daily.num_rows
        assert daily.select(["symbol", "trade_date", "close"]).equals(
            bars_v2.sort_by([("symbol", "ascending"), ("trade_date", "ascending")]).select(
                ["symbol", "trade_date", "close"]
            )
        )
    finally:
        engine.dispose()


def test_server_down_gives_one_clear_line_quickly_and_writes_nothing(
    pg: Postgres, warehouse: db.WarehouseUrls, gold: Gold
) -> None:
    engine = db.engine_for(warehouse.loader)
    try:
        loader.load_table(engine, "instruments", [gold.instruments], key=("symbol",))
        pg.service.down()
        for attempt in (
            lambda: db.engine_for(warehouse.loader),
            lambda: db.migrate(warehouse.owner),
            lambda: loader.load_table(engine, "daily_bars", [gold.bars], key=DAILY_KEY),
        ):
            started = time.monotonic()
            with pytest.raises(db.WarehouseUnavailable) as info:
                attempt()
            assert time.monotonic() - started < db.CONNECT_TIMEOUT_S + 5
            message = str(info.value)
            assert "\n" not in message
            assert "stockbatch services up postgresql" in message
            assert sa.make_url(warehouse.loader).password not in message  # no secret leaks
    finally:
        pg.ensure_running()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM daily_bars").scalar_one() == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM instruments").scalar_one() == len(
            gold.instruments
        )
    engine.dispose()


@pytest.mark.parametrize("timeout", [2, None])
def test_a_server_that_never_answers_times_out(timeout: int | None) -> None:
    # A listening socket that accepts TCP but never speaks: only connect_timeout ends the wait.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        url = f"postgresql+psycopg://u:p@127.0.0.1:{port}/x"
        if timeout is not None:
            url += f"?connect_timeout={timeout}"
        started = time.monotonic()
        with pytest.raises(db.WarehouseUnavailable, match="timeout"):
            db.engine_for(url)
        elapsed = time.monotonic() - started
    bound = timeout if timeout is not None else db.CONNECT_TIMEOUT_S
    assert bound - 0.5 <= elapsed <= bound + 5


def test_repeated_keys_are_refused_on_both_paths(warehouse: db.WarehouseUrls, gold: Gold) -> None:
    engine = db.engine_for(warehouse.loader)
    try:
        twice = pa.concat_tables([gold.bars.slice(0, 10), gold.bars.slice(5, 1)])
        # A new symbol: the direct COPY path; then a stored one: the staging path.
        with pytest.raises(loader.DuplicateKeyError):
            loader.load_table(engine, "daily_bars", [twice], key=DAILY_KEY)
        assert queries.table_counts(engine)["daily_bars"] == 0
        loader.load_table(engine, "daily_bars", [gold.bars.slice(0, 10)], key=DAILY_KEY)
        with pytest.raises(loader.DuplicateKeyError):
            loader.load_table(engine, "daily_bars", [twice], key=DAILY_KEY)
        assert queries.table_counts(engine)["daily_bars"] == 10
    finally:
        engine.dispose()
