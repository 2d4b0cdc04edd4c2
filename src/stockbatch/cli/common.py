"""What every ``stockbatch`` command shares: the app, options, settings, progress bars,
error handling (one clear line, never a traceback) and run recording.

Exit codes: 0 success; 1 a failure the message explains; 2 bad usage;
3 the run completed but something needs attention (rejected inputs,
dead-lettered records, a stale search index), as :mod:`stockbatch.runs` decides.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from typer.core import TyperGroup

from stockbatch import runs
from stockbatch.errors import PipelineError
from stockbatch.results import Progress as StageProgress
from stockbatch.results import ProgressTask, RunResult, no_progress
from stockbatch.runs import EXIT_BUSY, HomeBusy
from stockbatch.settings import Settings, mask_secrets

CURRENT_HOME: list[Path | None] = [None]
"""The home of the command being run (set by :func:`cli_settings`; the crash log and the
audit entry go there)."""

LAST_FAILURE: dict[str, str] = {}
"""The class and message of the error the running command reported (the audit's outcome)."""


class AuditedGroup(TyperGroup):
    """The root command: every command run leaves an audit entry (who, what, when,
    parameters, outcome) in ``$STOCKBATCH_HOME/audit/cli.jsonl``, whatever its outcome;
    see :mod:`stockbatch.governance.audit` for why a file and not the warehouse."""

    def invoke(self, ctx: Any) -> Any:
        args = [*getattr(ctx, "_protected_args", []), *ctx.args]
        started = time.perf_counter()
        at = dt.datetime.now(dt.UTC)
        CURRENT_HOME[0] = None
        LAST_FAILURE.clear()
        code: int = 0
        error: str | None = None
        try:
            return super().invoke(ctx)
        except typer.Exit as exc:
            code = int(exc.exit_code or 0)
            raise
        except typer.Abort:
            code, error = 1, "Abort"
            raise
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
            raise
        except BaseException as exc:
            # Click's own errors carry their code (a usage error is 2); anything else is 1.
            code, error = int(getattr(exc, "exit_code", 1)), type(exc).__name__
            raise
        finally:
            _audit_command(self, ctx, args, at, time.perf_counter() - started, code, error)


def _leaf(group: TyperGroup, ctx: Any, args: list[str]) -> tuple[list[str], dict[str, Any]]:
    """The command path and the parameters the user gave (not defaults) of ``args``,
    parsed leniently (no prompt, no callback, no error): the record of what was asked,
    even when the command then refused it."""
    path: list[str] = []
    cmd: Any = group
    parent, rest = ctx, list(args)
    params: dict[str, Any] = {}
    try:
        while isinstance(cmd, TyperGroup) and rest:
            name, sub, rest = cmd.resolve_command(parent, rest)
            if sub is None or name is None:
                break
            path.append(name)
            parent = sub.make_context(name, list(rest), parent=parent, resilient_parsing=True)
            params = {
                k: v
                for k, v in parent.params.items()
                if getattr(parent.get_parameter_source(k), "name", "DEFAULT") != "DEFAULT"
            }
            rest = [*getattr(parent, "_protected_args", []), *parent.args]
            cmd = sub
    except Exception:  # an unknown command or option: the command itself says so
        path = path or [a for a in args[:1] if not a.startswith("-")]
    return path, params


def _audit_command(
    group: TyperGroup,
    ctx: Any,
    args: list[str],
    at: dt.datetime,
    seconds: float,
    code: int,
    error: str | None,
) -> None:
    """Write the entry of one command (never failing it: a warning line at worst)."""
    if not args or any(a in ctx.help_option_names for a in args):
        return  # help reads no data
    import getpass
    import pwd

    from stockbatch.governance import audit

    path, params = _leaf(group, ctx, args)
    home = CURRENT_HOME[0] or params.get("home") or os.environ.get("STOCKBATCH_HOME")
    home = Path(home or ".stockbatch")
    if not home.is_dir() and code != 0:
        return  # a command that failed before making its home touched no data there
    # Who: the account of the effective uid (getpass.getuser() reads LOGNAME/USER first,
    # which any caller can set); the login name of the environment too when it differs.
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # no passwd entry (some containers)
        user = f"uid:{os.geteuid()}"
    try:
        login = getpass.getuser()
    except (OSError, KeyError):
        login = user
    outcome = {0: "ok", 2: "usage error", 3: "attention", EXIT_BUSY: "busy"}.get(code, "error")
    detail: dict[str, Any] = {
        "via": "cli",
        "params": audit.clean_params(params),
        "exit_code": code,
        "outcome": outcome,
        "ms": round(seconds * 1000, 1),
        "host": os.uname().nodename,
        "pid": os.getpid(),
    }
    if login != user:
        detail["login"] = login
    if error or LAST_FAILURE:
        detail["error"] = error or LAST_FAILURE.get("class")
    if LAST_FAILURE.get("message"):
        detail["message"] = LAST_FAILURE["message"]
    entry = {"at": at.isoformat(), "actor": user, "action": " ".join(path), "detail": detail}
    try:
        audit.append_cli(home, entry)
    except OSError as exc:
        console.print(f"[yellow]warning:[/] audit entry not written: {escape(str(exc))}")


app = typer.Typer(
    name="stockbatch",
    cls=AuditedGroup,
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
    str | None,
    typer.Option(
        "--search", help="none | opensearch | elasticsearch (env STOCKBATCH_SEARCH__KIND)."
    ),
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
VerifyOpt = Annotated[
    bool,
    typer.Option(
        "--verify",
        help="Read and hash every input file in full (not only sampled blocks of "
        "unchanged history) and re-land any file whose landed content changed.",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
NoWaitOpt = Annotated[
    bool,
    typer.Option(
        "--no-wait",
        help="If another run holds this home, exit at once with code 4 instead of waiting.",
    ),
]
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
        CURRENT_HOME[0] = s.home
        return s
    except Exception as exc:  # pydantic.ValidationError and friends
        fail(f"invalid settings: {exc}", code=2)
        raise AssertionError from exc  # unreachable


def fail(message: str, code: int = 1) -> None:
    """Print one error line (secrets masked) and exit with ``code``."""
    LAST_FAILURE.setdefault("message", mask_secrets(message)[:300])
    console.print(f"[bold red]error:[/] {escape(mask_secrets(message))}")
    raise typer.Exit(code)


FIRST_DATE = dt.date(1885, 1, 1)
LAST_DATE = dt.date(2200, 12, 31)
"""The dates an option may name: the contract's first date to well past any data (the
calendar library cannot go past 2262)."""


def parse_date(value: str | None, what: str) -> dt.date | None:
    """An ISO date option, or a usage error (exit 2) that shows the expected form."""
    if value is None:
        return None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        fail(f"{what} must be a date like 2017-11-30, got {value[:40]!r}", code=2)
        raise AssertionError from None
    if not FIRST_DATE <= day <= LAST_DATE:
        fail(f"{what} must be between {FIRST_DATE} and {LAST_DATE}, got {day}", code=2)
    return day


class _RichTask(ProgressTask):
    def __init__(self, progress: Progress, description: str, total: int) -> None:
        self.progress = progress
        # total 0: a count of unknown size (a folder scan), shown as a running count.
        self.task = progress.add_task(description, total=total or None)

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
        # The error starts with the ref already; both quote input (escaped, never markup).
        error = r["error"] if r["error"].startswith(r["ref"]) else f"{r['ref']}: {r['error']}"
        console.print(f"[yellow]rejected[/] {escape(error)}")
    if len(rejected) > 20:
        console.print(f"[yellow]... and {len(rejected) - 20} more (see the run manifest)[/]")


def guard(fn: Any) -> Any:
    """Turn expected failures into one clear line and exit code 1 (never a traceback)."""
    from stockbatch.bus import TransportError
    from stockbatch.services.system import ServiceError
    from stockbatch.sources.base import SourceError

    expected: tuple[type[BaseException], ...] = (
        PipelineError,
        SourceError,
        TransportError,
        ServiceError,
        ValueError,
        OSError,
    )
    try:
        return fn()
    except typer.Exit:
        raise
    except HomeBusy as exc:
        fail(str(exc), code=EXIT_BUSY)
    except Exception as exc:
        LAST_FAILURE["class"] = type(exc).__name__
        # The warehouse's own error, only once its module is loaded (nothing else can
        # raise it): importing it here would cost every command SQLAlchemy (~0.3 s).
        db = sys.modules.get("stockbatch.warehouse.db")
        if db is not None:
            expected += (db.WarehouseUnavailable,)
        known = known_problem(exc)
        if known is not None:
            fail(known)
        if isinstance(exc, expected):
            fail(str(exc))
        # A bug: keep the traceback for the report, not for the screen.
        if os.environ.get("STOCKBATCH_DEBUG"):
            raise
        where = crash_log(traceback.format_exc())
        fail(
            f"internal error ({type(exc).__name__}: {str(exc)[:300]}). This is a bug: please "
            f"report it with {where} (full traceback); STOCKBATCH_DEBUG=1 shows it here."
        )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def known_problem(exc: BaseException) -> str | None:
    """What to say (and do) for failures of the machine, not of stockbatch: a full disk,
    a damaged SQLite warehouse. None for anything else."""
    for e in _chain(exc):
        text = str(e)
        if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or any(
            s in text for s in ("No space left on device", "database or disk is full")
        ):
            return (
                "the disk is full: free some space and run the command again. Nothing was "
                "half-written (lake files are written whole, the warehouse load is one "
                "transaction), so the rerun continues where this one stopped."
            )
        if "file is not a database" in text or "database disk image is malformed" in text:
            return (
                "the SQLite warehouse file is damaged (not a database). Move it away (e.g. "
                "`mv HOME/warehouse.db HOME/warehouse.db.bad`) and run `stockbatch load "
                "--force`: the warehouse is rebuilt from the lake, which holds everything."
            )
    return None


def crash_log(text: str) -> str:
    """Write a traceback to ``$STOCKBATCH_HOME/logs/`` (a new 0600 file, never through a
    link); returns where, or why it could not be written."""
    home = CURRENT_HOME[0] or Path(os.environ.get("STOCKBATCH_HOME") or ".stockbatch")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    path = home / "logs" / f"error-{stamp}-{os.getpid()}.log"
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        with os.fdopen(os.open(path, flags, 0o600), "w") as fh:
            fh.write(mask_secrets(text))
    except OSError as err:
        return f"(no crash log: {path} could not be written: {err.strerror})"
    return str(path)


def waiting(message: str) -> None:
    """Tell the user the command waits for another run (the home lock)."""
    console.print(f"[yellow]{escape(message)}[/]")


def recorded(
    s: Settings,
    command: str,
    work: Callable[[RunResult, StageProgress], None],
    params: dict[str, Any] | None = None,
    *,
    wait: bool = True,
    lock: bool = True,
) -> RunResult:
    """Run one stage command as a recorded run (a failure is recorded, then reported)."""

    def go() -> RunResult:
        recording = runs.recording(s, command, params=params, lock=lock, wait=wait, on_wait=waiting)
        with progress_bars(s.progress) as prog, recording as rec:
            work(rec, prog)
        return rec

    result: RunResult = guard(go)
    return result


def exit_for(status: str) -> None:
    """Exit with the status's code (nothing for success)."""
    code = runs.EXIT_CODES.get(status, 1)
    if code:
        raise typer.Exit(code)
