"""What the search interface does when its node restarts or goes away, on both engines:
data and port survive a restart, and a node down is :class:`SearchUnavailable` (one
line, bounded time, how to start one) for a new connection and for a backend made
while it was up."""

from __future__ import annotations

import time

import pytest

from integration.search.search_support import SearchNode
from stockbatch.search import IndexMissing, SearchUnavailable, connect, search_instruments
from stockbatch.services import recorded_endpoints

pytestmark = [pytest.mark.integration, pytest.mark.search]


def test_restart_keeps_port_and_data(search_node: SearchNode) -> None:
    backend = search_node.backend()
    backend.delete_indices([i for i in backend.list_indices("restart-check") if i])
    backend.create_index("restart-check", {"index": {"number_of_replicas": 0}}, {})
    backend.request("PUT", "/restart-check/_doc/1?refresh=true", {"v": "kept"})
    url, pid = search_node.url, search_node.service.status().pid
    try:
        status = search_node.service.restart()
        assert status.running and status.pid != pid
        assert search_node.url == url
        assert search_node.backend().get_source("restart-check", "1") == {"v": "kept"}
    finally:
        search_node.ensure_running()
        search_node.backend().delete_indices(["restart-check"])
    with pytest.raises(IndexMissing):
        search_node.backend().get_source("restart-check", "1")


def test_node_down_is_search_unavailable_within_bounded_time(search_node: SearchNode) -> None:
    backend = search_node.backend()
    url, kind = search_node.url, search_node.kind
    try:
        assert search_node.service.down() is True
        assert search_node.service.status().state == "stopped"
        assert kind not in recorded_endpoints(search_node.home)

        started = time.monotonic()
        with pytest.raises(SearchUnavailable) as caught:
            connect(url, timeout=2.0, kind=kind)
        assert time.monotonic() - started < 6.0
        message = str(caught.value)
        assert "\n" not in message and url in message, message
        assert f"services up {kind}" in message, message

        # A backend made while the node was up fails the same way, just as fast.
        started = time.monotonic()
        with pytest.raises(SearchUnavailable) as again:
            search_instruments(backend, "AAPL")
        assert time.monotonic() - started < 6.0
        assert "\n" not in str(again.value) and kind in str(again.value).lower()
    finally:
        search_node.ensure_running()
    assert search_node.url == url
    assert recorded_endpoints(search_node.home)[kind]["url"] == url
