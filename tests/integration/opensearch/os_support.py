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


@dataclass
class OpenSearchNode:
    """A running local node: its URL, its home and its service handle."""

    service: OpenSearchService
    home: Path

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``; stays the same across restarts."""
        return self.service.url

    def client(self, timeout: float = 30.0) -> OpenSearch:
        """A checked client of this node."""
        return connect(self.url, timeout)

    def ensure_running(self) -> None:
        """Start the node again if a test stopped it (same port, same data)."""
        if not self.service.status().running:
            self.service.up()


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
