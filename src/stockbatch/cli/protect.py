"""Protection commands: ``backup create|verify|restore`` and ``gc``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.filesize import decimal
from rich.markup import escape

from stockbatch.cli.common import (
    HomeOpt,
    NoWaitOpt,
    QuietOpt,
    WarehouseOpt,
    app,
    cli_settings,
    console,
    fail,
    guard,
    out,
    progress_bars,
    waiting,
)

backup_app = typer.Typer(
    help="Consistent backups of a home: the lake, the quarterly snapshots, the warehouse "
    "(SQLite image or pg_dump) and the services record without secrets.",
    no_args_is_help=True,
)
app.add_typer(backup_app, name="backup")

BackupDir = Annotated[
    Path, typer.Argument(help="A backup folder (the one `stockbatch backup create` printed).")
]


@backup_app.command("create")
def backup_create(
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="New, empty folder for the backup. Default: HOME/backups/<UTC timestamp>. "
            "On the home's file system lake files are hard-linked (no extra space); "
            "elsewhere (another disk) they are copied.",
            show_default=False,
        ),
    ] = None,
    home: HomeOpt = None,
    warehouse: WarehouseOpt = None,
    quiet: QuietOpt = False,
    no_wait: NoWaitOpt = False,
) -> None:
    """Back up the home while holding its run lock (no run writes meanwhile).

    Writes the lake (bronze, silver, gold, state, run manifests), the quarterly
    snapshots, the warehouse (SQLite online backup, or `pg_dump -Fc` for
    PostgreSQL), services.json with passwords masked, and manifest.json with the
    size and SHA-256 of every file. Check it later with `stockbatch backup verify`.
    """
    from stockbatch.protect import backup

    s = cli_settings(home, warehouse=warehouse, quiet=quiet)
    with progress_bars(s.progress) as prog:
        res = guard(
            lambda: backup.create_backup(
                s, out_dir, progress=prog, wait=not no_wait, on_wait=waiting
            )
        )
    out.print(res.summary())


@backup_app.command("verify")
def backup_verify(path: BackupDir, quiet: QuietOpt = False) -> None:
    """Re-hash every file of a backup against its manifest.

    Exit code 0 when intact; 1 with the list of missing, changed and unexpected files.
    """
    from stockbatch.protect import backup

    s = cli_settings(quiet=quiet)
    with progress_bars(s.progress) as prog:
        res = guard(lambda: backup.verify_backup(path, progress=prog))
    if res.ok:
        out.print(res.summary())
        return
    for line in res.problems():
        out.print(escape(line))
    fail(
        f"{res.summary()}: restore from another backup, or create a new one with "
        "`stockbatch backup create`"
    )


@backup_app.command("restore")
def backup_restore(
    path: BackupDir,
    home: HomeOpt = None,
    warehouse: WarehouseOpt = None,
    quiet: QuietOpt = False,
    no_wait: NoWaitOpt = False,
) -> None:
    """Verify a backup, then restore it into an EMPTY home and an empty warehouse.

    SQLite: the database file is copied to HOME/warehouse.db (or the configured
    URL). PostgreSQL: `pg_restore` into the configured database, which must hold
    no stockbatch table (start a fresh one with `stockbatch services up postgresql`
    in the new home, or point STOCKBATCH_WAREHOUSE__URL at an empty database).
    Services are not restored (the backup's services.json has its secrets masked):
    start them again with `stockbatch services up`.
    """
    from stockbatch.protect import backup

    s = cli_settings(home, warehouse=warehouse, quiet=quiet)
    with progress_bars(s.progress) as prog:
        res = guard(
            lambda: backup.restore_backup(s, path, progress=prog, wait=not no_wait, on_wait=waiting)
        )
    out.print(res.summary())


@app.command("gc")
def gc(
    keep_runs: Annotated[
        int,
        typer.Option(
            "--keep-runs",
            min=1,
            help="Keep the newest N run manifests (and the bronze batches those runs landed).",
        ),
    ],
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Only list what would be removed (counts, bytes)."),
    ] = False,
    home: HomeOpt = None,
    quiet: QuietOpt = False,
    no_wait: NoWaitOpt = False,
) -> None:
    """Remove superseded bronze versions and old run manifests nothing refers to.

    Never removes silver, gold, the incremental state, the catalog, snapshots or
    what they name: `stockbatch process` and the exports work as before.
    Rules: docs/design/operations-backup.md.
    """
    from stockbatch.protect import retention

    s = cli_settings(home, quiet=quiet)
    res = guard(
        lambda: retention.gc(s, keep_runs, dry_run=dry_run, wait=not no_wait, on_wait=waiting)
    )
    if dry_run:
        for path in [*res.batches, *res.manifests]:
            console.print(f"would remove {escape(str(path))} ({decimal(res.sizes[path])})")
    out.print(res.summary())
