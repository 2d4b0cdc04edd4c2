"""The ``stockbatch`` commands: thin wrappers over :mod:`stockbatch.pipeline`, recorded by
:mod:`stockbatch.runs`.

Exit codes: 0 success; 1 a failure the message explains; 2 bad usage;
3 the run completed but some inputs were rejected (listed in the summary and
the run manifest) or, with Kafka, some records were dead-lettered.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from stockbatch import export, pipeline, runs
from stockbatch.errors import PipelineError
from stockbatch.results import Progress as StageProgress
from stockbatch.results import ProgressTask, RunResult, no_progress
from stockbatch.settings import Settings

app = typer.Typer(
    name="stockbatch",
    help="Turn raw daily stock prices into a trustworthy quarterly ML feature table.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
export_app = typer.Typer(help="Export tables for the ML application (.parquet or .csv).")
app.add_typer(export_app, name="export")

from stockbatch.services.cli import services_app  # noqa: E402  (sub-app registered after app)

app.add_typer(services_app, name="services")

# soft_wrap: summaries stay one line each in logs (Rich would wrap them at 80 columns).
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)

EXIT_PARTIAL = runs.EXIT_CODES[runs.PARTIAL]

# ----------------------------------------------------------------------------- options

HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home", help="Lake + embedded warehouse folder (env STOCKBATCH_HOME).", show_default=False
    ),
]
EngineOpt = Annotated[
    str | None, typer.Option("--engine", help="polars | spark (env STOCKBATCH_PROCESS__ENGINE).")
]
TransportOpt = Annotated[
    str | None, typer.Option("--transport", help="direct | kafka (env STOCKBATCH_TRANSPORT).")
]
WarehouseOpt = Annotated[
    str | None,
    typer.Option("--warehouse", help="sqlite | postgresql (env STOCKBATCH_WAREHOUSE__KIND)."),
]
SearchOpt = Annotated[
    str | None, typer.Option("--search", help="none | opensearch (env STOCKBATCH_SEARCH__KIND).")
]
AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="YYYY-MM-DD: rows dated after it are quarantined (future_date). Default: today (UTC).",
    ),
]
SourceOpt = Annotated[str, typer.Option("--source", help="kaggle | yahoo.")]
PathOpt = Annotated[
    Path | None, typer.Option("--path", help="Kaggle: folder of the dataset's files.")
]
DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        help="Kaggle: download this dataset slug (owner/name) with kagglehub instead of "
        "--path, e.g. borismarjanovic/price-volume-data-for-all-us-stocks-etfs.",
    ),
]
SymbolsOpt = Annotated[
    str | None, typer.Option("--symbols", help="Yahoo: comma-separated symbols, e.g. AAPL,MSFT.")
]
StartOpt = Annotated[
    str | None,
    typer.Option("--start", help="Yahoo: first date (default: the day after the last stored one)."),
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Redo the work even if inputs are unchanged.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
FullOpt = Annotated[
    bool,
    typer.Option(
        "--full",
        help="Rebuild silver and gold from all of bronze instead of updating incrementally.",
    ),
]


def _settings(
    home: Path | None = None,
    engine: str | None = None,
    transport: str | None = None,
    warehouse: str | None = None,
    search: str | None = None,
    quiet: bool = False,
) -> Settings:
    """Environment + defaults, then the CLI options on top."""
    try:
        s = Settings()
        upd: dict[str, Any] = {}
        if home is not None:
            upd["home"] = home
        if transport is not None:
            upd["transport"] = transport
        s = Settings.model_validate({**s.model_dump(), **upd})
        if engine is not None:
            s.process = s.process.model_validate({**s.process.model_dump(), "engine": engine})
        if warehouse is not None:
            s.warehouse = s.warehouse.model_validate(
                {**s.warehouse.model_dump(), "kind": warehouse}
            )
        if search is not None:
            s.search = s.search.model_validate({**s.search.model_dump(), "kind": search})
        if quiet or not sys.stderr.isatty():
            s.progress = False
        return s
    except Exception as exc:  # pydantic.ValidationError and friends
        _fail(f"invalid settings: {exc}", code=2)
        raise AssertionError from exc  # unreachable


def _fail(message: str, code: int = 1) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _parse_date(value: str | None, what: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        _fail(f"{what} must be a date like 2017-11-30, got {value!r}", code=2)
        raise AssertionError from None


class _RichTask(ProgressTask):
    def __init__(self, progress: Progress, description: str, total: int) -> None:
        self.progress = progress
        self.task = progress.add_task(description, total=total)

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.task, n)

    def close(self) -> None:
        self.progress.update(self.task, visible=False)


@contextmanager
def _progress(enabled: bool) -> Iterator[StageProgress]:
    if not enabled:
        yield no_progress
        return
    bar = Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    with bar:
        yield lambda description, total: _RichTask(bar, description, total)


def _make_source(
    settings: Settings,
    source: str,
    path: Path | None,
    symbols: str | None,
    start: str | None,
    dataset: str | None = None,
) -> Any:
    if source == "kaggle":
        from stockbatch.sources.kaggle import KaggleSource, kaggle_download

        if dataset is not None:
            console.print(f"downloading Kaggle dataset {dataset} (kagglehub cache) ...")
            path = _guard(lambda: kaggle_download(dataset))
        if path is None:
            _fail(
                "--source kaggle needs --path DIR (a folder of the Kaggle dataset's files) "
                "or --dataset OWNER/NAME",
                2,
            )
        assert path is not None
        if not path.exists():
            _fail(f"--path {path} does not exist")
        if not path.is_dir():
            _fail(f"--path {path} is not a folder; point it at the dataset's folder")
        return KaggleSource(path)
    if source == "yahoo":
        from stockbatch.lake import bronze
        from stockbatch.sources.yahoo import YahooSource

        if not symbols:
            _fail("--source yahoo needs --symbols, e.g. --symbols AAPL,MSFT", 2)
        assert symbols is not None
        syms = [s.strip().upper() for s in symbols.split(",") if s.strip()]
        return YahooSource(
            syms,
            start=_parse_date(start, "--start"),
            end=None,
            last_dates=bronze.last_dates(settings),
            settings=settings.yahoo,
        )
    _fail(f"unknown --source {source!r}: use kaggle or yahoo", 2)
    raise AssertionError


def _report_rejected(rejected: list[dict[str, str]]) -> None:
    for r in rejected[:20]:
        console.print(f"[yellow]rejected[/] {r['ref']}: {r['error']}")
    if len(rejected) > 20:
        console.print(f"[yellow]... and {len(rejected) - 20} more (see the run manifest)[/]")


def _guard(fn: Any) -> Any:
    """Turn expected failures into one clear line and exit code 1 (never a traceback)."""
    from stockbatch.bus import TransportError
    from stockbatch.services.base import ServiceError
    from stockbatch.sources.base import SourceError
    from stockbatch.warehouse.db import WarehouseUnavailable

    expected = (
        PipelineError,
        SourceError,
        TransportError,
        WarehouseUnavailable,
        ServiceError,
        ValueError,
        OSError,
    )
    try:
        return fn()
    except expected as exc:
        _fail(str(exc))
    except typer.Exit:
        raise
    except Exception as exc:  # a bug: keep the traceback for the report, not for the screen
        if os.environ.get("STOCKBATCH_DEBUG"):
            raise
        log = Path(tempfile.gettempdir()) / f"stockbatch-error-{os.getpid()}.log"
        log.write_text(traceback.format_exc())
        _fail(
            f"internal error ({type(exc).__name__}: {exc}). This is a bug: please report it "
            f"with {log} (full traceback); STOCKBATCH_DEBUG=1 shows it here."
        )


def _recorded(
    s: Settings,
    command: str,
    work: Callable[[RunResult, StageProgress], None],
    params: dict[str, Any] | None = None,
) -> RunResult:
    """Run one stage command as a recorded run (a failure is recorded, then reported)."""

    def go() -> RunResult:
        with _progress(s.progress) as prog, runs.recording(s, command, params=params) as rec:
            work(rec, prog)
        return rec

    result: RunResult = _guard(go)
    return result


def _exit_for(status: str) -> None:
    code = runs.EXIT_CODES.get(status, 1)
    if code:
        raise typer.Exit(code)


# ----------------------------------------------------------------------------- commands


@app.command()
def run(
    source: SourceOpt = "kaggle",
    path: PathOpt = None,
    dataset: DatasetOpt = None,
    symbols: SymbolsOpt = None,
    start: StartOpt = None,
    as_of: AsOfOpt = None,
    force: ForceOpt = False,
    full: FullOpt = False,
    home: HomeOpt = None,
    engine: EngineOpt = None,
    transport: TransportOpt = None,
    warehouse: WarehouseOpt = None,
    search: SearchOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run the whole pipeline: ingest -> process -> load.

    With --transport kafka: ingest -> Kafka -> collect -> process -> load.
    """
    s = _settings(home, engine, transport, warehouse, search, quiet)
    _guard(lambda: pipeline.check_backends(s))
    src = _make_source(s, source, path, symbols, start, dataset)
    with _progress(s.progress) as prog:
        res: RunResult = _guard(
            lambda: pipeline.run(
                s,
                src,
                as_of=_parse_date(as_of, "--as-of"),
                force=force,
                full=full,
                progress=prog,
            )
        )
    assert res.ingest and res.process and res.load
    _report_rejected(res.ingest.rejected)
    console.print(res.ingest.summary())
    if res.collect is not None:
        console.print(res.collect.summary())
    console.print(res.process.summary())
    console.print(res.load.summary())
    verdict = "changed" if res.changed else "nothing changed (inputs already processed)"
    out.print(
        f"run {res.run_id} {res.status}: {verdict}; manifest {res.manifest_path} "
        f"({res.duration_s:.1f}s)"
    )
    _exit_for(res.status)


@app.command()
def ingest(
    source: SourceOpt = "kaggle",
    path: PathOpt = None,
    dataset: DatasetOpt = None,
    symbols: SymbolsOpt = None,
    start: StartOpt = None,
    force: ForceOpt = False,
    as_of: AsOfOpt = None,
    home: HomeOpt = None,
    transport: TransportOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Land a source's data in the lake's bronze layer (as arrived).

    With --transport kafka: publish it to the Kafka topic instead (the producer
    service); `stockbatch collect` then lands it in bronze.
    """
    s = _settings(home, transport=transport, quiet=quiet)
    _guard(lambda: pipeline.check_backends(s))
    src = _make_source(s, source, path, symbols, start, dataset)

    def work(rec: RunResult, prog: StageProgress) -> None:
        rec.ingest = pipeline.ingest(s, src, run_id=rec.run_id, force=force, progress=prog)

    rec = _recorded(s, "ingest", work, params={"source": source})
    assert rec.ingest is not None
    _report_rejected(rec.ingest.rejected)
    out.print(rec.ingest.summary())
    _exit_for(rec.status)


@app.command()
def collect(
    group: Annotated[
        str | None,
        typer.Option(
            "--group",
            help="Consumer group (env STOCKBATCH_KAFKA__CONSUMER_GROUP); collectors of one "
            "group split the partitions.",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            help="Seconds without progress before giving up (env STOCKBATCH_KAFKA__TIMEOUT_S).",
        ),
    ] = None,
    join_grace: Annotated[
        float,
        typer.Option(
            "--join-grace",
            help="When starting several collectors together: stay in the group at least "
            "this many seconds so each gets its share of the partitions.",
        ),
    ] = 0.0,
    home: HomeOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Land what the Kafka topic holds in bronze (the batch consumer; one bounded batch).

    Reads up to the end offsets seen at start, writes bronze, then commits.
    Exit code 3 when some records were undecodable (sent to the dead-letter topic).
    """
    s = _settings(home, transport="kafka", quiet=quiet)
    _guard(lambda: pipeline.check_backends(s))

    def work(rec: RunResult, prog: StageProgress) -> None:
        rec.collect = pipeline.collect(
            s, run_id=rec.run_id, group=group, timeout_s=timeout, join_grace_s=join_grace
        )
        rec.params["group"] = rec.collect.stats.group

    rec = _recorded(s, "collect", work)
    assert rec.collect is not None
    out.print(rec.collect.summary())
    _exit_for(rec.status)


@app.command()
def process(
    as_of: AsOfOpt = None,
    force: ForceOpt = False,
    full: FullOpt = False,
    home: HomeOpt = None,
    engine: EngineOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Validate bronze into silver (clean + quarantine) and compute the gold features.

    Incremental: only what new bronze rows affect is recomputed (a symbol's new
    days from its recent rows and carried state; a late correction rebuilds its
    bucket). --full rebuilds everything.
    """
    s = _settings(home, engine=engine, quiet=quiet)
    _guard(lambda: pipeline.check_backends(s))
    day = _parse_date(as_of, "--as-of")

    def work(rec: RunResult, prog: StageProgress) -> None:
        rec.process = pipeline.process(
            s, run_id=rec.run_id, as_of=day, force=force, full=full, progress=prog
        )

    rec = _recorded(s, "process", work)
    assert rec.process is not None
    out.print(rec.process.summary())


@app.command()
def load(
    force: ForceOpt = False,
    search_only: Annotated[
        bool,
        typer.Option(
            "--search-only",
            help="Only bring the search index up to date (after OpenSearch was down).",
        ),
    ] = False,
    home: HomeOpt = None,
    warehouse: WarehouseOpt = None,
    search: SearchOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Upsert the gold layer into the warehouse (only what changed), then sync the search
    index when one is configured. Exit code 3 when the search index stayed stale."""
    s = _settings(home, warehouse=warehouse, search=search, quiet=quiet)
    _guard(lambda: pipeline.check_backends(s))

    def work(rec: RunResult, prog: StageProgress) -> None:
        rec.load = pipeline.load(
            s, run_id=rec.run_id, force=force, search_only=search_only, progress=prog
        )

    rec = _recorded(s, "load", work)
    assert rec.load is not None
    out.print(rec.load.summary())
    _exit_for(rec.status)


@app.command("runs")
def list_runs(
    last: Annotated[bool, typer.Option("--last", help="Only the newest run.")] = False,
    limit: Annotated[int, typer.Option("--limit", help="How many runs to list.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    home: HomeOpt = None,
) -> None:
    """Show recent runs and their row counts."""
    s = _settings(home, quiet=True)
    docs = runs.last_manifests(s, 1 if last else limit)
    if not docs:
        _fail(f"no runs recorded under {s.lake_path}; run `stockbatch run` first")
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


def _export_target(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        _fail(f"--out must end in .parquet or .csv, got {path.name!r}", code=2)
    return suffix


@export_app.command("quarterly")
def export_quarterly(
    out_path: Annotated[Path, typer.Option("--out", help="Target file (.parquet or .csv).")],
    home: HomeOpt = None,
    warehouse: WarehouseOpt = None,
    complete_only: Annotated[
        bool, typer.Option("--complete-only", help="Drop quarter-to-date (incomplete) rows.")
    ] = False,
) -> None:
    """Export the quarterly ML table (FEATURES.md section 3) from the warehouse."""
    s = _settings(home, warehouse=warehouse, quiet=True)
    suffix = _export_target(out_path)
    n = _guard(lambda: export.export_quarterly(s, out_path, suffix, complete_only=complete_only))
    out.print(f"exported {n:,} quarterly rows to {out_path}")


@export_app.command("daily")
def export_daily(
    out_path: Annotated[Path, typer.Option("--out", help="Target file (.parquet or .csv).")],
    symbols: SymbolsOpt = None,
    home: HomeOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Export daily bars + features (FEATURES.md section 2) from the warehouse."""
    s = _settings(home, warehouse=warehouse, quiet=True)
    suffix = _export_target(out_path)
    syms = [x.strip().upper() for x in symbols.split(",")] if symbols else None
    n = _guard(lambda: export.export_daily(s, out_path, suffix, syms))
    out.print(f"exported {n:,} daily rows to {out_path}")


def main() -> None:  # pragma: no cover - console entry point
    """Console entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
