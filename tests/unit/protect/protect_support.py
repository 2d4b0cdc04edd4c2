"""What the backup and retention tests share: the CLI in-process, demo-data edits, exports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from stockbatch.cli import app

AS_OF = "2023-06-30"
ACN = Path("huge") / "acn.us.txt"
"""A Huge-dataset file of the demo sample; its history ends on 2017-11-10 (a Friday)."""
NEXT_DAYS = [
    b"2017-11-13,143.9,144.5,143.1,144.2,1001000,0\r\n",
    b"2017-11-14,144.2,145.0,143.8,144.9,1102000,0\r\n",
]
"""In the file's own line ending (CRLF): bytes, so nothing else of the file changes."""

runner = CliRunner()


def sb(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Invoke the CLI in-process with an isolated STOCKBATCH_HOME (and ``env``)."""
    res = runner.invoke(
        app, list(args), env={"STOCKBATCH_HOME": str(home), **(env or {})}, catch_exceptions=False
    )
    return res.exit_code, res.output


def ok(home: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Invoke the CLI and assert success; its output."""
    code, output = sb(home, *args, env=env)
    assert code == 0, output
    return output


def landing_copy(demo_data: Path, tmp: Path) -> Path:
    """A writable copy of the demo sample (the tests append to and edit its files)."""
    dest = tmp / "landing"
    shutil.copytree(demo_data, dest)
    return dest


def run(home: Path, landing: Path, env: dict[str, str] | None = None) -> dict[str, object]:
    """``stockbatch run`` on ``landing``; the run's summary (``runs --last --json``)."""
    ok(home, "run", "--source", "kaggle", "--path", str(landing), "--as-of", AS_OF, "-q", env=env)
    return last_run(home, env)


def last_run(home: Path, env: dict[str, str] | None = None) -> dict[str, object]:
    """The newest run's summary."""
    doc: dict[str, object] = json.loads(ok(home, "runs", "--last", "--json", env=env))
    return doc


def append_day(landing: Path, k: int) -> None:
    """Append the ``k``-th next session to ACN's file (an incremental day)."""
    path = landing / ACN
    path.write_bytes(path.read_bytes() + NEXT_DAYS[k])


def change_old_line(landing: Path) -> None:
    """Correct one old line of ACN's file (same length): a new, non-append version."""
    path = landing / ACN
    lines = path.read_bytes().split(b"\n")
    fields = lines[5].split(b",")
    fields[5] = str(int(fields[5]) + 1).encode()  # the volume
    lines[5] = b",".join(fields)
    path.write_bytes(b"\n".join(lines))


def exports(home: Path, tmp: Path, env: dict[str, str] | None = None) -> tuple[bytes, pl.DataFrame]:
    """(the quarterly export's bytes, the daily export's rows sorted) of a home."""
    q, d = tmp / f"{home.name}-q.parquet", tmp / f"{home.name}-d.parquet"
    ok(home, "export", "quarterly", "--out", str(q), env=env)
    ok(home, "export", "daily", "--out", str(d), env=env)
    return q.read_bytes(), pl.read_parquet(d).sort("symbol", "trade_date")


def files_of(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file below ``root``."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
