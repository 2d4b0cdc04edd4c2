"""What every request of the API and the dashboard reads: settings, the warehouse
(reader role), the auth store (users, tokens, audit) and the search node."""

from __future__ import annotations

import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from stockbatch.settings import Settings
from stockbatch.warehouse import db

SEARCH_RETRY_S = 30.0
"""After a failed connection to the search node, how long to answer from SQL without
trying it again."""


@dataclass
class ApiContext:
    """Shared by every request (``request.app.state.ctx``); engines are thread-safe pools."""

    settings: Settings
    reader: sa.Engine
    auth: sa.Engine
    started: float = field(default_factory=time.time)
    _search: Any = None
    _search_failure: tuple[float, str] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, settings: Settings) -> ApiContext:
        """Connect to the warehouse and the auth store (migrated so its tables exist).
        Raises ``WarehouseUnavailable`` with what to do."""
        # Requests run on a thread pool of 40: enough connections that none waits for one.
        pool: dict[str, Any] = {"pool_size": 20, "max_overflow": 40}
        return cls(
            settings=settings,
            reader=db.engine_for(db.resolve_urls(settings).reader, **pool),
            auth=auth_engine(settings, **pool),
        )

    @property
    def search_kind(self) -> str:
        """``opensearch`` or ``elasticsearch`` when configured, else ``sql`` (the
        warehouse fallback)."""
        kind = self.settings.search.kind
        return "sql" if kind == "none" else kind

    def search_client(self) -> Any:
        """The search backend (made once), or None when not configured.

        Raises ``SearchUnavailable`` when the node does not answer; after a failure,
        for ``SEARCH_RETRY_S`` seconds without trying again (each try can take the
        5 s connect timeout, which every autocomplete keystroke would wait for).
        """
        if self.search_kind == "sql":
            return None
        from stockbatch import search

        with self._lock:
            if self._search is None:
                failed_at, error = self._search_failure or (0.0, "")
                if time.monotonic() - failed_at < SEARCH_RETRY_S:
                    raise search.SearchUnavailable(error)
                try:
                    self._search = search.connect_settings(self.settings, 5.0, role="reader")
                except search.SearchUnavailable as exc:
                    self._search_failure = (time.monotonic(), str(exc))
                    raise
            return self._search

    def close(self) -> None:
        """Release the connection pools."""
        self.reader.dispose()
        self.auth.dispose()


def auth_engine(settings: Settings, **kwargs: Any) -> sa.Engine:
    """The store of users, tokens and the audit log (``api.auth_url``, default the
    warehouse's loader role), migrated first: its tables come with the warehouse's
    migrations, run by the owner role (idempotent)."""
    urls = db.resolve_urls(settings)
    url = settings.api.auth_url or urls.loader
    db.migrate(urls.owner if url == urls.loader else url)
    return db.engine_for(url, **kwargs)


def session_secret(settings: Settings) -> str:
    """The key that signs session cookies: the setting, else a random key kept in
    ``$STOCKBATCH_HOME/api-session.key`` (0600) so sessions survive a restart."""
    if settings.api.session_secret is not None:
        return settings.api.session_secret.get_secret_value()
    path = Path(settings.home) / "api-session.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip()
