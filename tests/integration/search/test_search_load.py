"""Loading gold into the search engine (both): templates, counts, unchanged reruns,
atomic alias swaps."""

from __future__ import annotations

import threading
import time
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from integration.search.search_support import Gold
from stockbatch import schema
from stockbatch.search import (
    DATASETS,
    TEMPLATE_VERSION,
    SearchBackend,
    SearchError,
    SearchLoadStats,
    index_status,
    sync_search,
)
from stockbatch.search.indices import DAILY_BARS, INSTRUMENTS, QUARTERLY

pytestmark = [pytest.mark.integration, pytest.mark.search]


def _sync(backend: SearchBackend, gold: Gold, run_id: str, **kwargs: Any) -> SearchLoadStats:
    options: dict[str, Any] = {
        "instruments": gold.instruments,
        "quarterly": gold.quarterly,
        "daily_files": gold.daily_files,
        "checksum": gold.checksums,
    }
    options.update(kwargs)
    return sync_search(backend, run_id=run_id, **options)


@pytest.fixture(scope="module")
def loaded(backend: SearchBackend, demo_gold: Gold) -> SearchLoadStats:
    """The demo gold, loaded once for this module (and engine) under the default prefix."""
    return _sync(backend, demo_gold, "20230630T000000Z-first")


def test_templates_hold_strict_explicit_mappings(
    backend: SearchBackend, loaded: SearchLoadStats
) -> None:
    for ds in DATASETS:
        found = backend.request("GET", f"/_index_template/{ds.alias('stockbatch')}")
        template = found["index_templates"][0]["index_template"]
        assert template["version"] == TEMPLATE_VERSION
        assert template["index_patterns"] == [ds.pattern("stockbatch")]
        # No analysis settings: Elastic's minimal distribution has no analysis-common.
        assert "analysis" not in template["template"].get("settings", {}).get("index", {})
        mapping = backend.mapping(loaded.indices[ds.name].index)
        assert mapping["dynamic"] == "strict"
        assert set(mapping["properties"]) == set(ds.mappings["properties"])
    fields = backend.mapping(loaded.indices["daily-bars"].index)["properties"]
    assert fields["symbol"]["type"] == "keyword" and fields["trade_date"]["type"] == "date"
    inst = backend.mapping(loaded.indices["instruments"].index)
    assert inst["_source"] == {"excludes": ["name_folded"]}
    # The load-time settings were restored.
    index = loaded.indices["daily-bars"].index
    settings = backend.request("GET", f"/{index}/_settings")[index]["settings"]["index"]
    assert settings["refresh_interval"] == "1s" and settings["number_of_replicas"] == "0"
    assert settings["translog"]["durability"] == "request"


def test_strict_mapping_rejects_unknown_fields(
    backend: SearchBackend, loaded: SearchLoadStats
) -> None:
    with pytest.raises(SearchError) as caught:
        backend.request(
            "PUT",
            f"/{INSTRUMENTS.alias('stockbatch')}/_doc/ZZZZ",
            {"symbol": "ZZZZ", "sector": "made up"},
        )
    assert "strict_dynamic_mapping_exception" in str(caught.value)


def test_counts_equal_gold_and_documents_are_verbatim(
    backend: SearchBackend, loaded: SearchLoadStats, demo_gold: Gold
) -> None:
    expected = {
        "instruments": demo_gold.instruments.num_rows,
        "quarterly-features": demo_gold.quarterly.num_rows,
        "daily-bars": demo_gold.daily_rows,
    }
    for name, rows in expected.items():
        stats = loaded.indices[name]
        assert not stats.skipped_unchanged
        assert stats.docs_indexed == stats.docs == rows, name
        assert backend.count(stats.alias) == rows, name

    # One daily row, field by field, against the gold Parquet.
    daily = pl.read_parquet(demo_gold.daily_files[0])
    row = daily.sort("symbol", "trade_date").row(100, named=True)
    doc_id = f"{row['symbol']}|{row['trade_date'].isoformat()}"
    doc = backend.get_source(DAILY_BARS.alias("stockbatch"), doc_id)
    assert doc["trade_date"] == row["trade_date"].isoformat()
    for col in ("open", "high", "low", "close", "adj_close", "volume", "sma_20", "rsi_14"):
        assert doc.get(col) == row[col], col

    q = demo_gold.quarterly.to_pylist()[0]
    qdoc = backend.get_source(QUARTERLY.alias("stockbatch"), f"{q['symbol']}|{q['quarter']}")
    assert qdoc["q_return"] == q["q_return"]
    assert qdoc["quarter_end"] == q["quarter_end"].isoformat()

    # An instrument comes back exactly as loaded: the folded name is indexed, not stored.
    row = demo_gold.instruments.to_pylist()[0]
    assert backend.get_source(INSTRUMENTS.alias("stockbatch"), row["symbol"]) == row


def test_rerun_with_the_same_gold_is_skipped(
    backend: SearchBackend, loaded: SearchLoadStats, demo_gold: Gold
) -> None:
    again = _sync(backend, demo_gold, "20230630T000100Z-second")
    assert not again.changed
    for name, stats in again.indices.items():
        assert stats.skipped_unchanged, name
        assert stats.docs_indexed == 0
        assert stats.index == loaded.indices[name].index
    status = index_status(backend)
    assert status["stockbatch-daily-bars"]["meta"]["run_id"] == "20230630T000000Z-first"
    assert status["stockbatch-daily-bars"]["docs"] == demo_gold.daily_rows


def test_alias_swap_is_atomic_and_old_indices_are_cleaned(
    backend: SearchBackend, loaded: SearchLoadStats, demo_gold: Gold
) -> None:
    alias = QUARTERLY.alias("stockbatch")
    rows = demo_gold.quarterly.num_rows
    first = backend.alias_targets(alias)
    seen: list[tuple[tuple[str, ...], int]] = []
    stop = threading.Event()

    def watch() -> None:
        # What a reader sees during the reloads: always one complete index.
        while not stop.is_set():
            targets = tuple(backend.alias_targets(alias))
            seen.append((targets, backend.count(alias)))
            time.sleep(0.005)

    # Only the quarterly checksum changes: only that dataset is rebuilt.
    changed = dict(demo_gold.checksums)
    key = next(k for k in changed if "quarterly_features" in k)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        second = _sync(backend, demo_gold, "run-b", checksum={**changed, key: "b" * 64})
        third = _sync(backend, demo_gold, "run-c", checksum={**changed, key: "c" * 64})
    finally:
        stop.set()
        watcher.join(10)

    assert second.indices["daily-bars"].skipped_unchanged
    assert second.indices["instruments"].skipped_unchanged
    q2, q3 = second.indices["quarterly-features"], third.indices["quarterly-features"]
    assert q2.previous == first[0] and q3.previous == q2.index
    assert backend.alias_targets(alias) == [q3.index]
    assert len(seen) > 3
    assert all(len(targets) == 1 and count == rows for targets, count in seen), seen[:5]
    assert {t[0] for t, _ in seen} <= {first[0], q2.index, q3.index}
    # keep_previous: the index just replaced stays (one step of rollback), older ones go.
    assert first[0] in q3.deleted
    left = backend.list_indices(QUARTERLY.pattern("stockbatch"))
    assert left == sorted([q2.index, q3.index])

    fourth = _sync(
        backend, demo_gold, "run-d", checksum={**changed, key: "d" * 64}, keep_previous=False
    )
    q4 = fourth.indices["quarterly-features"]
    assert backend.list_indices(QUARTERLY.pattern("stockbatch")) == [q4.index]
    assert index_status(backend)[alias]["others"] == []


def test_rejected_documents_leave_the_alias_on_the_old_index(
    backend: SearchBackend, loaded: SearchLoadStats, demo_gold: Gold
) -> None:
    alias = INSTRUMENTS.alias("stockbatch")
    before = backend.alias_targets(alias)
    rows = demo_gold.instruments.to_pylist()
    # A keyword term over Lucene's 32,766-byte limit: the node rejects that document.
    rows.append({**rows[0], "symbol": "X" * 40_000})
    bad = pa.Table.from_pylist(rows, schema=schema.INSTRUMENTS)
    with pytest.raises(SearchError, match="failed to index"):
        _sync(backend, demo_gold, "run-bad", instruments=bad)
    assert backend.alias_targets(alias) == before
    left = backend.list_indices(INSTRUMENTS.pattern("stockbatch"))
    assert not any("run-bad" in name for name in left)
    assert backend.count(alias) == demo_gold.instruments.num_rows


def test_index_status_reports_each_alias(backend: SearchBackend, loaded: SearchLoadStats) -> None:
    status = index_status(backend)
    assert set(status) == {ds.alias("stockbatch") for ds in DATASETS}
    for entry in status.values():
        assert entry["index"] and entry["docs"] > 0
        assert entry["meta"]["template_version"] == TEMPLATE_VERSION
        assert len(entry["meta"]["fingerprint"]) == 64
        assert entry["meta"]["docs"] == entry["docs"]
    assert index_status(backend, prefix="nothing-here")["nothing-here-instruments"] == {
        "index": None,
        "docs": 0,
        "meta": {},
        "others": [],
    }
