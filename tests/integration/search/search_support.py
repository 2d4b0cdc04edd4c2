"""Types the search fixtures hand to the tests (importable by the test modules)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import SecretStr

from stockbatch import lake, schema
from stockbatch.search import SearchBackend, connect
from stockbatch.services.elasticsearch import ElasticsearchService
from stockbatch.services.opensearch import OpenSearchService
from stockbatch.settings import Settings
from support.services import RunningService


@dataclass
class SearchNode(RunningService[Any]):
    """A running local search node: its URL, its home, its service handle, its kind.

    Secured unless started with ``insecure`` (TLS from its home's CA, users admin /
    loader / reader): its clients log in as ``admin`` (the tests use their own index
    prefixes, which the ``loader`` role does not cover) and verify the home's CA.
    """

    kind = "opensearch"

    @property
    def url(self) -> str:
        """``https://127.0.0.1:<port>`` (``http://`` when insecure); kept across restarts."""
        return str(self.service.url)

    def _login(self, user: str) -> tuple[str | None, str | None, Path | None]:
        creds = self.service.credentials(user)
        user_name, password = creds if creds else (None, None)
        return user_name, password, self.service.ca_file

    def search_fields(self, user: str = "admin") -> dict[str, Any]:
        """``SearchSettings`` fields reaching this node as ``user`` (url, credentials, CA)."""
        user_name, password, ca_file = self._login(user)
        return {
            "kind": self.kind,
            "url": self.url,
            "username": user_name,
            "password": SecretStr(password) if password else None,
            "ca_file": ca_file,
        }

    def backend(self, timeout: float = 30.0, user: str = "admin") -> SearchBackend:
        """A checked backend of this node, logged in as ``user``."""
        user_name, password, ca_file = self._login(user)
        return connect(
            self.url,
            timeout,
            kind=self.kind,
            username=user_name,
            password=password,
            ca_file=str(ca_file) if ca_file else None,
        )

    def env(self, prefix: str) -> dict[str, str]:
        """The settings that point stockbatch at this node (as ``admin``), with a prefix."""
        values = {
            "STOCKBATCH_SEARCH__KIND": self.kind,
            "STOCKBATCH_SEARCH__URL": self.url,
            "STOCKBATCH_SEARCH__INDEX_PREFIX": prefix,
        }
        user_name, password, ca_file = self._login("admin")
        if user_name and password:
            values |= {
                "STOCKBATCH_SEARCH__USERNAME": user_name,
                "STOCKBATCH_SEARCH__PASSWORD": password,
                "STOCKBATCH_SEARCH__CA_FILE": str(ca_file),
            }
        return values


@dataclass
class OpenSearchNode(SearchNode):
    """An OpenSearch node (:class:`OpenSearchService`, security plugin)."""

    service: OpenSearchService
    kind = "opensearch"


@dataclass
class ElasticsearchNode(SearchNode):
    """An Elasticsearch node (:class:`ElasticsearchService`, x-pack security, file realm)."""

    service: ElasticsearchService
    kind = "elasticsearch"


@dataclass
class Gold:
    """The gold layer of one pipeline run, as the search load takes it."""

    settings: Settings
    instruments: pa.Table
    quarterly: pa.Table
    daily_files: list[Path]
    checksums: dict[str, str]

    @property
    def daily_rows(self) -> int:
        """Rows over every daily gold file."""
        return sum(lake.read_canonical(p, schema.DAILY_FEATURES).num_rows for p in self.daily_files)
