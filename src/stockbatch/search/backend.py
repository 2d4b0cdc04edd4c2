"""One interface to a search engine, two backends: OpenSearch and Elasticsearch.

Everything engine-neutral (content hashes, the fresh index, the unchanged skip,
the alias swap, the query bodies) lives in :mod:`stockbatch.search.load` and
:mod:`stockbatch.search.queries` and calls a :class:`SearchBackend`, never a
client. Each backend wraps its engine's official client (``opensearch-py``,
``elasticsearch`` 8.x) and turns its exceptions into three:

- :class:`SearchUnavailable`: the node cannot be reached (refused, reset, timed
  out); one line with the engine, the URL and how to start one;
- :class:`IndexMissing`: the index or alias asked for does not exist;
- :class:`SearchError`: anything else the node refused (message cut to 500 chars).

The request bodies are the same on both engines: the mappings and queries use only
what Elastic's minimal distribution and OpenSearch both have (see
docs/design/search-backends.md).
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

BackendKind = Literal["opensearch", "elasticsearch"]

Action = tuple[str, str | None]
"""One bulk item, serialised: the action line and the document line (None for a delete)."""

LABELS: dict[str, str] = {"opensearch": "OpenSearch", "elasticsearch": "Elasticsearch"}

MAX_ERROR_CHARS = 500


def hint(kind: str) -> str:
    """What to do when no node of ``kind`` answers."""
    return f"start one with `stockbatch services up {kind}` or set STOCKBATCH_SEARCH__URL"


class SearchError(RuntimeError):
    """A search operation failed (the message says which and why)."""


class SearchUnavailable(SearchError):
    """The search node cannot be reached within a bounded time (one-line message)."""


class IndexMissing(SearchError):
    """The index or alias asked for does not exist (yet)."""


def _as_is(item: Action) -> Action:
    # The items are already JSON: both clients' serializers pass strings through.
    return item


class SearchBackend(ABC):
    """The operations stockbatch needs from a search engine, with uniform errors."""

    kind: ClassVar[BackendKind]

    def __init__(self, url: str, client: Any) -> None:
        self.url = url
        self.client = client
        """The engine's own client, for what this interface does not cover."""

    @property
    def label(self) -> str:
        """``OpenSearch`` or ``Elasticsearch``."""
        return LABELS[self.kind]

    # ------------------------------------------------------------------ error mapping

    @abstractmethod
    def _unreachable(self, exc: BaseException) -> str | None:
        """The reason when ``exc`` means the node could not be reached, else None."""

    @abstractmethod
    def _not_found(self, exc: BaseException) -> bool:
        """True when ``exc`` is the engine's 404."""

    @abstractmethod
    def _refused(self, exc: BaseException) -> bool:
        """True when ``exc`` is any other transport or API error of the client."""

    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Translate the client's exceptions raised inside into this module's three."""
        try:
            yield
        except SearchError:
            raise
        except Exception as exc:
            reason = self._unreachable(exc)
            if reason is not None:
                raise SearchUnavailable(
                    f"{self.label} at {self.url} is unreachable ({reason}): {hint(self.kind)}"
                ) from exc
            if self._not_found(exc):
                raise IndexMissing(f"{what}: not found on {self.label} at {self.url}") from exc
            if self._refused(exc):
                raise SearchError(
                    f"{self.label} refused {what}: {str(exc)[:MAX_ERROR_CHARS]}"
                ) from exc
            raise

    # ------------------------------------------------------------------ cluster

    @abstractmethod
    def health(self, timeout: float | None = None) -> dict[str, Any]:
        """``GET /_cluster/health``."""

    @abstractmethod
    def wait_yellow(self, index: str, timeout_s: int) -> None:
        """Wait until ``index``'s primaries are allocated (at most ``timeout_s``)."""

    @abstractmethod
    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Any REST call (``"GET"``, ``"/_cat/indices"``): for tests and tools."""

    # ------------------------------------------------------------------ indices

    @abstractmethod
    def put_index_template(self, name: str, body: dict[str, Any]) -> None:
        """Create or replace the composable index template ``name``."""

    @abstractmethod
    def create_index(
        self, name: str, settings: dict[str, Any], mappings: dict[str, Any]
    ) -> None: ...

    # The calls below are spelled the same by both clients: one implementation here.

    def index_exists(self, name: str) -> bool:
        """True when the index (or alias) ``name`` exists."""
        with self.errors(f"HEAD {name}"):
            return bool(self.client.indices.exists(index=name))

    def delete_indices(self, names: list[str]) -> None:
        """Delete the indices ``names`` (nothing when empty)."""
        if names:
            with self.errors(f"deleting {', '.join(names)}"):
                self.client.indices.delete(index=",".join(names))

    @abstractmethod
    def list_indices(self, pattern: str) -> list[str]:
        """Concrete indices matching ``pattern``, closed and hidden ones included, sorted."""

    @abstractmethod
    def put_settings(self, index: str, settings: dict[str, Any]) -> None: ...

    @abstractmethod
    def mapping(self, index: str) -> dict[str, Any]:
        """The ``mappings`` of ``index`` (``_meta`` and ``properties``)."""

    @abstractmethod
    def put_mapping_meta(self, index: str, meta: dict[str, Any]) -> None:
        """Replace the mapping ``_meta`` of ``index``."""

    @abstractmethod
    def refresh(self, index: str, timeout: float) -> None: ...

    def count(self, index: str) -> int:
        """Searchable documents in ``index`` (after its last refresh)."""
        with self.errors(f"counting {index}"):
            return int(self.client.count(index=index)["count"])

    @abstractmethod
    def alias_targets(self, alias: str) -> list[str]:
        """The indices ``alias`` points at, sorted ([] when it does not exist)."""

    @abstractmethod
    def update_aliases(self, actions: list[dict[str, Any]]) -> None:
        """One atomic ``POST _aliases``."""

    # ------------------------------------------------------------------ documents

    @abstractmethod
    def bulk(
        self,
        index: str,
        chunk: list[Action],
        *,
        max_retries: int,
        initial_backoff: float,
        timeout: float,
    ) -> tuple[int, list[dict[str, Any]]]:
        """Index ``chunk`` in one ``_bulk`` request (429s retried with back-off); returns
        the number indexed and the failed items."""

    @abstractmethod
    def search(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST <index>/_search``; :class:`IndexMissing` when ``index`` does not exist."""

    def get_source(self, index: str, doc_id: str) -> dict[str, Any]:
        """The stored document ``doc_id``; :class:`IndexMissing` when there is none."""
        with self.errors(f"document {doc_id!r} of {index}"):
            return dict(self.client.get(index=index, id=doc_id)["_source"])

    @abstractmethod
    def scan(self, index: str, size: int = 2_000) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every document of ``index`` as ``(_id, _source)``, in no particular order
        (a scroll: for checks and exports, not for the API)."""

    def close(self) -> None:
        """Release the client's connections."""
        with contextlib.suppress(Exception):
            self.client.close()


# ============================================================================ OpenSearch


class OpenSearchBackend(SearchBackend):
    """OpenSearch through ``opensearch-py``."""

    kind = "opensearch"

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        timeout: float,
        username: str | None,
        password: str | None,
        api_key: str | None,
        ca_file: str | None,
        verify_certs: bool,
        pool_size: int,
    ) -> OpenSearchBackend:
        """A client of the node at ``url`` (not yet checked)."""
        from opensearchpy import OpenSearch

        if api_key is not None:
            raise SearchError(
                "search.api_key is an Elasticsearch setting: OpenSearch authenticates with "
                "search.username and search.password"
            )
        auth = (username, password) if username is not None and password is not None else None
        tls: dict[str, Any] = {"verify_certs": verify_certs}
        if ca_file:
            tls["ca_certs"] = ca_file
        client = OpenSearch(
            hosts=[url],
            http_auth=auth,
            timeout=timeout,
            # Failures surface at once: connect()'s deadline and the callers' retries
            # own retrying.
            max_retries=0,
            retry_on_timeout=False,
            pool_maxsize=max(1, pool_size),
            **tls,
        )
        return cls(url, client)

    def _unreachable(self, exc: BaseException) -> str | None:
        from opensearchpy.exceptions import ConnectionError as OSConnectionError

        if isinstance(exc, OSConnectionError):  # ConnectionTimeout is a subclass
            return type(exc.info).__name__ if exc.info is not None else type(exc).__name__
        return None

    def _not_found(self, exc: BaseException) -> bool:
        from opensearchpy.exceptions import NotFoundError

        return isinstance(exc, NotFoundError)

    def _refused(self, exc: BaseException) -> bool:
        from opensearchpy.exceptions import OpenSearchException

        return isinstance(exc, OpenSearchException)

    def health(self, timeout: float | None = None) -> dict[str, Any]:
        with self.errors("GET _cluster/health"):
            opts = {"request_timeout": timeout} if timeout is not None else {}
            return dict(self.client.cluster.health(**opts))

    def wait_yellow(self, index: str, timeout_s: int) -> None:
        with self.errors(f"the health of {index}"):
            # request_timeout must be given: without it the client applies `timeout`.
            self.client.cluster.health(
                index=index,
                wait_for_status="yellow",
                timeout=f"{timeout_s}s",
                request_timeout=timeout_s + 5,
            )

    def request(self, method: str, path: str, body: Any = None) -> Any:
        with self.errors(f"{method} {path}"):
            return self.client.transport.perform_request(method, path, body=body)

    def put_index_template(self, name: str, body: dict[str, Any]) -> None:
        with self.errors(f"the index template {name}"):
            self.client.indices.put_index_template(name=name, body=body)

    def create_index(self, name: str, settings: dict[str, Any], mappings: dict[str, Any]) -> None:
        with self.errors(f"creating {name}"):
            self.client.indices.create(
                index=name, body={"settings": settings, "mappings": mappings}
            )

    def list_indices(self, pattern: str) -> list[str]:
        with self.errors(f"listing {pattern}"):
            try:
                return sorted(self.client.indices.get(index=pattern, expand_wildcards="all"))
            except Exception as exc:
                if self._not_found(exc):
                    return []
                raise

    def put_settings(self, index: str, settings: dict[str, Any]) -> None:
        with self.errors(f"the settings of {index}"):
            self.client.indices.put_settings(index=index, body={"index": settings})

    def mapping(self, index: str) -> dict[str, Any]:
        with self.errors(f"the mapping of {index}"):
            found = self.client.indices.get_mapping(index=index)
        return dict(found.get(index, {}).get("mappings", {}))

    def put_mapping_meta(self, index: str, meta: dict[str, Any]) -> None:
        with self.errors(f"the mapping _meta of {index}"):
            self.client.indices.put_mapping(index=index, body={"_meta": meta})

    def refresh(self, index: str, timeout: float) -> None:
        with self.errors(f"refreshing {index}"):
            self.client.indices.refresh(index=index, request_timeout=timeout)

    def alias_targets(self, alias: str) -> list[str]:
        with self.errors(f"the alias {alias}"):
            try:
                return sorted(self.client.indices.get_alias(name=alias))
            except Exception as exc:
                if self._not_found(exc):
                    return []
                raise

    def update_aliases(self, actions: list[dict[str, Any]]) -> None:
        with self.errors("POST _aliases"):
            self.client.indices.update_aliases(body={"actions": actions})

    def bulk(
        self,
        index: str,
        chunk: list[Action],
        *,
        max_retries: int,
        initial_backoff: float,
        timeout: float,
    ) -> tuple[int, list[dict[str, Any]]]:
        from opensearchpy.helpers import streaming_bulk

        with self.errors(f"a _bulk request to {index}"):
            failures = [
                info
                for ok, info in streaming_bulk(
                    self.client,
                    chunk,
                    chunk_size=len(chunk),
                    expand_action_callback=_as_is,
                    raise_on_error=False,
                    max_retries=max_retries,
                    initial_backoff=initial_backoff,  # type: ignore[arg-type]
                    max_backoff=30,
                    yield_ok=False,
                    index=index,
                    request_timeout=timeout,
                )
                if not ok
            ]
        return len(chunk) - len(failures), failures

    def search(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.errors(f"a search of {index}"):
            return dict(self.client.search(index=index, body=body))

    def scan(self, index: str, size: int = 2_000) -> Iterator[tuple[str, dict[str, Any]]]:
        from opensearchpy.helpers import scan

        with self.errors(f"a scroll of {index}"):
            for hit in scan(self.client, index=index, size=size, preserve_order=False):
                yield hit["_id"], hit["_source"]


# ============================================================================ Elasticsearch


class ElasticsearchBackend(SearchBackend):
    """Elasticsearch through the official ``elasticsearch`` 8.x client (keyword
    arguments, never ``body=``, which the 9.x client no longer takes)."""

    kind = "elasticsearch"

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        timeout: float,
        username: str | None,
        password: str | None,
        api_key: str | None,
        ca_file: str | None,
        verify_certs: bool,
        pool_size: int,
    ) -> ElasticsearchBackend:
        """A client of the node at ``url`` (not yet checked)."""
        try:
            from elasticsearch import Elasticsearch
        except ImportError as exc:
            raise SearchError(
                "search.kind=elasticsearch needs the elasticsearch client: install the "
                "elasticsearch extra (scripts/setup.sh does)"
            ) from exc
        opts: dict[str, Any] = {}
        if api_key is not None:
            opts["api_key"] = api_key
        elif username is not None and password is not None:
            opts["basic_auth"] = (username, password)
        if url.startswith("https:"):
            opts["verify_certs"] = verify_certs
            if ca_file:
                opts["ca_certs"] = ca_file
        # The transport logs a warning per failed request to a node ("putting on 1 second
        # timeout"); the SearchUnavailable raised instead already says it, in one line.
        logging.getLogger("elastic_transport.node_pool").setLevel(logging.ERROR)
        client = Elasticsearch(
            url,
            request_timeout=timeout,
            max_retries=0,
            retry_on_timeout=False,
            connections_per_node=max(1, pool_size),
            **opts,
        )
        return cls(url, client)

    def _unreachable(self, exc: BaseException) -> str | None:
        from elastic_transport import ConnectionError as ESConnectionError
        from elastic_transport import ConnectionTimeout

        # Unlike opensearch-py's, this client's ConnectionTimeout is not a ConnectionError:
        # both mean no answer in bounded time, so both are "unreachable" here.
        if isinstance(exc, ESConnectionError | ConnectionTimeout):
            # The urllib3 error underneath (NewConnectionError...), as opensearch-py reports.
            return type(exc.__cause__ or exc).__name__
        return None

    def _not_found(self, exc: BaseException) -> bool:
        from elasticsearch import NotFoundError

        return isinstance(exc, NotFoundError)

    def _refused(self, exc: BaseException) -> bool:
        from elastic_transport import TransportError
        from elasticsearch import ApiError, UnsupportedProductError

        return isinstance(exc, ApiError | TransportError | UnsupportedProductError)

    def _with(self, timeout: float | None) -> Any:
        return self.client.options(request_timeout=timeout) if timeout else self.client

    def health(self, timeout: float | None = None) -> dict[str, Any]:
        with self.errors("GET _cluster/health"):
            return dict(self._with(timeout).cluster.health().body)

    def wait_yellow(self, index: str, timeout_s: int) -> None:
        with self.errors(f"the health of {index}"):
            self._with(timeout_s + 5).cluster.health(
                index=index, wait_for_status="yellow", timeout=f"{timeout_s}s"
            )

    def request(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"accept": "application/json"}
        if body is not None:
            headers["content-type"] = "application/json"
        with self.errors(f"{method} {path}"):
            resp = self.client.perform_request(method, path, headers=headers, body=body)
        return resp.body

    def put_index_template(self, name: str, body: dict[str, Any]) -> None:
        # The client names the `_meta` key `meta`.
        kwargs = {("meta" if k == "_meta" else k): v for k, v in body.items()}
        with self.errors(f"the index template {name}"):
            self.client.indices.put_index_template(name=name, **kwargs)

    def create_index(self, name: str, settings: dict[str, Any], mappings: dict[str, Any]) -> None:
        with self.errors(f"creating {name}"):
            self.client.indices.create(index=name, settings=settings, mappings=mappings)

    def list_indices(self, pattern: str) -> list[str]:
        with self.errors(f"listing {pattern}"):
            try:
                found = self.client.indices.get(index=pattern, expand_wildcards="all")
            except Exception as exc:
                if self._not_found(exc):
                    return []
                raise
        return sorted(found.body)

    def put_settings(self, index: str, settings: dict[str, Any]) -> None:
        with self.errors(f"the settings of {index}"):
            self.client.indices.put_settings(index=index, settings={"index": settings})

    def mapping(self, index: str) -> dict[str, Any]:
        with self.errors(f"the mapping of {index}"):
            found = self.client.indices.get_mapping(index=index).body
        return dict(found.get(index, {}).get("mappings", {}))

    def put_mapping_meta(self, index: str, meta: dict[str, Any]) -> None:
        with self.errors(f"the mapping _meta of {index}"):
            self.client.indices.put_mapping(index=index, meta=meta)

    def refresh(self, index: str, timeout: float) -> None:
        with self.errors(f"refreshing {index}"):
            self._with(timeout).indices.refresh(index=index)

    def alias_targets(self, alias: str) -> list[str]:
        with self.errors(f"the alias {alias}"):
            try:
                found = self.client.indices.get_alias(name=alias)
            except Exception as exc:
                if self._not_found(exc):
                    return []
                raise
        return sorted(found.body)

    def update_aliases(self, actions: list[dict[str, Any]]) -> None:
        with self.errors("POST _aliases"):
            self.client.indices.update_aliases(actions=actions)

    def bulk(
        self,
        index: str,
        chunk: list[Action],
        *,
        max_retries: int,
        initial_backoff: float,
        timeout: float,
    ) -> tuple[int, list[dict[str, Any]]]:
        from elasticsearch.helpers import streaming_bulk

        with self.errors(f"a _bulk request to {index}"):
            failures = [
                info
                for ok, info in streaming_bulk(
                    # Per-request timeouts go through options(): the helper's own
                    # request_timeout argument is deprecated in the 8.x client.
                    self.client.options(request_timeout=timeout),
                    chunk,  # type: ignore[arg-type]  # pre-serialised pairs, passed through
                    chunk_size=len(chunk),
                    expand_action_callback=_as_is,  # type: ignore[arg-type]
                    raise_on_error=False,
                    max_retries=max_retries,
                    initial_backoff=initial_backoff,
                    max_backoff=30,
                    yield_ok=False,
                    index=index,
                )
                if not ok
            ]
        return len(chunk) - len(failures), failures

    def search(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        kwargs = {("source" if k == "_source" else k): v for k, v in body.items()}
        with self.errors(f"a search of {index}"):
            return dict(self.client.search(index=index, **kwargs).body)

    def scan(self, index: str, size: int = 2_000) -> Iterator[tuple[str, dict[str, Any]]]:
        from elasticsearch.helpers import scan

        with self.errors(f"a scroll of {index}"):
            for hit in scan(self.client, index=index, size=size, preserve_order=False):
                yield hit["_id"], hit["_source"]


BACKENDS: dict[str, type[OpenSearchBackend] | type[ElasticsearchBackend]] = {
    "opensearch": OpenSearchBackend,
    "elasticsearch": ElasticsearchBackend,
}
"""The backend class of each ``search.kind``."""
