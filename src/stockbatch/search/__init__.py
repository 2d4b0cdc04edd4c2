"""The search side of stockbatch: one interface, two engines — OpenSearch
(``opensearch-py``) and Elasticsearch (``elasticsearch`` 8.x), chosen by
``search.kind``.

- :func:`connect` / :func:`connect_settings`: a checked
  :class:`~stockbatch.search.backend.SearchBackend`, or
  :class:`SearchUnavailable` (one line) when no node answers in bounded time.
- :func:`sync_search`: load gold into fresh indices and swap the aliases
  atomically; skipped when the live index already holds this content
  (``**load_options(settings.search)`` passes the configured options).
- :func:`search_instruments`, :func:`quarterly_stats`, :func:`index_status`:
  the queries of the API and the dashboard.

Index templates and mappings: :mod:`stockbatch.search.indices`. The local node:
``stockbatch services up opensearch|elasticsearch`` (:mod:`stockbatch.services`).
"""

from stockbatch.search.client import (
    IndexMissing,
    SearchBackend,
    SearchError,
    SearchUnavailable,
    connect,
    connect_settings,
    health,
)
from stockbatch.search.indices import DATASETS, TEMPLATE_VERSION, Dataset
from stockbatch.search.load import (
    IndexLoadStats,
    SearchLoadStats,
    bulk_index,
    ensure_templates,
    load_options,
    sync_search,
)
from stockbatch.search.queries import index_status, quarterly_stats, search_instruments

__all__ = [
    "DATASETS",
    "TEMPLATE_VERSION",
    "Dataset",
    "IndexLoadStats",
    "IndexMissing",
    "SearchBackend",
    "SearchError",
    "SearchLoadStats",
    "SearchUnavailable",
    "bulk_index",
    "connect",
    "connect_settings",
    "ensure_templates",
    "health",
    "index_status",
    "load_options",
    "quarterly_stats",
    "search_instruments",
    "sync_search",
]
