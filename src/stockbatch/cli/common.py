"""What every ``stockbatch`` command shares: the app, options, settings, progress bars,
error handling (one clear line, never a traceback) and run recording.

Exit codes: 0 success; 1 a failure the message explains; 2 bad usage;
3 the run completed but something needs attention (rejected inputs,
dead-lettered records, a stale search index), as :mod:`stockbatch.runs` decides.
"""

from __future__ import annotations

import datetime as dt
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

from stockbatch import runs
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

from stockbatch.cli.services import services_app  # noqa: E402  (sub-app registered after app)

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


def cli_settings(
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
        fail(f"invalid settings: {exc}", code=2)
        raise AssertionError from exc  # unreachable


def fail(message: str, code: int = 1) -> None:
    """Print one error line and exit with ``code``."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def parse_date(value: str | None, what: str) -> dt.date | None:
    """An ISO date option, or a usage error (exit 2) that shows the expected form."""
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        fail(f"{what} must be a date like 2017-11-30, got {value!r}", code=2)
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
def progress_bars(enabled: bool) -> Iterator[StageProgress]:
    """Rich progress bars for the stages (or none with --quiet / no terminal)."""
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


def report_rejected(rejected: list[dict[str, str]]) -> None:
    """List the rejected inputs (the first 20) on stderr."""
    for r in rejected[:20]:
        console.print(f"[yellow]rejected[/] {r['ref']}: {r['error']}")
    if len(rejected) > 20:
        console.print(f"[yellow]... and {len(rejected) - 20} more (see the run manifest)[/]")


def guard(fn: Any) -> Any:
    """Turn expected failures into one clear line and exit code 1 (never a traceback)."""
    from stockbatch.bus import TransportError
    from stockbatch.services.system import ServiceError
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
        fail(str(exc))
    except typer.Exit:
        raise
    except Exception as exc:  # a bug: keep the traceback for the report, not for the screen
        if os.environ.get("STOCKBATCH_DEBUG"):
            raise
        log = Path(tempfile.gettempdir()) / f"stockbatch-error-{os.getpid()}.log"
        log.write_text(traceback.format_exc())
        fail(
            f"internal error ({type(exc).__name__}: {exc}). This is a bug: please report it "
            f"with {log} (full traceback); STOCKBATCH_DEBUG=1 shows it here."
        )


def recorded(
    s: Settings,
    command: str,
    work: Callable[[RunResult, StageProgress], None],
    params: dict[str, Any] | None = None,
) -> RunResult:
    """Run one stage command as a recorded run (a failure is recorded, then reported)."""

    def go() -> RunResult:
        with progress_bars(s.progress) as prog, runs.recording(s, command, params=params) as rec:
            work(rec, prog)
        return rec

    result: RunResult = guard(go)
    return result


def exit_for(status: str) -> None:
    """Exit with the status's code (nothing for success)."""
    code = runs.EXIT_CODES.get(status, 1)
    if code:
        raise typer.Exit(code)
