"""Types the search fixtures hand to the tests (importable by the test modules)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from stockbatch import lake, schema
from stockbatch.search import SearchBackend, connect
from stockbatch.services.elasticsearch import ElasticsearchService
from stockbatch.services.opensearch import OpenSearchService
from stockbatch.settings import Settings
from support.services import RunningService


@dataclass
class SearchNode(RunningService[Any]):
    """A running local search node: its URL, its home, its service handle, its kind."""

    kind = "opensearch"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``; stays the same across restarts."""
        return str(self.service.url)

    def backend(self, timeout: float = 30.0) -> SearchBackend:
        """A checked backend of this node."""
        return connect(self.url, timeout, kind=self.kind)

    def env(self, prefix: str) -> dict[str, str]:
        """The settings that point stockbatch at this node, with an index prefix."""
        return {
            "STOCKBATCH_SEARCH__KIND": self.kind,
            "STOCKBATCH_SEARCH__URL": self.url,
            "STOCKBATCH_SEARCH__INDEX_PREFIX": prefix,
        }


@dataclass
class OpenSearchNode(SearchNode):
    """An OpenSearch node (:class:`OpenSearchService`)."""

    service: OpenSearchService
    kind = "opensearch"


@dataclass
class ElasticsearchNode(SearchNode):
    """An Elasticsearch node (:class:`ElasticsearchService`)."""

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
