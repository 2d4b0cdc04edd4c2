"""Connecting to the search node (OpenSearch or Elasticsearch), and the errors every
search function raises.

Every public function of :mod:`stockbatch.search` turns "the node cannot be
reached" (refused, reset, timed out) into :class:`SearchUnavailable`, so a caller
(the pipeline, the API) needs one ``except`` to switch to a degraded mode.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

from stockbatch.search.backend import (
    BACKENDS,
    LABELS,
    IndexMissing,
    SearchBackend,
    SearchError,
    SearchUnavailable,
    hint,
)

if TYPE_CHECKING:
    from stockbatch.settings import Settings

__all__ = [
    "IndexMissing",
    "SearchBackend",
    "SearchError",
    "SearchUnavailable",
    "connect",
    "connect_settings",
    "health",
]


def connect(
    url: str,
    timeout: float = 10.0,
    *,
    kind: str = "opensearch",
    username: str | None = None,
    password: str | None = None,
    api_key: str | None = None,
    ca_file: str | None = None,
    verify_certs: bool = True,
    pool_size: int = 4,
) -> SearchBackend:
    """A backend of ``kind`` for the node at ``url``, checked to answer
    ``GET /_cluster/health``.

    ``timeout`` bounds both each later request and this check: a node that does not
    answer within ``timeout`` s (retried every 0.25 s meanwhile, so a node still
    starting gets its chance) raises :class:`SearchUnavailable`. ``pool_size`` is the
    number of HTTP connections kept (at least the bulk load's thread count).
    ``api_key`` is Elasticsearch's (``username``/``password`` work on both).
    """
    if kind not in BACKENDS:
        raise SearchError(f"unknown search kind {kind!r}: opensearch or elasticsearch")
    backend = BACKENDS[kind].connect(
        url,
        timeout=timeout,
        username=username,
        password=password,
        api_key=api_key,
        ca_file=ca_file,
        verify_certs=verify_certs,
        pool_size=pool_size,
    )
    deadline = time.monotonic() + timeout
    last: SearchError | None = None
    while True:
        remaining = deadline - time.monotonic()
        try:
            backend.health(timeout=max(0.2, min(remaining, 5.0)))
            return backend
        except SearchError as exc:  # unreachable, or not healthy yet (503 while starting)
            last = exc
        if time.monotonic() + 0.25 >= deadline:
            break
        time.sleep(0.25)
    backend.close()
    cause = last.__cause__ if last is not None and last.__cause__ is not None else last
    if isinstance(last, SearchUnavailable):
        reason = str(last).split(" is unreachable (", 1)[-1].split(")", 1)[0]
    else:
        reason = str(cause).splitlines()[0][:200] if cause else "no answer"
    raise SearchUnavailable(
        f"{LABELS[kind]} at {url} did not answer within {timeout:g} s ({reason}): {hint(kind)}"
    )


def connect_settings(
    settings: Settings,
    timeout: float | None = None,
    role: Literal["loader", "reader"] = "loader",
) -> SearchBackend:
    """:func:`connect` to the node of ``settings`` (explicit URL, else the one recorded
    by ``stockbatch services up <kind>``, as its ``role`` user: ``reader`` for the API);
    :class:`SearchUnavailable` if there is none."""
    from stockbatch.services.endpoints import effective_search_settings

    search = effective_search_settings(settings, role)
    kind = search.kind if search.kind != "none" else "opensearch"
    url = search.url
    if not url:
        raise SearchUnavailable(f"no {LABELS[kind]} URL is configured or recorded: {hint(kind)}")
    return connect(
        url,
        timeout=timeout if timeout is not None else search.timeout_s,
        kind=kind,
        username=search.username,
        password=search.password.get_secret_value() if search.password else None,
        api_key=search.api_key.get_secret_value() if search.api_key else None,
        ca_file=str(search.ca_file) if search.ca_file else None,
        verify_certs=search.verify_certs,
        pool_size=search.bulk_threads + 1,
    )


def health(backend: SearchBackend) -> dict[str, Any]:
    """``GET /_cluster/health`` (:class:`SearchUnavailable` when unreachable)."""
    return backend.health()
