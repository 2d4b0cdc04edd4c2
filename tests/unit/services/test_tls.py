"""The local CA (services/tls.py): made once, private keys 0600, certificates that a real
TLS client verifies against ca.pem for 127.0.0.1 and localhost."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.verification import PolicyBuilder, Store

from stockbatch.services import tls


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_ca_is_made_once_and_reused(tmp_path: Path) -> None:
    ca = tls.ensure_ca(tmp_path)
    assert ca.cert_file == tmp_path.resolve() / "services" / "tls" / "ca.pem"
    assert _mode(ca.key_file) == 0o600
    assert _mode(ca.cert_file) == 0o644
    first = ca.cert_file.read_bytes(), ca.key_file.read_bytes()
    again = tls.ensure_ca(tmp_path)
    assert (again.cert_file.read_bytes(), again.key_file.read_bytes()) == first
    cert = _cert(ca.cert_file)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_half_a_ca_is_refused(tmp_path: Path) -> None:
    ca = tls.ensure_ca(tmp_path)
    ca.key_file.unlink()
    with pytest.raises(tls.ServiceError, match="without its pair"):
        tls.ensure_ca(tmp_path)


def test_issued_certificate_chains_to_the_ca_with_loopback_sans(tmp_path: Path) -> None:
    server = tls.issue(tmp_path, "postgresql")
    assert _mode(server.key_file) == 0o600
    assert server.ca_file == tls.ca_file(tmp_path)
    cert = _cert(server.cert_file)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    # The X.509 path validation of cryptography itself, as a TLS client does it.
    store = Store([_cert(server.ca_file)])
    for name in (
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.DNSName("localhost"),
    ):
        verifier = PolicyBuilder().store(store).build_server_verifier(name)
        chain = verifier.verify(cert, [])
        assert chain[-1] == _cert(server.ca_file)
    wrong = PolicyBuilder().store(store).build_server_verifier(x509.DNSName("example.org"))
    with pytest.raises(x509.verification.VerificationError):
        wrong.verify(cert, [])


def test_reissue_reuses_a_valid_pair_and_renews_for_new_hosts(tmp_path: Path) -> None:
    first = tls.issue(tmp_path, "api")
    pem = first.cert_file.read_bytes()
    assert tls.issue(tmp_path, "api").cert_file.read_bytes() == pem
    wider = tls.issue(tmp_path, "api", hosts=["127.0.0.1", "localhost", "stock.local"])
    assert wider.cert_file.read_bytes() != pem
    san = _cert(wider.cert_file).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "stock.local" in san.value.get_values_for_type(x509.DNSName)


def test_key_types(tmp_path: Path) -> None:
    assert isinstance(
        _cert(tls.issue(tmp_path, "a").cert_file).public_key(), ec.EllipticCurvePublicKey
    )
    rsa_cert = _cert(tls.issue(tmp_path, "b", key_type="rsa").cert_file)
    public = rsa_cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048


def test_python_ssl_handshake_verifies_against_ca_pem(tmp_path: Path) -> None:
    """A real handshake on loopback: the standard library's client, hostname checked."""
    server = tls.issue(tmp_path, "echo")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server.cert_file, server.key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as s:
            s.sendall(b"ok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(server.ca_file))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
    ):
        assert s.recv(2) == b"ok"
    thread.join(5)
    listener.close()


def test_pkcs12_boundary_for_java_servers(tmp_path: Path) -> None:
    server = tls.issue(tmp_path, "kafka")
    p12 = tls.write_pkcs12(server, "changeit")
    assert p12 == server.cert_file.with_suffix(".p12") and _mode(p12) == 0o600
    loaded = pkcs12.load_pkcs12(p12.read_bytes(), b"changeit")
    assert loaded.cert is not None and loaded.cert.certificate == _cert(server.cert_file)
    assert [c.certificate for c in loaded.additional_certs] == [_cert(server.ca_file)]
