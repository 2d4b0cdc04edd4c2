"""The commands that read results: ``runs``, ``show``, ``quarantine``, ``export``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from stockbatch import export, runs, snapshots
from stockbatch.cli.common import (
    HomeOpt,
    SymbolsOpt,
    WarehouseOpt,
    app,
    cli_settings,
    console,
    fail,
    guard,
    out,
    parse_date,
)
from stockbatch.settings import Settings

export_app = typer.Typer(help="Export tables for the ML application (.parquet or .csv).")
app.add_typer(export_app, name="export")


def _no_runs_message(s: Settings) -> str:
    """Say which home was read and where runs are recorded instead, if anywhere near."""
    here = f"no runs recorded in STOCKBATCH_HOME={s.home} (lake {s.lake_path})"
    found = sorted(
        str(p.parent.parent.parent)
        for base in (Path(".stockbatch"), s.home)
        if base.is_dir()
        for p in list(base.glob("lake/runs/*.json"))[:1] + list(base.glob("*/lake/runs/*.json"))
    )
    homes = [h for h in dict.fromkeys(found) if Path(h).resolve() != s.home.resolve()]
    if homes:
        return (
            f"{here}; runs are recorded in {', '.join(homes)}: pass --home or set STOCKBATCH_HOME"
        )
    return f"{here}; run `stockbatch run` first (or pass --home / set STOCKBATCH_HOME)"


@app.command("runs")
def list_runs(
    last: Annotated[bool, typer.Option("--last", help="Only the newest run.")] = False,
    limit: Annotated[int, typer.Option("--limit", help="How many runs to list.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    home: HomeOpt = None,
) -> None:
    """Show recent runs and their row counts."""
    s = cli_settings(home, quiet=True)
    unreadable: list[Path] = []
    docs = runs.last_manifests(s, 1 if last else limit, unreadable)
    for bad in unreadable:
        console.print(f"[yellow]warning:[/] skipped {bad}: not a run manifest (unreadable JSON)")
    if not docs:
        fail(_no_runs_message(s))
    rows = [runs.run_summary(d) for d in docs]
    if as_json:
        out.print_json(json.dumps(rows[0] if last else rows, default=str))
        return
    from rich.table import Table

    table = Table(
        "run id",
        "command",
        "status",
        "landed",
        "rows in",
        "clean",
        "quarantined",
        "dedup",
        "seconds",
    )
    for r in rows:
        table.add_row(
            r["run_id"],
            r["command"],
            r["status"],
            f"{r['rows_landed']:,}",
            f"{r['rows_in']:,}",
            f"{r['rows_clean']:,}",
            f"{r['rows_quarantined']:,}",
            f"{r['rows_deduplicated']:,}",
            f"{r['duration_s']:.1f}",
        )
    out.print(table)
    if last and rows[0]["reasons"]:
        per = ", ".join(f"{k} {v:,}" for k, v in rows[0]["reasons"].items() if v)
        out.print(
            f"quarantine reasons (one row can carry several, so they add up to more than "
            f"the {rows[0]['rows_quarantined']:,} rows): {per}. "
            "Rows per reason group: `stockbatch quarantine --by group`."
        )


SHOW_DAILY = ("trade_date", "close", "adj_close", "volume", "ret_1d", "sma_20", "sma_50",
              "sma_200", "rsi_14", "macd", "atr_14", "volatility_20")  # fmt: skip
SHOW_QUARTERLY = ("quarter", "q_close", "q_return", "q_volatility", "q_max_drawdown",
                  "q_trading_days", "q_missing_days", "q_complete", "available_at",
                  "label_next_q_return")  # fmt: skip


def _cell(value: object) -> str:
    if value is None:
        return "[dim]-[/]"
    if isinstance(value, float):
        if value.is_integer() and abs(value) >= 1000:  # volumes
            return f"{value:,.0f}"
        return f"{value:,.2f}" if abs(value) >= 100 else f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _table(title: str, rows: list[dict[str, object]], columns: tuple[str, ...]) -> Any:
    from rich.table import Table

    table = Table(*columns, title=title, title_justify="left")
    for row in rows:
        table.add_row(*(_cell(row[c]) for c in columns))
    return table


@app.command()
def show(
    symbol: Annotated[str, typer.Argument(help="The symbol, e.g. AAPL (case-insensitive).")],
    days: Annotated[int, typer.Option("--days", min=0, help="Newest daily rows to show.")] = 10,
    quarters: Annotated[
        int, typer.Option("--quarters", min=0, help="Newest quarterly rows to show.")
    ] = 4,
    home: HomeOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Show a symbol's newest daily rows (with features) and quarterly rows.

    The full rows: `stockbatch export daily --symbols SYMBOL` and `export quarterly`;
    every column is described in docs/data.md.
    """
    from stockbatch.warehouse import db, queries

    s = cli_settings(home, warehouse=warehouse, quiet=True)
    sym = symbol.strip().upper()

    def read() -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        engine = db.loaded_reader(s)
        daily = queries.symbol_daily(engine, sym, days).to_pylist()
        quarterly = queries.symbol_quarterly(engine, sym, quarters).to_pylist()
        return daily, quarterly

    daily, quarterly = guard(read)
    if not daily and not quarterly:
        fail(
            f"no rows for {sym} in the warehouse; check the symbol "
            f"(`stockbatch quarantine --symbol {sym}` shows rows that were refused)"
        )
    if days:
        out.print(_table(f"{sym}: last {len(daily)} daily rows", daily, SHOW_DAILY))
    if quarters:
        out.print(_table(f"{sym}: last {len(quarterly)} quarters", quarterly, SHOW_QUARTERLY))


@app.command()
def quarantine(
    run: Annotated[
        str | None, typer.Option("--run", help="Only rows of this run (process or landing).")
    ] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Only this reason code.")] = None,
    symbol: Annotated[str | None, typer.Option("--symbol", help="Only this symbol.")] = None,
    by: Annotated[str, typer.Option("--by", help="Count per reason | symbol | file.")] = "reason",
    limit: Annotated[int, typer.Option("--limit", min=0, help="Refused rows to list.")] = 20,
    home: HomeOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Counts of the refused rows and the rows themselves, with reasons and file:line.

    One row can carry several reasons, so the counts per reason can add up to
    more than the rows. Reason codes are described in docs/data.md.
    """
    from stockbatch.warehouse import db, queries

    if by not in queries.QUARANTINE_GROUPS:
        fail(f"--by must be one of {', '.join(queries.QUARANTINE_GROUPS)}, got {by!r}", code=2)
    s = cli_settings(home, warehouse=warehouse, quiet=True)
    sym = symbol.strip().upper() if symbol else None
    flt: dict[str, Any] = {"run_id": run, "reason": reason, "symbol": sym}

    def read() -> tuple[list[tuple[str, int]], list[dict[str, object]]]:
        engine = db.loaded_reader(s)
        counts = queries.quarantine_counts(engine, by, **flt)
        return counts, queries.quarantine_rows(engine, **flt, limit=limit)

    counts, rows = guard(read)
    if not counts:
        out.print("no quarantined rows" + (" match" if any(flt.values()) else ""))
        return
    from rich.table import Table

    summary = Table(by, "rows", title="quarantined rows per " + by, title_justify="left")
    for key, n in counts[:50]:
        summary.add_row(key, f"{n:,}")
    out.print(summary)
    if by == "reason":
        out.print(
            "[dim](a row with several reasons counts once per reason; "
            "--by group counts each row once)[/]"
        )
    if rows:
        for r in rows:
            r["where"] = f"{r['source_file']}:{r['line_no']}"
        cols = (
            "symbol",
            "trade_date",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "reasons",
            "where",
        )
        out.print(_table(f"first {len(rows)} refused rows", rows, cols))


def _export_target(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        fail(f"--out must end in .parquet or .csv, got {path.name!r}", code=2)
    return suffix


@export_app.command("quarterly")
def export_quarterly(
    out_path: Annotated[Path, typer.Option("--out", help="Target file (.parquet or .csv).")],
    home: HomeOpt = None,
    warehouse: WarehouseOpt = None,
    complete_only: Annotated[
        bool, typer.Option("--complete-only", help="Drop quarter-to-date (incomplete) rows.")
    ] = False,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Point in time (YYYY-MM-DD): only rows available then, labels not yet "
            "known nulled (the API's as_of).",
        ),
    ] = None,
) -> None:
    """Export the quarterly ML table from the warehouse.

    Columns (features, meta, the label) and the no-look-ahead rules: docs/data.md.
    """
    s = cli_settings(home, warehouse=warehouse, quiet=True)
    suffix = _export_target(out_path)
    when = parse_date(as_of, "--as-of")
    n = guard(
        lambda: export.export_quarterly(
            s, out_path, suffix, complete_only=complete_only, as_of=when
        )
    )
    out.print(f"exported {n:,} quarterly rows to {out_path}")


@export_app.command("daily")
def export_daily(
    out_path: Annotated[Path, typer.Option("--out", help="Target file (.parquet or .csv).")],
    symbols: SymbolsOpt = None,
    home: HomeOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Export daily bars + features from the warehouse (every column: docs/data.md)."""
    s = cli_settings(home, warehouse=warehouse, quiet=True)
    suffix = _export_target(out_path)
    syms = [x.strip().upper() for x in symbols.split(",")] if symbols else None
    n = guard(lambda: export.export_daily(s, out_path, suffix, syms))
    out.print(f"exported {n:,} daily rows to {out_path}")


@export_app.command("snapshot")
def export_snapshot(
    quarter: Annotated[str, typer.Option("--quarter", help="The closed quarter, e.g. 2017Q4.")],
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", help="The new version's id (default: a new run id)."),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Point in time (YYYY-MM-DD), as `export quarterly --as-of`."),
    ] = None,
    home: HomeOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Write an immutable, versioned snapshot of a closed quarter's ML table.

    HOME/exports/quarterly/QUARTER/VERSION.parquet with a manifest beside it;
    latest.json names the current version. Unchanged data writes nothing (the
    latest version is reported); changed data adds a version, never replaces one.
    Layout and rules: docs/data.md.
    """
    from stockbatch.results import new_run_id

    try:
        name = snapshots.parse_quarter(quarter)[0]
    except ValueError as exc:
        fail(f"--quarter: {exc}", code=2)
        raise AssertionError from exc  # unreachable
    when = parse_date(as_of, "--as-of")
    s = cli_settings(home, warehouse=warehouse, quiet=True)
    version = run_id or new_run_id()
    snap = guard(lambda: snapshots.write_snapshot(s, name, run_id=version, as_of=when))
    head = f"snapshot {name} version {snap.version}"
    what = f"{snap.rows:,} rows, sha256 {snap.sha256[:12]}"
    if snap.new:
        out.print(f"{head} written: {what} -> {snap.path} (now latest)")
    else:
        out.print(
            f"{head} unchanged: the data gives the same file as this latest version "
            f"({what}), nothing written -> {snap.path}"
        )


@export_app.command("snapshots")
def export_snapshots(
    quarter: Annotated[
        str | None, typer.Option("--quarter", help="Only this quarter, e.g. 2017Q4.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    home: HomeOpt = None,
) -> None:
    """List the quarterly snapshots: quarter, version, rows, SHA-256, which is latest."""
    name = None
    if quarter is not None:
        try:
            name = snapshots.parse_quarter(quarter)[0]
        except ValueError as exc:
            fail(f"--quarter: {exc}", code=2)
    s = cli_settings(home, quiet=True)
    found = guard(lambda: snapshots.list_snapshots(s, name))
    rows = [
        {
            "quarter": x.quarter,
            "version": x.version,
            "rows": x.rows,
            "sha256": x.sha256,
            "latest": x.latest,
            "created_at": x.manifest.get("created_at"),
            "path": str(x.path),
        }
        for x in found
    ]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    if not rows:
        where = snapshots.quarterly_root(s)
        out.print(
            f"no snapshots{' of ' + name if name else ''} in {where}; write one with "
            "`stockbatch export snapshot --quarter 2017Q4`"
        )
        return
    from rich.table import Table

    table = Table("quarter", "version", "rows", "sha256", "created at", "latest")
    for r in rows:
        table.add_row(
            r["quarter"],
            r["version"],
            f"{r['rows']:,}",
            r["sha256"][:12],
            str(r["created_at"]),
            "latest" if r["latest"] else "",
        )
    out.print(table)
