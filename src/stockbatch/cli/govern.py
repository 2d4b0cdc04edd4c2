"""Governance commands: ``quality`` (the history of every run's checks) and ``audit``."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any

import typer
from rich.markup import escape

from stockbatch.cli.common import (
    HomeOpt,
    WarehouseOpt,
    app,
    cli_settings,
    console,
    guard,
    out,
    parse_date,
)

SinceOpt = Annotated[
    str | None,
    typer.Option("--since", help="YYYY-MM-DD: only what happened on or after that day (UTC)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.command()
def quality(
    since: SinceOpt = None,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """The quality history: every run's quarantine rate, top reasons and the thresholds
    it passed (settings `quality`, env STOCKBATCH_QUALITY__...), and the trend."""
    from stockbatch.governance import quality as history

    s = cli_settings(home, quiet=True)
    day = parse_date(since, "--since")
    found = guard(lambda: history.lake_history(s, day))
    limits = history.thresholds(s)
    if as_json:
        doc = {
            "since": None if day is None else day.isoformat(),
            "thresholds": {
                "max_quarantine_rate": limits.max_quarantine_rate,
                "max_reason_rate": dict(limits.max_reason_rate),
                "max_health_rate": dict(limits.max_health_rate),
            },
            "runs": [r.to_dict() for r in found],
            "trend": history.trend(found),
        }
        out.print_json(json.dumps(doc, default=str))
        return
    if not found:
        out.print(f"no run counted rows{f' since {day}' if day else ''} in {s.home}")
        return
    from rich.table import Table

    table = Table("run id", "started (UTC)", "status", "rows in", "quarantined", "rate",
                  "top reasons", "marks")  # fmt: skip
    for r in found:
        top = ", ".join(f"{k} {v:,}" for k, v in r.top_reasons()) or "-"
        marks = "; ".join(b.text() for b in r.breaches)
        table.add_row(
            r.run_id,
            (r.started_at or "")[:16].replace("T", " "),
            r.status or "",
            f"{r.rows_in:,}",
            f"{r.rows_quarantined:,}",
            f"{r.quarantine_rate:.2%}",
            escape(top),
            f"[bold red]{escape(marks)}[/]" if marks else "[green]ok[/]",
        )
    out.print(table)
    out.print(
        f"limits: quarantine rate {limits.max_quarantine_rate:.2%}"
        + "".join(f", {k} {v:.2%}" for k, v in sorted(limits.max_reason_rate.items()))
        + "".join(f", {k} {v:.2%}" for k, v in sorted(limits.max_health_rate.items()))
    )
    out.print(f"trend: {history.trend_line(found)}")


def _detail_text(entry: dict[str, Any]) -> str:
    d = entry.get("detail") or {}
    if not isinstance(d, dict):
        return str(d)
    if d.get("via") == "cli":
        params = " ".join(f"{k}={v}" for k, v in (d.get("params") or {}).items())
        failure = f" {d['error']}" if d.get("error") else ""
        return f"exit {d.get('exit_code')} {d.get('outcome')}{failure} {params}".strip()
    if "status" in d and "path" in d:  # an API request
        params = " ".join(f"{k}={v}" for k, v in (d.get("params") or {}).items())
        return f"{d['status']} {d['path']} {params}".strip()
    return json.dumps(d, default=str)[:200]


@app.command()
def audit(
    since: SinceOpt = None,
    actor: Annotated[str | None, typer.Option("--actor", help="Only this user's entries.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="The newest N entries.")] = 200,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """The audit log, oldest first: CLI commands ($STOCKBATCH_HOME/audit/cli.jsonl) merged
    with the warehouse's audit_log (API calls, logins, recorded runs)."""
    from stockbatch.governance import audit as log

    s = cli_settings(home, warehouse=warehouse, quiet=True)
    day = parse_date(since, "--since")
    start = None if day is None else dt.datetime.combine(day, dt.time(), dt.UTC)
    entries, problems = log.merged(s, start, actor, limit)
    for problem in problems:
        console.print(f"[yellow]warning:[/] {escape(problem)}")
    if as_json:
        out.print_json(json.dumps(entries, default=str))
        return
    if not entries:
        out.print("no audit entries" + (f" since {day}" if day else ""))
        return
    from rich.table import Table

    table = Table("at (UTC)", "source", "actor", "action", "outcome and parameters")
    for e in entries:
        at = e.get("at")
        when = at.isoformat() if isinstance(at, dt.datetime) else str(at or "")
        table.add_row(
            when[:19].replace("T", " "),
            str(e.get("source", "")),
            escape(str(e.get("actor", ""))),
            escape(str(e.get("action", ""))),
            escape(_detail_text(e)),
        )
    out.print(table)
