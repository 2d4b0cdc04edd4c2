"""The search interface without a node: folding, the instrument query's shape (user text
only ever a value), and what each backend says when nothing listens or a setting does not
apply to it. Behaviour against real nodes: tests/integration/search."""

from __future__ import annotations

import json
import socket
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stockbatch.search import SearchError, SearchUnavailable, connect
from stockbatch.search.indices import INSTRUMENTS, fold
from stockbatch.search.queries import MAX_FUZZY_WORDS, instrument_query
from stockbatch.settings import Settings


def test_fold_drops_accents_and_case() -> None:
    assert fold("Société Générale") == "societe generale"
    assert fold("Nestlé S.A.") == "nestle s.a."
    assert fold("Ünïcödé") == "unicode"
    assert fold("株式会社") == "株式会社"  # no accents to drop: unchanged
    assert fold("ﬁnance") == "finance"  # compatibility forms too (NFKD)


@given(st.text(max_size=40))
def test_fold_is_idempotent(text: str) -> None:
    assert fold(fold(text)) == fold(text)


def _values(node: object) -> list[object]:
    """Every leaf value of a query body."""
    if isinstance(node, dict):
        return [v for value in node.values() for v in _values(value)]
    if isinstance(node, list):
        return [v for item in node for v in _values(item)]
    return [node]


@pytest.mark.parametrize(
    "text", ["AAPL", '{"query":{"match_all":{}}}', "a* OR b", "'; DROP TABLE x; --", "Société"]
)
def test_user_text_is_only_a_value_never_a_query_string(text: str) -> None:
    query = instrument_query(text)
    body = json.dumps(query)
    assert "query_string" not in body and "wildcard" not in body and "regexp" not in body
    values = _values(query)
    assert text in values  # the symbol clauses take it verbatim
    assert fold(text) in values  # the name clauses take it folded
    should = query["bool"]["should"]
    assert should[0] == {
        "term": {"symbol": {"value": text, "case_insensitive": True, "boost": 100.0}}
    }
    assert should[1]["prefix"]["symbol"]["case_insensitive"] is True


def test_long_queries_are_not_fuzzy() -> None:
    short = " ".join(["word"] * MAX_FUZZY_WORDS)
    long = " ".join(["word"] * (MAX_FUZZY_WORDS + 1))
    assert "fuzziness" in json.dumps(instrument_query(short))
    assert "fuzziness" not in json.dumps(instrument_query(long))


def test_instrument_mapping_needs_no_analysis_plugin() -> None:
    body = json.dumps(INSTRUMENTS.template("stockbatch"))
    for needs_plugin in ("edge_ngram", "asciifolding", "normalizer", "search_as_you_type"):
        assert needs_plugin not in body
    assert INSTRUMENTS.mappings["_source"] == {"excludes": ["name_folded"]}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("kind", ["opensearch", "elasticsearch"])
def test_nothing_listening_is_one_bounded_line(kind: str) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with pytest.raises(SearchUnavailable) as caught:
        connect(url, timeout=1.0, kind=kind)
    assert time.monotonic() - started < 5.0
    message = str(caught.value)
    assert "\n" not in message and url in message, message
    assert f"services up {kind}" in message and "(NewConnectionError)" in message, message


def test_settings_that_do_not_apply_are_clear_errors() -> None:
    with pytest.raises(SearchError, match="api_key is an Elasticsearch setting"):
        connect("http://127.0.0.1:9", timeout=0.5, kind="opensearch", api_key="abc")
    with pytest.raises(SearchError, match="unknown search kind"):
        connect("http://127.0.0.1:9", timeout=0.5, kind="solr")


def test_the_recorded_node_of_the_configured_kind_is_used(tmp_path: object) -> None:
    from pathlib import Path

    from stockbatch.services.endpoints import effective_search_url

    home = Path(str(tmp_path))
    (home / "services.json").write_text(
        json.dumps(
            {
                "opensearch": {"url": "http://127.0.0.1:1001"},
                "elasticsearch": {"url": "http://127.0.0.1:1002"},
            }
        )
    )
    es = Settings(home=home, search={"kind": "elasticsearch"})
    os_ = Settings(home=home, search={"kind": "opensearch"})
    assert effective_search_url(es) == "http://127.0.0.1:1002"
    assert effective_search_url(os_) == "http://127.0.0.1:1001"
    explicit = Settings(home=home, search={"kind": "elasticsearch", "url": "https://es:9200"})
    assert effective_search_url(explicit) == "https://es:9200"


def test_a_recorded_secured_node_gives_its_users_and_ca(tmp_path: object) -> None:
    """The record of a secured node fills user, password and CA: the loader for the
    pipeline, the reader for the API; explicit settings win field by field, and an
    explicit URL ignores the record (it describes another node)."""
    from pathlib import Path

    from stockbatch.services.endpoints import effective_search_settings

    home = Path(str(tmp_path))
    record = {
        "url": "https://127.0.0.1:1001",
        "username": "loader",
        "password": "loader-pw",
        "reader_username": "reader",
        "reader_password": "reader-pw",
        "ca_file": str(home / "ca.pem"),
    }
    (home / "services.json").write_text(json.dumps({"opensearch": record}))
    settings = Settings(home=home, search={"kind": "opensearch"})
    loader = effective_search_settings(settings)
    assert (loader.url, loader.username, loader.ca_file) == (
        "https://127.0.0.1:1001",
        "loader",
        home / "ca.pem",
    )
    assert loader.password is not None and loader.password.get_secret_value() == "loader-pw"
    reader = effective_search_settings(settings, "reader")
    assert reader.username == "reader"
    assert reader.password is not None and reader.password.get_secret_value() == "reader-pw"
    mine = Settings(home=home, search={"kind": "opensearch", "username": "me"})
    assert effective_search_settings(mine).username == "me"
    elsewhere = Settings(home=home, search={"kind": "opensearch", "url": "https://os:9200"})
    assert effective_search_settings(elsewhere).username is None
