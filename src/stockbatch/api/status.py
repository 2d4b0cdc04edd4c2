"""The service's state for operators: is the warehouse reachable, is the search index
fresh, when did the last run succeed (``/readyz`` and the dashboard's overview)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from stockbatch.api.context import ApiContext
from stockbatch.errors import PipelineError
from stockbatch.warehouse import queries


def _age_hours(when: dt.datetime | None) -> float | None:
    if when is None:
        return None
    return round((dt.datetime.now(dt.UTC) - when).total_seconds() / 3600, 2)


def readiness(ctx: ApiContext) -> dict[str, Any]:
    """``ready``, ``warehouse``, ``search``, ``last_success`` (see ``schemas.Ready``)."""
    warehouse: dict[str, Any] = {"ok": False}
    last: dict[str, Any] | None = None
    try:
        runs = queries.runs(ctx.reader, last=50)
        warehouse = {"ok": True, "runs": len(runs)}
        ok = next((r for r in runs if r["status"] == "succeeded"), None)
        if ok is not None:
            last = {
                "run_id": ok["run_id"],
                "finished_at": ok["finished_at"],
                "age_hours": _age_hours(ok["finished_at"]),
            }
    except (sa.exc.SQLAlchemyError, PipelineError) as exc:
        warehouse["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return {
        "ready": bool(warehouse["ok"]),
        "warehouse": warehouse,
        "search": search_status(ctx),
        "last_success": last,
    }


def search_status(ctx: ApiContext) -> dict[str, Any]:
    """``kind`` (opensearch, elasticsearch or sql), ``state`` (ok, stale, unavailable,
    off) and why."""
    if ctx.search_kind == "sql":
        return {"kind": "sql", "state": "off", "reason": "no search node configured: SQL search"}
    from stockbatch.search.sync import search_state

    out: dict[str, Any] = {"kind": ctx.search_kind}
    try:
        from stockbatch.search import queries as search_queries

        out["indices"] = search_queries.index_status(
            ctx.search_client(), prefix=ctx.settings.search.index_prefix
        )
    except Exception as exc:  # any client or connection failure: report, never raise
        out |= {"state": "unavailable", "reason": str(exc).splitlines()[0] if str(exc) else ""}
        ctx._search = None  # reconnect next time
        return out
    state = search_state(ctx.settings)
    synced = state.get("synced_at")
    age = None
    if synced:
        try:
            age = _age_hours(dt.datetime.fromisoformat(str(synced)))
        except ValueError:
            age = None
    out["synced_at"] = synced
    if state.get("stale"):
        out |= {"state": "stale", "reason": state.get("reason") or "the last load did not index"}
    elif age is not None and age > ctx.settings.api.stale_search_hours:
        out |= {"state": "stale", "reason": f"last indexed {age:.0f} h ago"}
    else:
        out["state"] = "ok"
    return out


def overview(ctx: ApiContext) -> dict[str, Any]:
    """What the dashboard's first page shows: last runs, freshness per source, warnings."""
    runs = queries.runs(ctx.reader, last=10)
    fresh = queries.freshness(ctx.reader)
    search = search_status(ctx)
    warnings: list[str] = []
    if runs and runs[0]["status"] != "succeeded":
        warnings.append(
            f"the last run {runs[0]['run_id']} is {runs[0]['status']}: see its manifest"
        )
    if search["state"] in ("stale", "unavailable"):
        warnings.append(f"search index {search['state']}: {search.get('reason', '')}")
    if not runs:
        warnings.append("no run is recorded yet: run `stockbatch run`")
    return {"runs": runs, "freshness": fresh, "search": search, "warnings": warnings}
