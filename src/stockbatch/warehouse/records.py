"""The run and audit rows of the warehouse: ``pipeline_runs``, ``data_quality``, ``audit_log``."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from stockbatch import schema
from stockbatch.warehouse import bulk, models

# --------------------------------------------------------------------------- runs and audit


def _as_utc(value: Any) -> dt.datetime | None:
    """datetime / ISO text / epoch seconds -> aware UTC datetime (naive input is taken as UTC)."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        ts = value
    elif isinstance(value, (int, float)):
        ts = dt.datetime.fromtimestamp(value, dt.UTC)
    elif isinstance(value, str):
        ts = dt.datetime.fromisoformat(value)
    else:
        raise TypeError(f"not a timestamp: {value!r}")
    return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)


def _json_safe(value: Any) -> Any:
    """Round-trip through JSON so dates, paths, etc. become text before SQLAlchemy sees them."""
    return json.loads(json.dumps(value, default=str))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return None


def quality_rows(run_id: str, counts: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``data_quality`` rows of a manifest's ``counts`` (see ``summary_counts``).

    Top-level numbers are ``kind='count'`` (``rows_in`` ...); the numbers of a
    flat mapping are named ``<key>.<name>`` and take the key as kind
    (``reasons.duplicate`` of kind ``reasons``). Every reason code and health
    flag of the contract is present (0 when absent) when the manifest has a
    ``reasons`` / ``health`` mapping, so dashboards see explicit zeros.
    """
    rows: list[dict[str, Any]] = []
    for name, value in summary_counts(counts).items():
        if isinstance(value, Mapping):
            defaults = {"reasons": schema.REASON_CODES, "health": schema.HEALTH_FLAGS}.get(name, ())
            for k, v in {**dict.fromkeys(defaults, 0), **value}.items():
                rows.append(
                    {"run_id": run_id, "metric": f"{name}.{k}", "kind": name, "value": float(v)}
                )
        else:
            rows.append({"run_id": run_id, "metric": name, "kind": "count", "value": float(value)})
    return rows


def summary_counts(counts: Mapping[str, Any]) -> dict[str, Any]:
    """The run-level part of ``counts``: top-level numbers and flat mappings of numbers.

    Deeper detail (e.g. ``per_file``: thousands of files per run) stays in the
    lake manifest; the warehouse keeps what the runs page and the API show.
    """
    out: dict[str, Any] = {}
    for name, value in counts.items():
        if isinstance(value, Mapping):
            flat = {str(k): _number(v) for k, v in value.items()}
            if flat and all(v is not None for v in flat.values()):
                out[name] = flat
        elif (number := _number(value)) is not None:
            out[name] = number if isinstance(value, float) else int(number)
    return out


def _count(counts: Mapping[str, Any], name: str) -> int | None:
    value = counts.get(name)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def record_run(engine: sa.Engine, manifest: Mapping[str, Any]) -> None:
    """Upsert a run manifest into ``pipeline_runs`` and replace its ``data_quality`` rows.

    Reads ``run_id`` (required), ``started_at``, ``finished_at`` (datetime, ISO
    text or epoch seconds), ``status``, ``command``, ``params`` (mapping),
    ``counts`` (mapping: ``rows_in``, ``rows_clean``, ``rows_quarantined``,
    ``rows_deduplicated``, ``reasons``, ``health``, ...) and ``duration_s``
    (else finished - started). One transaction.
    """
    with engine.begin() as conn:
        record_run_in(conn, manifest)


def record_run_in(conn: sa.Connection, manifest: Mapping[str, Any]) -> None:
    run_id = manifest.get("run_id")
    if not run_id:
        raise ValueError("manifest has no run_id")
    counts = manifest.get("counts") or {}
    started = _as_utc(manifest.get("started_at"))
    finished = _as_utc(manifest.get("finished_at"))
    duration = manifest.get("duration_s")
    if duration is None and started is not None and finished is not None:
        duration = (finished - started).total_seconds()
    row = {
        "run_id": str(run_id),
        "started_at": started,
        "finished_at": finished,
        "status": manifest.get("status"),
        "command": manifest.get("command"),
        "params": _json_safe(manifest.get("params")),
        "counts": _json_safe(summary_counts(counts)),
        "rows_in": _count(counts, "rows_in"),
        "rows_clean": _count(counts, "rows_clean"),
        "rows_quarantined": _count(counts, "rows_quarantined"),
        "rows_deduplicated": _count(counts, "rows_deduplicated"),
        "duration_s": None if duration is None else float(duration),
        "manifest": _json_safe(dict(manifest)),
    }
    runs, quality = models.pipeline_runs, models.data_quality
    stmt = bulk.dialect_insert(conn, runs).values(row)
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id"],
        set_={c: stmt.excluded[c] for c in row if c != "run_id"},
    )
    conn.execute(stmt)
    conn.execute(sa.delete(quality).where(quality.c.run_id == row["run_id"]))
    q_rows = quality_rows(row["run_id"], counts)
    if q_rows:
        conn.execute(quality.insert(), q_rows)


def audit(
    engine: sa.Engine, actor: str, action: str, detail: Mapping[str, Any] | None = None
) -> int:
    """Append one ``audit_log`` entry (timestamped now, UTC); returns its id."""
    with engine.begin() as conn:
        return audit_in(conn, actor, action, detail)


def audit_in(
    conn: sa.Connection, actor: str, action: str, detail: Mapping[str, Any] | None = None
) -> int:
    result = conn.execute(
        models.audit_log.insert().values(
            at=bulk.utcnow(),
            actor=actor,
            action=action,
            detail=None if detail is None else _json_safe(dict(detail)),
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def audit_entries(
    engine: sa.Engine,
    *,
    since: dt.datetime | None = None,
    actor: str | None = None,
    limit: int = 10_000,
) -> list[dict[str, Any]]:
    """The newest ``limit`` ``audit_log`` entries at or after ``since`` (of ``actor``),
    oldest first, ``at`` aware UTC. Empty when the table does not exist yet."""
    t = models.audit_log
    stmt = sa.select(t).order_by(t.c.id.desc()).limit(limit)
    if since is not None:
        stmt = stmt.where(t.c.at >= since)
    if actor is not None:
        stmt = stmt.where(t.c.actor == actor)
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(t.name):
            return []
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    for r in rows:
        r["at"] = _as_utc(r["at"])
    return rows[::-1]
