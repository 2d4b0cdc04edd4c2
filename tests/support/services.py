"""One pattern for every real service a test session starts (Kafka, PostgreSQL, OpenSearch).

:func:`session_service` starts a :class:`~stockbatch.services.base.LocalService` once,
fails the fixture with the service's own message when it cannot start (what to
install, the tail of its log: integration tests never skip silently), and always
stops it at the end, even when start-up or a test failed. :class:`RunningService`
is what the fixtures hand to the tests: the service, its home, ``ensure_running()``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest

from stockbatch.services.base import LocalService
from stockbatch.services.system import ServiceError

S = TypeVar("S", bound=LocalService[Any])
H = TypeVar("H", bound="RunningService[Any]")


def server_home(factory: pytest.TempPathFactory, name: str) -> Path:
    """A ``STOCKBATCH_HOME`` for servers that run as another user when the tests run as
    root (PostgreSQL, Elasticsearch): outside pytest's temp root, because every pytest
    session that starts resets ``/tmp/pytest-of-root`` to 0700, and a server already
    running under it (as ``postgres``) then loses access to its own data. Remove it
    with :func:`remove_server_home`."""
    if os.geteuid() != 0:
        return factory.mktemp(name)
    base = Path(tempfile.gettempdir()) / "stockbatch-test-servers"
    base.mkdir(mode=0o711, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))


def remove_server_home(home: Path) -> None:
    """Delete a :func:`server_home` made outside pytest's temp root (pytest prunes its own)."""
    if "stockbatch-test-servers" in home.parts:
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class RunningService(Generic[S]):
    """A service a session fixture started: its handle and its ``STOCKBATCH_HOME``."""

    service: S
    home: Path

    def ensure_running(self) -> None:
        """Start it again if a test stopped it (same port, same data)."""
        if not self.service.status().running:
            self.service.up()


@contextlib.contextmanager
def session_service(running: H, what: str) -> Iterator[H]:
    """Start ``running.service`` (``what`` names it in the failure), yield, always stop it."""
    try:
        error = None
        try:
            running.service.up()
        except ServiceError as exc:
            error = str(exc)
        if error is not None:  # outside the except: no chained traceback around the message
            pytest.fail(f"could not start the local {what}: {error}", pytrace=False)
        yield running
    finally:
        # Never leave a server behind, even when start-up or a test failed.
        with contextlib.suppress(ServiceError):
            running.service.down()
