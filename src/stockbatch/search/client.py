"""Connecting to OpenSearch, and the errors every search function raises.

Every public function of :mod:`stockbatch.search` turns "the node cannot be
reached" (refused, reset, timed out) into :class:`SearchUnavailable`, so a caller
(the pipeline, the API) needs one ``except`` to switch to a degraded mode.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import TransportError

if TYPE_CHECKING:
    from stockbatch.settings import Settings

_HINT = "start one with `stockbatch services up opensearch` or set STOCKBATCH_SEARCH__URL"


class SearchError(RuntimeError):
    """A search operation failed (the message says which and why)."""


class SearchUnavailable(SearchError):
    """The OpenSearch node cannot be reached within a bounded time (one-line message)."""


def _url_of(client: OpenSearch) -> str:
    with contextlib.suppress(Exception):
        conn = client.transport.connection_pool.connections[0]
        return str(conn.host)
    return "OpenSearch"


@contextlib.contextmanager
def unavailable_as_error(client: OpenSearch) -> Iterator[None]:
    """Re-raise connection failures (refused, reset, timeout) as :class:`SearchUnavailable`."""
    try:
        yield
    except OSConnectionError as exc:  # ConnectionTimeout is a subclass
        reason = type(exc.info).__name__ if exc.info is not None else type(exc).__name__
        raise SearchUnavailable(
            f"OpenSearch at {_url_of(client)} is unreachable ({reason}): {_HINT}"
        ) from exc


def connect(
    url: str,
    timeout: float = 10.0,
    *,
    username: str | None = None,
    password: str | None = None,
    verify_certs: bool = True,
    pool_size: int = 4,
) -> OpenSearch:
    """A client for the node at ``url``, checked to answer ``GET /_cluster/health``.

    ``timeout`` bounds both each later request and this check: a node that does not
    answer within ``timeout`` s (retried every 0.25 s meanwhile, so a node still
    starting gets its chance) raises :class:`SearchUnavailable`. ``pool_size`` is the
    number of HTTP connections kept (at least the bulk load's thread count).
    """
    auth = (username, password) if username is not None and password is not None else None
    client = OpenSearch(
        hosts=[url],
        http_auth=auth,
        verify_certs=verify_certs,
        timeout=timeout,
        # Failures surface at once: the deadline below and the caller's retries own retrying.
        max_retries=0,
        retry_on_timeout=False,
        pool_maxsize=max(1, pool_size),
    )
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        remaining = deadline - time.monotonic()
        try:
            client.cluster.health(request_timeout=max(0.2, min(remaining, 5.0)))
            return client
        except OSConnectionError as exc:
            last = exc
        except TransportError as exc:  # answered, but not healthily (e.g. 503 while starting)
            last = exc
        if time.monotonic() + 0.25 >= deadline:
            break
        time.sleep(0.25)
    reason = type(getattr(last, "info", None) or last).__name__
    raise SearchUnavailable(
        f"OpenSearch at {url} did not answer within {timeout:g} s ({reason}): {_HINT}"
    )


def connect_settings(settings: Settings, timeout: float | None = None) -> OpenSearch:
    """:func:`connect` to the node of ``settings`` (explicit URL, else the one recorded
    by ``stockbatch services up opensearch``); :class:`SearchUnavailable` if there is none."""
    from stockbatch.services.endpoints import effective_search_url

    search = settings.search
    url = effective_search_url(settings)
    if not url:
        raise SearchUnavailable(f"no OpenSearch URL is configured or recorded: {_HINT}")
    password = search.password.get_secret_value() if search.password else None
    return connect(
        url,
        timeout=timeout if timeout is not None else search.timeout_s,
        username=search.username,
        password=password,
        verify_certs=search.verify_certs,
        pool_size=search.bulk_threads + 1,
    )


def health(client: OpenSearch) -> dict[str, Any]:
    """``GET /_cluster/health`` (:class:`SearchUnavailable` when unreachable)."""
    with unavailable_as_error(client):
        result: dict[str, Any] = client.cluster.health()
        return result
