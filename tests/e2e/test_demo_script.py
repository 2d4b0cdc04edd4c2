"""The README's first command: `bash scripts/demo.sh` runs the pipeline on the demo data,
then serves the dashboard with a demo login it prints once; Ctrl-C stops it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(600)
def test_demo_ends_serving_the_dashboard(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "STOCKBATCH_HOME": str(tmp_path / "home"),
        "STOCKBATCH_API__PORT": str(port),
    }
    log = tmp_path / "demo.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            ["bash", "scripts/demo.sh"], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 420
        login = None
        while time.monotonic() < deadline and proc.poll() is None:
            login = re.search(r"log in as: (\S+) / (\S+)", log.read_text())
            if login:
                try:
                    if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
            time.sleep(0.5)
        assert proc.poll() is None, "demo.sh exited:\n" + log.read_text()[-3000:]
        assert login is not None, log.read_text()[-3000:]
        user, password = login.groups()
        with httpx.Client(base_url=base, timeout=10) as client:
            assert client.get("/", follow_redirects=False).status_code == 303  # to the login
            form = client.get("/login").text
            csrf = re.search(r'name="csrf" value="([^"]+)"', form)
            assert csrf is not None
            r = client.post(
                "/login",
                data={"username": user, "password": password, "csrf": csrf[1], "next": "/"},
                follow_redirects=True,
            )
            assert r.status_code == 200, r.text[:500]
            assert "demo" in r.text and "succeeded" in r.text  # the overview with the run
        # Ctrl-C stops the server (SIGINT to the foreground group, as a terminal sends it).
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) in (0, -signal.SIGINT, 130)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    assert "Traceback" not in text
    assert password not in (tmp_path / "home").joinpath("warehouse.db").read_bytes().decode(
        "latin-1"
    )
