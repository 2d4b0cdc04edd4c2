"""``stockbatch serve --tls``: a real uvicorn on a free port speaking HTTPS with a
certificate from the home's CA (or the configured pair), verified by httpx against the
CA file; plain HTTP and clients that do not trust the CA get nothing."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stockbatch.services import tls


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _trusting(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


class Serve:
    """``stockbatch serve`` as a subprocess (the operator's command), stopped by ``stop``."""

    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.log = home / f"serve-{self.port}.log"
        with self.log.open("w") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stockbatch.cli", "serve", "--host", "127.0.0.1",
                 "--port", str(self.port), "--search", "none", *args],
                env={**os.environ, "STOCKBATCH_HOME": str(home), **(env or {})},
                stdout=fh, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def wait_https(self, ca_file: Path) -> httpx.Response:
        """The first answer of ``/healthz`` over HTTPS, verified against ``ca_file``."""
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, "serve exited:\n" + self.log.read_text()[-3000:]
            try:  # serve writes the CA (when it issues) before it listens
                return httpx.get(
                    f"https://127.0.0.1:{self.port}/healthz", verify=_trusting(ca_file), timeout=2
                )
            except FileNotFoundError:
                pass
            except httpx.ConnectError as exc:
                # Refused while uvicorn starts; a TLS failure would be the bug under test.
                assert "CERTIFICATE_VERIFY_FAILED" not in str(exc), exc
            assert time.monotonic() < deadline, "never answered:\n" + self.log.read_text()
            time.sleep(0.2)

    def stop(self) -> str:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.log.read_text()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Serve]:
    """``serve --tls`` on an empty home: no cert configured, so the home's CA issues one."""
    server = Serve(tmp_path, "--tls")
    try:
        yield server
    finally:
        log = server.stop()
        assert "Traceback" not in log, log[-5000:]


def test_serve_tls_uses_a_certificate_from_the_home_ca(served: Serve, tmp_path: Path) -> None:
    ca = tls.ca_file(tmp_path)
    response = served.wait_https(ca)
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert (tmp_path / "services" / "tls" / "api.pem").exists()
    # localhost is certified too (SAN), so a browser on http(s)://localhost works.
    by_name = httpx.get(f"https://localhost:{served.port}/healthz", verify=_trusting(ca), timeout=5)
    assert by_name.status_code == 200
    # A client that does not trust the CA refuses the server; plain HTTP gets no answer.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"https://127.0.0.1:{served.port}/healthz", timeout=5)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{served.port}/healthz", timeout=5)
    assert f"clients verify it with {ca}" in " ".join(served.log.read_text().split())


def test_serve_tls_uses_the_configured_pair(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"  # a certificate from another CA, as an operator's own
    pair = tls.issue(other, "proxy")
    home = tmp_path / "home"
    home.mkdir()
    server = Serve(
        home,
        env={
            "STOCKBATCH_API__TLS": "true",
            "STOCKBATCH_API__CERT_FILE": str(pair.cert_file),
            "STOCKBATCH_API__KEY_FILE": str(pair.key_file),
        },
    )
    try:
        assert server.wait_https(pair.ca_file).status_code == 200
        assert not tls.ca_file(home).exists()  # the home's CA was not needed
    finally:
        assert "Traceback" not in server.stop()


def test_a_cert_without_its_key_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "stockbatch.cli", "serve", "--tls", "--search", "none"],
        env={
            **os.environ,
            "STOCKBATCH_HOME": str(tmp_path),
            "STOCKBATCH_API__CERT_FILE": str(tmp_path / "c.pem"),
            "COLUMNS": "200",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "api.cert_file and api.key_file go together" in " ".join(done.stderr.split())
