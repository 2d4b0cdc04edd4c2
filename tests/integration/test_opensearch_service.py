"""The local OpenSearch node: lifecycle, recorded endpoint, health (restarts and a
node down, for both engines: tests/integration/search/test_search_nodes.py), and its
security: TLS on HTTP and transport, no anonymous access, no password in sight, and
``--insecure`` (users and roles on real data: tests/integration/search/
test_opensearch_security.py)."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import pytest
from typer.testing import CliRunner

from integration.search.search_support import OpenSearchNode
from stockbatch.cli.services import app as services_app
from stockbatch.search import health
from stockbatch.services import recorded_endpoints, tls
from stockbatch.services.endpoints import effective_search_url
from stockbatch.services.opensearch import (
    INSECURE_WARNING,
    OPENSEARCH_VERSION,
    OpenSearchService,
    probe_opensearch,
)
from stockbatch.services.system import ServiceError
from stockbatch.settings import SearchSettings, Settings

pytestmark = [pytest.mark.integration, pytest.mark.opensearch]


def test_up_records_a_healthy_loopback_node(opensearch_node: OpenSearchNode) -> None:
    status = opensearch_node.service.status()
    assert status.running, status
    assert status.endpoint["url"] == opensearch_node.url
    assert opensearch_node.url.startswith("https://127.0.0.1:")
    record = recorded_endpoints(opensearch_node.home)["opensearch"]
    assert record["url"] == opensearch_node.url
    assert record["tls"] is True
    assert record["ca_file"] == str(tls.ca_file(opensearch_node.home))
    assert Path(record["ca_file"]).exists()
    assert record["username"] == "loader" and record["password"]
    assert record["reader_username"] == "reader" and record["reader_password"]
    assert record["admin_username"] == "admin" and record["admin_password"]
    assert len({record["password"], record["reader_password"], record["admin_password"]}) == 3
    # status is for humans and logs: no password in it.
    assert not {"password", "reader_password", "admin_password"} & set(status.endpoint)
    assert record["version"] == OPENSEARCH_VERSION
    assert record["pid"] == status.pid
    info = opensearch_node.backend().request("GET", "/")
    assert info["version"]["number"] == OPENSEARCH_VERSION
    assert health(opensearch_node.backend())["status"] in ("green", "yellow")
    yml = (opensearch_node.service.config_dir / "opensearch.yml").read_text()
    assert "network.host: 127.0.0.1" in yml and "discovery.type: single-node" in yml
    assert "plugins.security.ssl.http.enabled: true" in yml


def test_up_again_keeps_the_running_node(opensearch_node: OpenSearchNode) -> None:
    pid = opensearch_node.service.status().pid
    again = OpenSearchService(opensearch_node.home).up()
    assert again.pid == pid
    assert again.endpoint["url"] == opensearch_node.url


def test_services_status_cli_lists_it(opensearch_node: OpenSearchNode) -> None:
    res = CliRunner().invoke(
        services_app, ["status", "opensearch", "--home", str(opensearch_node.home), "--json"]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)["opensearch"]
    assert doc["state"] == "running" and doc["endpoint"]["url"] == opensearch_node.url


def test_explicit_url_wins_over_the_recorded_one(opensearch_node: OpenSearchNode) -> None:
    recorded = Settings(home=opensearch_node.home)
    assert effective_search_url(recorded) == opensearch_node.url
    explicit = Settings(home=opensearch_node.home, search=SearchSettings(url="http://127.0.0.1:1"))
    assert effective_search_url(explicit) == "http://127.0.0.1:1"
    assert effective_search_url(Settings(home=opensearch_node.home / "elsewhere")) is None


# ----------------------------------------------------------------------------- security


def _get(url: str, *, auth: tuple[str, str] | None = None, cafile: Path | None = None) -> int:
    """Status of ``GET url`` (HTTPError statuses returned, not raised)."""
    request = urllib.request.Request(url)
    if auth:
        token = b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_plain_http_to_the_port_gets_no_answer(opensearch_node: OpenSearchNode) -> None:
    plain = opensearch_node.url.replace("https://", "http://")
    with pytest.raises((OSError, http.client.HTTPException)):
        _get(f"{plain}/_cluster/health")
    assert not probe_opensearch(plain)


def test_no_credentials_is_401_and_a_wrong_password_too(opensearch_node: OpenSearchNode) -> None:
    ca = opensearch_node.service.ca_file
    assert ca is not None
    url = f"{opensearch_node.url}/_cluster/health"
    assert _get(url, cafile=ca) == 401
    assert _get(url, auth=("loader", "not-the-password"), cafile=ca) == 401
    assert _get(url, auth=opensearch_node.service.credentials("reader"), cafile=ca) == 200
    # The probes take the same credentials and CA.
    admin = opensearch_node.service.credentials("admin")
    assert probe_opensearch(opensearch_node.url, auth=admin, ca_file=ca)
    assert not probe_opensearch(opensearch_node.url, ca_file=ca)


def test_another_ca_fails_tls_verification(opensearch_node: OpenSearchNode, tmp_path: Path) -> None:
    other = tls.ensure_ca(tmp_path / "other-home").cert_file
    with pytest.raises(urllib.error.URLError) as caught:
        _get(opensearch_node.url, auth=opensearch_node.service.credentials("admin"), cafile=other)
    assert isinstance(caught.value.reason, ssl.SSLCertVerificationError), caught.value
    assert not probe_opensearch(
        opensearch_node.url, auth=opensearch_node.service.credentials("admin"), ca_file=other
    )


def test_transport_port_refuses_a_plain_connection(opensearch_node: OpenSearchNode) -> None:
    state = json.loads((opensearch_node.service.dir / "state.json").read_text())
    port = int(state["transport_port"])
    # A plain (non-TLS) transport ping: "ES" + length -1. A plain transport would keep the
    # connection open; the TLS one reads garbage and closes it, or answers a TLS alert.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"ES\xff\xff\xff\xff" * 4)
        try:
            answer = sock.recv(64)
        except (ConnectionResetError, TimeoutError) as exc:
            answer = type(exc).__name__.encode()
    assert answer == b"" or answer[:1] == b"\x15" or answer == b"ConnectionResetError", answer
    # ...while a TLS client trusting the home's CA gets the node's certificate.
    context = ssl.create_default_context(cafile=str(opensearch_node.service.ca_file))
    context.check_hostname = False
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw) as wrapped,
    ):
        subject = dict(item[0] for item in wrapped.getpeercert()["subject"])
    assert subject["commonName"] == "opensearch"


def test_no_password_in_the_command_line_or_the_logs(opensearch_node: OpenSearchNode) -> None:
    service = opensearch_node.service
    pid = service.status().pid
    assert pid is not None
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    passwords = [service.credentials(u)[1] for u in ("admin", "loader", "reader")]  # type: ignore[index]
    logs = [service.log_file, service.stdout_file, *service.log_file.parent.glob("*.log")]
    for text in [cmdline, *(p.read_text(errors="replace") for p in logs if p.exists())]:
        for password in passwords:
            assert password not in text
    # The generated files that hold them (or their hashes) are the owner's only.
    for path in (service.dir / "state.json", service.config_dir / "opensearch-security"):
        assert path.stat().st_mode & 0o077 == 0, path


def test_insecure_node_is_plain_http_with_a_warning(tmp_path: Path) -> None:
    service = OpenSearchService(tmp_path / "home", insecure=True, heap="384m")
    try:
        status = service.up()
        assert status.running, status
        assert INSECURE_WARNING in service.warnings
        record = recorded_endpoints(service.home)["opensearch"]
        assert record["url"].startswith("http://127.0.0.1:") and record["tls"] is False
        assert "password" not in record and record["ca_file"] is None
        assert _get(f"{record['url']}/_cluster/health") == 200  # no credentials needed
        # Switching the running node to TLS is refused, not done silently.
        with pytest.raises(ServiceError, match="services down opensearch"):
            OpenSearchService(service.home).up()
    finally:
        service.down()


def test_data_of_a_newer_release_is_refused_with_what_to_do(tmp_path: Path) -> None:
    # A home made before the move from 2.19.6 to 2.19.4: the node cannot open its data.
    service = OpenSearchService(tmp_path / "home")
    (service.data_dir / "nodes").mkdir(parents=True)
    (service.dir / "state.json").write_text(json.dumps({"version": "2.19.6"}))
    try:
        with pytest.raises(ServiceError, match=r"written by 2\.19\.6.*down --purge opensearch"):
            service.up()
        assert service.status().pid is None  # nothing was started
    finally:
        service.down()
