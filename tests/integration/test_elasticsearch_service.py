"""The local Elasticsearch node (`stockbatch services up elasticsearch`): one real node
per module, started through the CLI, as an unprivileged user when the tests run as
root, secured by x-pack security (TLS on HTTP and transport, the file realm's
admin/loader/reader); what each user may do, what the node refuses, that no password
leaks; then one smoke test of `--insecure` (security off) on its own home."""

from __future__ import annotations

import json
import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from stockbatch.cli.services import app as services_app
from stockbatch.search import SearchUnavailable, connect, connect_settings
from stockbatch.services import recorded_endpoints, tls
from stockbatch.services.elasticsearch import ELASTICSEARCH_VERSION, ElasticsearchService
from stockbatch.services.system import pid_alive, process_cmdline
from stockbatch.settings import Settings
from support.services import remove_server_home, server_home

pytestmark = [pytest.mark.integration]


def _node_pids(service: ElasticsearchService) -> list[int]:
    """Every process of this node: the CLI launcher and the server JVM it started."""
    config = str(service.config_dir)
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cmd = " ".join(process_cmdline(int(entry.name)))
            if "org.elasticsearch" in cmd and (config in cmd or f"{service.dir}/" in cmd):
                pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def es_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A home where `services up elasticsearch` ran (always `down` at the end)."""
    home = server_home(tmp_path_factory, "es-home")
    started = time.monotonic()
    res = CliRunner().invoke(services_app, ["up", "elasticsearch", "--home", str(home)])
    try:
        if res.exit_code != 0:
            pytest.fail(f"services up elasticsearch failed:\n{res.output}", pytrace=False)
        print(f"elasticsearch up in {time.monotonic() - started:.1f} s")
        yield home
    finally:
        ElasticsearchService(home).down()
        remove_server_home(home)


@pytest.fixture(scope="module")
def record(es_home: Path) -> dict[str, object]:
    return dict(recorded_endpoints(es_home)["elasticsearch"])


@pytest.fixture(scope="module")
def url(record: dict[str, object]) -> str:
    return str(record["url"])


def _client(url: str, record: dict[str, object], user: str | None) -> httpx.Client:
    """An HTTPS client trusting the recorded CA, logged in as ``user`` (None: anonymous)."""
    auth = None
    if user is not None:
        prefix = "" if user == "loader" else f"{user}_"
        auth = (str(record[f"{prefix}username"]), str(record[f"{prefix}password"]))
    context = ssl.create_default_context(cafile=str(record["ca_file"]))
    return httpx.Client(base_url=url, auth=auth, verify=context, timeout=30)


def test_up_records_an_https_node_with_users(es_home: Path, record: dict[str, object]) -> None:
    url = str(record["url"])
    assert url.startswith("https://127.0.0.1:")
    assert record["tls"] is True
    assert record["ca_file"] == str(tls.ca_file(es_home)) and Path(str(record["ca_file"])).exists()
    assert (record["username"], record["reader_username"], record["admin_username"]) == (
        "loader",
        "reader",
        "admin",
    )
    passwords = {record["password"], record["reader_password"], record["admin_password"]}
    assert len(passwords) == 3 and all(len(str(p)) >= 24 for p in passwords)
    with _client(url, record, "admin") as http:
        health = http.get("/_cluster/health").json()
        assert health["status"] in ("green", "yellow"), health
        # `GET /` (the rest-root module) is not in the minimal distribution: ask the node.
        nodes = http.get("/_nodes/_local").json()["nodes"]
        assert [n["version"] for n in nodes.values()] == [ELASTICSEARCH_VERSION]
        assert http.get("/_license").json()["license"]["type"] == "basic"
    assert record["version"] == ELASTICSEARCH_VERSION
    assert pid_alive(int(str(record["pid"])))
    service = ElasticsearchService(es_home)
    assert str(service.data_dir).startswith(str(es_home / "services" / "elasticsearch"))
    yml = (service.config_dir / "elasticsearch.yml").read_text()
    assert "discovery.type: single-node" in yml and "network.host: 127.0.0.1" in yml
    assert "xpack.security.enabled: true" in yml
    # The state file with the passwords is the owner's alone.
    assert (service.dir / "state.json").stat().st_mode & 0o077 == 0


def test_node_runs_unprivileged(es_home: Path) -> None:
    """Elasticsearch refuses root: as root the node runs as PostgreSQL's service user."""
    service = ElasticsearchService(es_home)
    pids = _node_pids(service)
    assert len(pids) == 2, pids  # the CLI launcher and the server JVM
    uids = {
        int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0]) for pid in pids
    }
    assert 0 not in uids
    if os.geteuid() != 0:
        assert uids == {os.geteuid()}


def test_loader_indexes_with_a_mapping_and_searches(url: str, record: dict[str, object]) -> None:
    index = "stockbatch-es-check"
    mapping = {
        "settings": {"number_of_shards": 1, "number_of_replicas": 0},
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "symbol": {"type": "keyword"},
                "name": {"type": "text"},
                "close": {"type": "double"},
            },
        },
    }
    with _client(url, record, "loader") as http:
        created = http.put(f"/{index}", json=mapping)
        assert created.status_code == 200, created.text
        docs = [
            {"symbol": "AAPL", "name": "Apple Inc.", "close": 190.5},
            {"symbol": "MSFT", "name": "Microsoft Corporation", "close": 410.0},
            {"symbol": "AMZN", "name": "Amazon.com Inc.", "close": 180.25},
        ]
        lines = "".join(json.dumps({"index": {}}) + "\n" + json.dumps(d) + "\n" for d in docs)
        bulk = http.post(
            f"/{index}/_bulk",
            params={"refresh": "true"},
            content=lines,
            headers={"content-type": "application/x-ndjson"},
        )
        assert bulk.status_code == 200 and not bulk.json()["errors"], bulk.text
        # A strict mapping refuses unknown fields.
        bad = http.post(f"/{index}/_doc", json={"symbol": "X", "oops": 1})
        assert bad.status_code == 400
        found = http.post(
            f"/{index}/_search",
            json={
                "query": {"match": {"name": "microsoft"}},
                "aggs": {"avg_close": {"avg": {"field": "close"}}},
            },
        ).json()
        hits = found["hits"]["hits"]
        assert [h["_source"]["symbol"] for h in hits] == ["MSFT"]
        terms = http.post(
            f"/{index}/_search",
            json={"size": 0, "aggs": {"by_symbol": {"terms": {"field": "symbol"}}}},
        ).json()
        keys = sorted(b["key"] for b in terms["aggregations"]["by_symbol"]["buckets"])
        assert keys == ["AAPL", "AMZN", "MSFT"]
        # Aliases and index templates of its own prefix: what the search load does.
        alias = http.post(
            "/_aliases", json={"actions": [{"add": {"index": index, "alias": "stockbatch-es-a"}}]}
        )
        assert alias.status_code == 200, alias.text
        template = http.put(
            "/_index_template/stockbatch-es-t",
            json={"index_patterns": ["stockbatch-es-t-*"], "template": {"settings": {}}},
        )
        assert template.status_code == 200, template.text
        assert http.delete("/_index_template/stockbatch-es-t").status_code == 200
        assert http.delete(f"/{index}").status_code == 200


def test_plain_http_is_refused(url: str) -> None:
    plain = url.replace("https://", "http://")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{plain}/_cluster/health", timeout=5)


def test_no_or_wrong_credentials_get_401(url: str, record: dict[str, object]) -> None:
    with _client(url, record, None) as http:
        assert http.get("/_cluster/health").status_code == 401
    context = ssl.create_default_context(cafile=str(record["ca_file"]))
    wrong = httpx.get(f"{url}/_cluster/health", auth=("loader", "not-it"), verify=context)
    assert wrong.status_code == 401


def test_another_ca_fails_verification(url: str, record: dict[str, object], tmp_path: Path) -> None:
    """A client trusting another CA (or the system's) refuses the node's certificate."""
    other = tls.ensure_ca(tmp_path)
    context = ssl.create_default_context(cafile=str(other.cert_file))
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{url}/_cluster/health", auth=("admin", "x"), verify=context, timeout=5)
    with pytest.raises(SearchUnavailable, match=r"SSLError|certificate"):
        connect(
            url,
            2.0,
            kind="elasticsearch",
            username="loader",
            password="x",
            ca_file=str(other.cert_file),
        )


def test_reader_searches_but_cannot_write(url: str, record: dict[str, object]) -> None:
    index = "stockbatch-es-reader"
    with _client(url, record, "loader") as loader:
        assert loader.put(f"/{index}").status_code == 200
        loader.post(f"/{index}/_doc", params={"refresh": "true"}, json={"v": 1})
        try:
            with _client(url, record, "reader") as reader:
                found = reader.post(f"/{index}/_search", json={"query": {"match_all": {}}})
                assert found.status_code == 200 and found.json()["hits"]["total"]["value"] == 1
                assert reader.get("/_cluster/health").status_code == 200
                assert reader.post(f"/{index}/_doc", json={"v": 2}).status_code == 403
                assert reader.delete(f"/{index}").status_code == 403
                assert reader.put("/stockbatch-es-by-reader").status_code == 403
        finally:
            assert loader.delete(f"/{index}").status_code == 200


def test_loader_cannot_touch_other_indices_or_security(url: str, record: dict[str, object]) -> None:
    with _client(url, record, "admin") as admin:
        assert admin.put("/other-es-index").status_code == 200
        try:
            with _client(url, record, "loader") as loader:
                assert loader.put("/not-stockbatch").status_code == 403
                assert loader.delete("/other-es-index").status_code == 403
                assert loader.post("/other-es-index/_doc", json={"v": 1}).status_code == 403
                assert loader.get("/other-es-index/_search").status_code == 403
                assert loader.get("/.security/_search").status_code == 403
                assert loader.get("/_security/user").status_code == 403
                setting = {"persistent": {"cluster.routing.allocation.enable": "all"}}
                assert loader.put("/_cluster/settings", json=setting).status_code == 403
        finally:
            assert admin.delete("/other-es-index").status_code == 200


def test_transport_port_speaks_tls_only(es_home: Path) -> None:
    """The node-to-node port: plain bytes get no answer but a closed connection; a TLS
    client with a certificate of the home's CA completes the handshake."""
    service = ElasticsearchService(es_home)
    port = int(json.loads((service.dir / "state.json").read_text())["transport_port"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        # A transport ping in clear: marker "ES" and a length of -1.
        sock.sendall(b"ES\xff\xff\xff\xff")
        try:
            answer = sock.recv(64)
        except ConnectionResetError:
            answer = b""
        assert answer == b""
    issued = tls.issue(es_home, "elasticsearch")
    context = ssl.create_default_context(cafile=str(issued.ca_file))
    context.load_cert_chain(str(issued.cert_file), str(issued.key_file))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls_sock,
    ):
        cert = tls_sock.getpeercert()
        assert cert is not None
        subject = dict(pair[0] for pair in cert["subject"])
        assert subject["commonName"] == "elasticsearch"


def test_recorded_settings_reach_the_node_without_configuration(es_home: Path) -> None:
    """`stockbatch run --search elasticsearch` with nothing configured: the recorded URL,
    loader, password and CA file are used (and the CA is verified)."""
    settings = Settings(home=es_home, search={"kind": "elasticsearch"})  # type: ignore[arg-type]
    backend = connect_settings(settings, timeout=30)
    try:
        assert backend.health()["status"] in ("green", "yellow")
    finally:
        backend.close()


def test_no_password_on_command_lines_or_in_logs(es_home: Path, record: dict[str, object]) -> None:
    service = ElasticsearchService(es_home)
    passwords = [str(record[k]) for k in ("password", "reader_password", "admin_password")]
    pids = _node_pids(service)
    assert pids
    for pid in pids:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        for password in passwords:
            assert password not in cmdline and password not in environ
    logs = [p for p in service.dir.rglob("*") if p.is_file() and p.suffix in (".log", ".out")]
    assert service.log_file in logs
    for path in logs:
        text = path.read_text(errors="replace")
        for password in passwords:
            assert password not in text, path
    # The node's config holds hashes, never the passwords themselves.
    users = (service.config_dir / "users").read_text()
    assert all(p not in users for p in passwords) and users.count("$2a$") == 3
    status = CliRunner().invoke(
        services_app, ["status", "elasticsearch", "--home", str(es_home), "--json"]
    )
    assert status.exit_code == 0 and all(p not in status.output for p in passwords)


def test_up_insecure_on_the_secured_node_is_refused(es_home: Path) -> None:
    res = CliRunner().invoke(
        services_app, ["up", "elasticsearch", "--home", str(es_home), "--insecure"]
    )
    assert res.exit_code != 0
    assert "already runs" in res.output and "with security" in res.output


def test_services_status_shows_it_running(es_home: Path, url: str) -> None:
    res = CliRunner().invoke(
        services_app, ["status", "elasticsearch", "--home", str(es_home), "--json"]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)["elasticsearch"]
    assert doc["state"] == "running", doc
    assert doc["endpoint"]["url"] == url
    assert doc["endpoint"]["ca_file"] and "password" not in doc["endpoint"]


def test_services_down_leaves_no_process(es_home: Path, url: str) -> None:
    """Last of the secured node: `services down` stops the launcher and the server JVM."""
    service = ElasticsearchService(es_home)
    assert _node_pids(service)
    res = CliRunner().invoke(services_app, ["down", "elasticsearch", "--home", str(es_home)])
    assert res.exit_code == 0, res.output
    deadline = time.monotonic() + 10
    while _node_pids(service) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _node_pids(service) == []
    assert "elasticsearch" not in recorded_endpoints(es_home)
    assert not service.status().running
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/_cluster/health", timeout=2, verify=False)


def test_insecure_smoke(tmp_path_factory: pytest.TempPathFactory) -> None:
    """`--insecure`: security off (plain HTTP, no users), said in a warning."""
    home = server_home(tmp_path_factory, "es-insecure-home")
    try:
        res = CliRunner().invoke(
            services_app, ["up", "elasticsearch", "--home", str(home), "--insecure"]
        )
        assert res.exit_code == 0, res.output
        assert "WARNING" in res.output and "WITHOUT security" in res.output
        rec = recorded_endpoints(home)["elasticsearch"]
        assert rec["url"].startswith("http://127.0.0.1:") and rec["tls"] is False
        assert "password" not in rec and "ca_file" not in rec
        health = httpx.get(f"{rec['url']}/_cluster/health", timeout=10).json()
        assert health["status"] in ("green", "yellow"), health
        yml = (ElasticsearchService(home).config_dir / "elasticsearch.yml").read_text()
        assert "xpack.security.enabled: false" in yml and "network.host: 127.0.0.1" in yml
    finally:
        ElasticsearchService(home).down()
        remove_server_home(home)
