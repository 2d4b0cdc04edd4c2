"""The audit log of the command line, and the merged view of every audit entry.

The CLI writes its entries to an append-only JSON-lines file,
``$STOCKBATCH_HOME/audit/cli.jsonl`` (0600), not to the warehouse's ``audit_log``:

- a command that fails because the warehouse is down, not yet created or misconfigured
  is exactly one to record, and the file is there when the warehouse is not;
- a command that does not load (``runs``, ``quality``, ``export`` from the lake) would
  otherwise pay for SQLAlchemy and a connection just to say it ran;
- one ``write`` of one line with ``O_APPEND`` is never interleaved with another
  process's line, so concurrent commands need no lock.

The API (requests, logins) and the runs recorded in the warehouse stay in ``audit_log``;
``stockbatch audit`` reads both and merges them by time. Parameters are recorded with
secrets masked (:func:`clean_params`); a password is never a parameter (it is read from
stdin or the environment, and neither is recorded).
"""

from __future__ import annotations

import collections
import datetime as dt
import enum
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stockbatch.settings import MASK, Settings, mask_secrets

CLI_AUDIT = Path("audit") / "cli.jsonl"
"""Where the CLI's entries go, under ``$STOCKBATCH_HOME``."""

_SECRET_NAME = re.compile(r"(?i)password|passwd|secret|token|api_?key|credential")
_TEXT_MAX = 500
_QUOTED_SECRET = re.compile(
    r"""(?i)(["']?[\w.-]*(?:password|passwd|secret|token|api_?key)[\w.-]*["']?\s*[:=]\s*["'])"""
    r"""([^"']*)(["'])"""
)
"""A secret-named key with a quoted value, as in a JSON ``--conf`` (``"password": "x"``),
which :func:`mask_secrets` (``password=x``) does not see."""


def cli_audit_path(home: Path) -> Path:
    """The CLI audit file of ``home``."""
    return Path(home) / CLI_AUDIT


_URL_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:([^@/?#\s]+)@")


def _env_secrets() -> list[str]:
    """Values of environment variables named like a secret (``PGPASSWORD``, an API key)
    and the passwords inside URLs of any variable (``STOCKBATCH_WAREHOUSE__URL``): never
    written, wherever they appear (an error message, a parameter)."""
    found = {v for k, v in os.environ.items() if _SECRET_NAME.search(k)}
    for value in os.environ.values():
        found.update(m[1] for m in _URL_PASSWORD.finditer(value))
    # Longest first (one secret may contain another); short values would mask ordinary words.
    return sorted((v for v in found if len(v) >= 4), key=len, reverse=True)


def scrub(value: Any, secrets: list[str] | None = None) -> Any:
    """``value`` (JSON-like) with URL passwords, ``password=`` pairs and the values of
    secret environment variables masked, and long text cut."""
    secrets = _env_secrets() if secrets is None else secrets
    if isinstance(value, str):
        text = _QUOTED_SECRET.sub(lambda m: f"{m[1]}{MASK}{m[3]}", mask_secrets(value))
        for s in secrets:
            text = text.replace(s, MASK)
        return text if len(text) <= _TEXT_MAX else text[:_TEXT_MAX] + "..."
    if isinstance(value, Mapping):
        return {str(k): scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, secrets) for v in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path | dt.date):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def clean_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A command's parameters, fit to record: a parameter named like a secret is masked
    (flags excepted: ``--password-stdin`` says how, not what), everything else scrubbed."""
    secrets = _env_secrets()
    out: dict[str, Any] = {}
    for name, value in params.items():
        plain = _plain(value)
        if _SECRET_NAME.search(name) and plain is not None and not isinstance(plain, bool):
            out[name] = MASK
        else:
            out[name] = scrub(plain, secrets)
    return out


def append_cli(home: Path, entry: Mapping[str, Any]) -> Path:
    """Append one entry (one JSON line) to ``home``'s CLI audit file; returns its path.
    Raises OSError when it cannot be written."""
    path = cli_audit_path(home)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = json.dumps(scrub(dict(entry)), default=str, separators=(",", ":")) + "\n"
    # O_APPEND: each line lands whole at the end, whoever else writes; never through a link.
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
    fd = os.open(path, flags, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return path


def as_utc(value: Any) -> dt.datetime | None:
    """An entry's time (datetime or ISO text) as an aware UTC datetime; None if neither."""
    if isinstance(value, dt.datetime):
        ts = value
    elif isinstance(value, str):
        try:
            ts = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)


def _keep(entry: Mapping[str, Any], since: dt.datetime | None, actor: str | None) -> bool:
    at = as_utc(entry.get("at"))
    if since is not None and (at is None or at < since):
        return False
    return actor is None or entry.get("actor") == actor


def read_cli(
    home: Path,
    since: dt.datetime | None = None,
    actor: str | None = None,
    last: int | None = None,
) -> list[dict[str, Any]]:
    """The CLI entries of ``home`` (oldest first; ``last``: only the newest N); a damaged
    line is skipped."""
    path = cli_audit_path(home)
    if not path.exists():
        return []
    found: collections.deque[dict[str, Any]] = collections.deque(maxlen=last)
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and _keep(entry, since, actor):
                found.append({**entry, "source": "cli"})
    return list(found)


def read_warehouse(
    settings: Settings,
    since: dt.datetime | None = None,
    actor: str | None = None,
    limit: int = 10_000,
) -> list[dict[str, Any]]:
    """The warehouse's ``audit_log`` entries (the API's, the runs'), oldest first; empty
    when there is no warehouse yet. Raises ``WarehouseUnavailable`` when it cannot be read."""
    import sqlalchemy as sa

    from stockbatch.warehouse import db, records

    urls = db.resolve_urls(settings)
    url = settings.api.auth_url or urls.loader
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        # Reading must not create an empty warehouse file as a side effect.
        file = db._sqlite_file(parsed)
        if file is not None and not file.expanduser().exists():
            return []
    engine = db.engine_for(url)
    try:
        rows = records.audit_entries(engine, since=since, actor=actor, limit=limit)
    finally:
        engine.dispose()
    return [{**r, "source": "warehouse"} for r in rows]


def merged(
    settings: Settings,
    since: dt.datetime | None = None,
    actor: str | None = None,
    limit: int = 10_000,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every audit entry of ``settings``' home, CLI file and warehouse merged by time
    (oldest first, the last ``limit``), and what could not be read (one line each)."""
    problems: list[str] = []
    entries = read_cli(settings.home, since, actor)
    try:
        entries += read_warehouse(settings, since, actor, limit)
    except Exception as exc:  # a down warehouse still leaves the CLI's entries to show
        problems.append(f"warehouse audit_log not read: {mask_secrets(str(exc))[:300]}")
    for e in entries:  # one form of time for both sources (ISO 8601, UTC)
        at = as_utc(e.get("at"))
        e["at"] = None if at is None else at.isoformat()
    entries.sort(key=lambda e: e["at"] or "")
    return entries[-limit:], problems
