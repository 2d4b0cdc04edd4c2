"""Bring the search index to the current gold, or record it stale with the reason."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from stockbatch import lake, search
from stockbatch.errors import PipelineError
from stockbatch.lake import gold
from stockbatch.settings import Settings


def search_state(settings: Settings) -> dict[str, Any]:
    """The last search sync: ``stale``, ``reason``, ``run_id``, ``synced_at``."""
    return lake.read_json(lake.layout(settings).search_state)


def search_sync(settings: Settings, *, run_id: str, full: bool = False) -> dict[str, Any]:
    """Make the search index serve the current gold: a changed dataset is updated in
    place (upserts and deletes of the changed documents; the records of what each live
    index holds are under ``lake/_state/search``), or rebuilt with an alias swap when
    ``full`` or when the records do not describe the live index.

    An unreachable node does not fail the load: the record says ``stale`` with
    the reason (also kept in ``gold/_search.json`` and the run manifest) and a
    later ``stockbatch load --search-only`` (or any load) catches up. Documents
    the node rejects are an error (:class:`stockbatch.search.SearchError`).
    """
    state = gold.process_state(settings)
    if not state:
        raise PipelineError("nothing to index: run `stockbatch process` first.")
    started = time.perf_counter()
    record: dict[str, Any] = {"kind": settings.search.kind, "run_id": run_id}
    try:
        client = search.connect_settings(settings)
        stats = search.sync_search(
            client,
            instruments=gold.instruments_table(settings),
            quarterly=gold.read_quarterly(settings),
            daily_files=gold.daily_files(settings),
            run_id=run_id,
            checksum=state["gold_checksums"],
            state_dir=lake.layout(settings).state / "search",
            full=full,
            **search.load_options(settings.search),
        )
    except search.SearchUnavailable as exc:
        previous = search_state(settings)
        record |= {
            "stale": True,
            "reason": str(exc),
            "stale_since": previous.get("stale_since") or dt.datetime.now(dt.UTC).isoformat(),
        }
    else:
        record |= {
            "stale": False,
            "summary": stats.summary(),
            "indices": {
                name: {
                    "index": s.index,
                    "docs": s.docs_indexed,
                    "deleted_docs": s.docs_deleted,
                    "unchanged": s.skipped_unchanged,
                    "updated_in_place": s.updated_in_place,
                    "seconds": round(s.seconds, 3),
                }
                for name, s in stats.indices.items()
            },
            "synced_at": dt.datetime.now(dt.UTC).isoformat(),
        }
    record["seconds"] = round(time.perf_counter() - started, 3)
    lake.write_json_atomic(lake.layout(settings).search_state, record, sort_keys=False)
    return record
