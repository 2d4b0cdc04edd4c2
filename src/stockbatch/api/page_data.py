"""What each dashboard page shows, read through the warehouse's query functions
(``warehouse.queries``, ``warehouse.access``) and the data dictionary; no SQL here
and none in the route handlers of :mod:`stockbatch.api.pages`.

Every function returns the template context of one page (plain dicts and lists).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any

from markupsafe import Markup, escape

from stockbatch import dictionary, schema
from stockbatch.api.context import ApiContext
from stockbatch.governance import audit, quality
from stockbatch.quality.rules import RULES
from stockbatch.warehouse import access, queries

SYMBOL_QUARTERS = 400
"""Most quarterly rows the symbol page lists (100 years)."""

QUARANTINE_PAGE = 200
"""Quarantined rows per page of /quality/quarantine."""

RUNS_PAGE = 50
"""Runs per page of /runs."""

AUDIT_ENTRIES = 50
"""Audit entries on /admin."""

HISTORY_RUNS = 60
"""Runs in the quality page's history (the same window as its reasons chart)."""

DAILY_COLUMNS = (
    "open", "high", "low", "close", "adj_close", "volume", "sma_20", "sma_50", "sma_200",
    "bb_upper_20", "bb_lower_20", "rsi_14", "macd", "macd_signal", "macd_hist",
)  # fmt: skip
"""The daily columns the symbol page's charts fetch (the API always adds the key)."""

QUARTER_FEATURES = schema.QUARTERLY_FEATURE_COLUMNS + schema.QUARTERLY_LABEL_COLUMNS
"""Numeric columns of the quarterly explorer (features and the label)."""

_TICKS = re.compile(r"`([^`]*)`")


def ticks(text: str) -> Markup:
    """Dictionary prose with ``code`` spans as ``<code>`` (everything else escaped)."""
    out = []
    for i, part in enumerate(_TICKS.split(str(text))):
        out.append(Markup("<code>%s</code>") % part if i % 2 else escape(part))
    return Markup("").join(out)


def _descriptions(table: str) -> dict[str, str]:
    return {k: _TICKS.sub(r"\1", v) for k, v in dictionary.describe_columns(table).items()}


def symbol_page(ctx: ApiContext, symbol: str) -> dict[str, Any] | None:
    """The instrument, its quarterly rows (newest first) and what the charts fetch;
    None when the warehouse does not have ``symbol``."""
    found = queries.instrument(ctx.reader, symbol)
    if found is None:
        return None
    table = queries.symbol_quarterly(ctx.reader, symbol, SYMBOL_QUARTERS)
    shown = [c for c in table.column_names if c not in ("symbol", "feature_set_version")]
    rows = table.select(shown).to_pylist()[::-1]
    described = _descriptions("quarterly")
    return {
        "instrument": found,
        "quarter_columns": [(c, described.get(c, "")) for c in shown],
        "quarter_rows": rows,
        "daily_columns": ",".join(DAILY_COLUMNS),
    }


def quarterly_page(ctx: ApiContext, quarter: str | None) -> dict[str, Any]:
    """The quarters to pick from and the chosen one (default: the newest)."""
    quarters = queries.quarters(ctx.reader)
    chosen = quarter if quarter in quarters else (quarters[0] if quarters else None)
    described = _descriptions("quarterly")
    return {
        "quarters": quarters,
        "quarter": chosen,
        "asked": quarter,
        "features": [(c, described.get(c, "")) for c in QUARTER_FEATURES],
    }


def _split(metrics: Mapping[str, float], kind: str) -> dict[str, float]:
    return {k.split(".", 1)[1]: v for k, v in metrics.items() if k.startswith(kind + ".")}


def quality_page(ctx: ApiContext) -> dict[str, Any]:
    """Counts per reason and health flag of the newest run that recorded them, with what
    each means, and the quarantine's rows per reason over every run."""
    rid = queries.last_run_id(ctx.reader, with_quality=True)
    found = queries.run(ctx.reader, rid) if rid else None
    metrics: dict[str, float] = found["quality"] if found else {}
    reasons = _split(metrics, "reasons")
    health = _split(metrics, "health")
    rules = {r.code: r.description for r in RULES}
    return {
        "run": found,
        "rows_in": metrics.get("rows_in"),
        "rows_clean": metrics.get("rows_clean"),
        "rows_quarantined": metrics.get("rows_quarantined"),
        "reasons": [
            (code, reasons.get(code), rules.get(code, ""), dictionary.REASON_EXAMPLES.get(code, ""))
            for code in schema.REASON_CODES
        ],
        "health": [
            (flag, health.get(flag), dictionary.HEALTH_FLAGS.get(flag, ""))
            for flag in schema.HEALTH_FLAGS
        ],
        "stored": queries.quarantine_counts(ctx.reader, "reason"),
        **quality_history(ctx),
    }


def quality_history(ctx: ApiContext) -> dict[str, Any]:
    """The last ``HISTORY_RUNS`` runs that counted rows (oldest first), each with its
    quarantine rate and the thresholds it passed (``Settings.quality``), the limits and
    the trend; what the quality page's history table and rate chart show."""
    return quality_history_of(ctx, queries.runs(ctx.reader, last=HISTORY_RUNS))


def quality_history_of(ctx: ApiContext, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`quality_history` of the given ``pipeline_runs`` rows (newest first)."""
    problem = None
    try:
        limits = quality.thresholds(ctx.settings)
    except ValueError as exc:  # a typo in the settings: say so, mark on the total only
        problem = str(exc)
        limits = quality.Thresholds(max_quarantine_rate=ctx.settings.schedule.max_quarantine_rate)
    found = quality.history(reversed(rows), limits)
    return {
        "history": found,
        "limits": limits,
        "limits_problem": problem,
        "trend": quality.trend(found),
        "trend_line": quality.trend_line(found),
    }


def quarantine_page(
    ctx: ApiContext,
    *,
    reason: str | None,
    symbol: str | None,
    run_id: str | None,
    after: int | None,
) -> dict[str, Any]:
    """One page of quarantined rows (filters already checked), counts per reason of the
    filter, and the cursor of the next page."""
    flt = {"run_id": run_id, "reason": reason, "symbol": symbol}
    rows = queries.quarantine_rows(ctx.reader, **flt, limit=QUARANTINE_PAGE, after_id=after)
    return {
        "rows": rows,
        "counts": queries.quarantine_counts(ctx.reader, "reason", **flt),
        "files": queries.quarantine_counts(ctx.reader, "file", **flt)[:20],
        "next_after": rows[-1]["id"] if len(rows) == QUARANTINE_PAGE else None,
        "reason_codes": schema.REASON_CODES,
        "filters": {k: v or "" for k, v in flt.items()},
    }


def runs_page(ctx: ApiContext, before: str | None) -> dict[str, Any]:
    """A page of runs, newest first, and the cursor of the older ones."""
    found = queries.runs(ctx.reader, last=RUNS_PAGE, before=before)
    return {
        "runs": found,
        "older": found[-1]["run_id"] if len(found) == RUNS_PAGE else None,
        "before": before,
    }


def run_page(ctx: ApiContext, run_id: str) -> dict[str, Any] | None:
    """One run: its record, and its manifest split into the sections an operator reads
    (inputs, process, load, counts) plus the whole document; None when unknown."""
    found = queries.run(ctx.reader, run_id)
    if found is None:
        return None
    manifest = found.get("manifest") or {}
    if isinstance(manifest, str):  # a JSON column some drivers hand back as text
        try:
            manifest = json.loads(manifest)
        except ValueError:
            manifest = {"manifest": manifest}
    ingest = manifest.get("ingest") if isinstance(manifest.get("ingest"), dict) else None
    process = manifest.get("process") if isinstance(manifest.get("process"), dict) else None
    load = manifest.get("load") if isinstance(manifest.get("load"), dict) else None
    counts = found.get("counts") or manifest.get("counts") or {}
    described = dict(dictionary.RUN_RECORD)
    return {
        "run": found,
        "counts": counts,
        "reasons": {k: v for k, v in (counts.get("reasons") or {}).items()},
        "health": {k: v for k, v in (counts.get("health") or {}).items()},
        "ingest": ingest,
        "units": (ingest or {}).get("units") or [],
        "rejected": (ingest or {}).get("rejected") or [],
        "process": {k: v for k, v in (process or {}).items() if not isinstance(v, dict | list)},
        "process_nested": {k: v for k, v in (process or {}).items() if isinstance(v, dict | list)},
        "load_tables": (load or {}).get("tables") or {},
        "load": {k: v for k, v in (load or {}).items() if k != "tables"},
        "manifest": manifest,
        "manifest_json": json.dumps(manifest, indent=2, sort_keys=False, default=str),
        "described": described,
    }


def admin_page(ctx: ApiContext) -> dict[str, Any]:
    """Users (no hashes), tokens (never a token), the last audit entries: the API's and
    the runs' (warehouse) merged with the command line's of this home
    (:mod:`stockbatch.governance.audit`), newest first."""
    entries = access.audit_rows(ctx.auth, limit=AUDIT_ENTRIES)
    for e in audit.read_cli(ctx.settings.home, last=AUDIT_ENTRIES):
        entries.append({**e, "id": "cli", "at": audit.as_utc(e.get("at"))})
    far_past = dt.datetime.min.replace(tzinfo=dt.UTC)
    entries.sort(key=lambda e: e["at"] or far_past, reverse=True)
    return {
        "users": access.users(ctx.auth),
        "tokens": access.tokens(ctx.auth),
        "audit": entries[:AUDIT_ENTRIES],
    }
