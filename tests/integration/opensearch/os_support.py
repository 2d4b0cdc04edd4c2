"""Types the OpenSearch fixtures hand to the tests (importable by the test modules)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from opensearchpy import OpenSearch

from stockbatch import lake, schema
from stockbatch.search import connect
from stockbatch.services.opensearch import OpenSearchService
from stockbatch.settings import Settings
from support.services import RunningService


@dataclass
class OpenSearchNode(RunningService[OpenSearchService]):
    """A running local node: its URL, its home and its service handle."""

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``; stays the same across restarts."""
        return self.service.url

    def client(self, timeout: float = 30.0) -> OpenSearch:
        """A checked client of this node."""
        return connect(self.url, timeout)


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
