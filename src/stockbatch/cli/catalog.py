"""The data catalog command: ``catalog``."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape

from stockbatch.cli.common import (
    HomeOpt,
    SearchOpt,
    WarehouseOpt,
    app,
    cli_settings,
    fail,
    guard,
    out,
)

STATUS_STYLE = {"ok": "green", "empty": "yellow", "missing": "dim", "not_configured": "dim",
                "unreachable": "red", "damaged": "red"}  # fmt: skip


@app.command()
def catalog(
    as_json: Annotated[
        bool, typer.Option("--json", help="The full catalog (schemas included) as JSON.")
    ] = False,
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset", help="Only this dataset (e.g. gold.daily_features), with its columns."
        ),
    ] = None,
    home: HomeOpt = None,
    warehouse: WarehouseOpt = None,
    search: SearchOpt = None,
) -> None:
    """List every dataset: rows, freshness, the run that last wrote it, owner.

    Lake layers, warehouse tables, search indices and quarterly snapshots, read from what
    exists (Parquet footers, the run manifests, one count per table). `--json` adds each
    dataset's columns with their descriptions, upstream datasets and checksums.
    """
    from stockbatch.governance.catalog import build_catalog

    s = cli_settings(home, warehouse=warehouse, search=search, quiet=True)
    cat = guard(lambda: build_catalog(s))
    if dataset is not None:
        found = cat.get(dataset)
        if found is None:
            names = ", ".join(d.name for d in cat.datasets)
            fail(f"unknown dataset {dataset[:80]!r}; the catalog lists: {names}", code=2)
        cat.datasets = [found]
    if as_json:
        doc = cat.to_dict()
        out.print_json(json.dumps(doc["datasets"][0] if dataset else doc, default=str))
        return
    out.print(_summary(cat.datasets))
    if dataset is not None:
        out.print(_columns(cat.datasets[0]))
    else:
        out.print(
            f"[dim]{len(cat.datasets)} datasets of {cat.home} in {cat.seconds:.2f} s; "
            "columns, upstream and checksums: --json or --dataset NAME[/]"
        )


def _summary(datasets: list[Any]) -> Any:
    from rich.table import Table

    table = Table("dataset", "kind", "status", "rows", "newest date", "written (UTC)",
                  "last run", "owner", title="data catalog", title_justify="left")  # fmt: skip
    for d in datasets:
        style = STATUS_STYLE.get(d.status, "")
        table.add_row(
            d.name,
            d.kind,
            f"[{style}]{d.status}[/]" if style else d.status,
            "-" if d.rows is None else f"{d.rows:,}",
            d.newest_date or "-",
            (d.written_at or "-")[:19].replace("T", " "),
            d.last_run or "-",
            d.owner,
        )
    return table


def _columns(d: Any) -> Any:
    from rich.table import Table

    lines = [
        f"{d.description}; location {d.location}",
        f"upstream: {', '.join(d.upstream) or '-'}",
        f"checksum: {d.checksum.value} ({d.checksum.covers})" if d.checksum else "checksum: -",
    ]
    if d.note:
        lines.append(f"note: {d.note}")
    title = escape("\n".join(lines))
    table = Table("column", "type", "description", title=title, title_justify="left")
    for c in d.columns:
        # Descriptions hold units in brackets ("[price]"): text, not Rich markup.
        table.add_row(c.name, c.type, escape(c.description))
    return table
