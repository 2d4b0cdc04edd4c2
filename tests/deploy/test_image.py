"""The stockbatch image, built and run for real with podman (runc).

scripts/build-image.sh builds a Debian bookworm base locally (debootstrap; no registry
is reachable here) and the image of deploy/Dockerfile on it, with this machine's pip
configuration and CA as build secrets. The tests then run the pipeline inside a
container on the demo data, compare its exports with a run on the host, serve the API
from a container and ask its HEALTHCHECK, and rebuild after a code change to show that
only the last layers are rebuilt.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from stockbatch.cli import app

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/stockbatch:test"
BASE = "localhost/stockbatch-base:bookworm"
UID = 10001
AS_OF = "2023-06-30"
# The image carries the embedded engine and the distributed backends' clients, not
# Airflow or Spark (docs/deployment.md): a budget that catches one slipping in.
MAX_IMAGE_MB = 1100


def podman_env() -> dict[str, str]:
    """podman with the project's containers.conf (runc, no default ulimits)."""
    return {**os.environ, "CONTAINERS_CONF": str(REPO / "deploy" / "podman" / "containers.conf")}


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``podman --runtime runc ARGS``; a failure shows podman's own output."""
    res = subprocess.run(
        ["podman", "--runtime", "runc", *args],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert res.returncode == 0, f"podman {' '.join(args)}: {res.stdout}\n{res.stderr}"
    return res


def build(tag: str, repo: Path, base: str | None = None) -> str:
    """Build the image from ``repo`` with scripts/build-image.sh; its log."""
    env = {**podman_env(), "IMAGE": tag, "NICE": "0"}
    if base:
        env["BASE_IMAGE"] = base
    res = subprocess.run(
        ["bash", str(repo / "scripts" / "build-image.sh")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream: podman's step and cache lines in order
        text=True,
        timeout=1200,
    )
    log = res.stdout
    assert res.returncode == 0, log[-4000:]
    return log


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """The image, built once for the module (the base image is reused if present)."""
    if shutil.which("podman") is None:
        pytest.fail("podman is missing: scripts/setup-services.sh installs it (apt-get)")
    log = build(IMAGE, REPO)
    sizes = [line for line in log.splitlines() if line.startswith("size: ")]
    print("\n".join(sizes))
    yield IMAGE
    podman("rmi", "--force", IMAGE, check=False)


def run_in_container(image: str, data: Path, *args: str) -> str:
    """``stockbatch ARGS`` in a throwaway container, home on the mounted ``data``,
    without a network (the embedded pipeline needs none)."""
    res = podman(
        "run",
        "--rm",
        "--network",
        "none",
        "--no-healthcheck",
        "--volume",
        f"{data}:/home/stockbatch/data",
        image,
        *args,
    )
    return res.stdout + res.stderr


@pytest.fixture(scope="module")
def container_home(image: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home written by the pipeline inside the container (lake, warehouse, exports)."""
    data = tmp_path_factory.mktemp("container-home")
    os.chown(data, UID, UID)  # the image's user owns its home volume, as in Kubernetes
    out = run_in_container(
        image, data, "run", "--source", "kaggle", "--path", "/app/data/demo/kaggle",
        "--as-of", AS_OF, "-q",
    )  # fmt: skip
    assert "succeeded" in out, out
    for table in ("quarterly", "daily"):
        run_in_container(
            image, data, "export", table, "--out", f"/home/stockbatch/data/exports/{table}.parquet"
        )
    return data


@pytest.fixture(scope="module")
def host_home(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Path:
    """The same pipeline and exports on the host (in-process CLI)."""
    home = tmp_path_factory.mktemp("host-home")
    runner = CliRunner()
    env = {"STOCKBATCH_HOME": str(home)}
    commands = [
        ["run", "--source", "kaggle", "--path", str(demo_data), "--as-of", AS_OF, "-q"],
        ["export", "quarterly", "--out", str(home / "exports" / "quarterly.parquet")],
        ["export", "daily", "--out", str(home / "exports" / "daily.parquet")],
    ]
    for args in commands:
        res = runner.invoke(app, args, env=env, catch_exceptions=False)
        assert res.exit_code == 0, res.output
    return home


def test_image_metadata(image: str) -> None:
    """Non-root by number, a healthcheck, OCI labels, the CLI as entry point, a size
    within budget, and none of the build's index configuration in the runtime."""
    info = json.loads(podman("image", "inspect", image).stdout)[0]
    config = info["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["stockbatch"]
    # podman 4 shows the docker-format HEALTHCHECK at the top level, Docker under Config
    healthcheck = info.get("Healthcheck") or config.get("Healthcheck") or {}
    assert "healthcheck.py" in " ".join(healthcheck.get("Test", [])), info.keys()
    labels = config["Labels"]
    for key in ("title", "version", "revision", "created", "source", "licenses"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert labels["org.opencontainers.image.revision"] != "unknown"
    size_mb = info["Size"] / 1e6
    print(f"image size: {size_mb:.0f} MB")
    assert size_mb < MAX_IMAGE_MB, f"{size_mb:.0f} MB > {MAX_IMAGE_MB} MB"
    # The build secrets were mounted for single RUN steps: neither they nor the script
    # that reads them are in the runtime image, and no layer's command names their content.
    probe = podman(
        "run", "--rm", "--network", "none", "--no-healthcheck", "--entrypoint", "/bin/sh",
        image, "-c",
        "ls /run/secrets 2>/dev/null; ls /usr/local/lib/stockbatch-build 2>/dev/null; "
        "ls /etc/pip.conf /opt/uv 2>/dev/null; command -v uv pip gcc || true",
    )  # fmt: skip
    assert probe.stdout.strip() == "", probe.stdout
    history = podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert "index-url" not in history and "BEGIN CERTIFICATE" not in history


def test_pipeline_in_container_equals_host(container_home: Path, host_home: Path) -> None:
    """The exports of the container's run equal the host's, column for column."""
    for table in ("quarterly", "daily"):
        inside = pl.read_parquet(container_home / "exports" / f"{table}.parquet")
        outside = pl.read_parquet(host_home / "exports" / f"{table}.parquet")
        assert inside.height > 0
        assert_frame_equal(inside, outside)
    runner = CliRunner()
    counts = []
    for home in (container_home, host_home):
        res = runner.invoke(
            app, ["runs", "--last", "--json"], env={"STOCKBATCH_HOME": str(home)},
            catch_exceptions=False,
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        run = json.loads(res.output)
        counts.append({k: run[k] for k in ("rows_in", "rows_clean", "rows_quarantined")})
    assert counts[0] == counts[1]


def test_container_writes_as_its_non_root_user(container_home: Path) -> None:
    """Everything the container wrote on the volume belongs to uid 10001, not root."""
    owners = {p.stat().st_uid for p in container_home.rglob("*")}
    assert owners == {UID}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_api_container_is_healthy_and_non_root(image: str, container_home: Path) -> None:
    """``stockbatch serve`` in a container: its HEALTHCHECK passes, /healthz answers on
    the host, and the serving process runs as uid 10001."""
    port = free_port()
    name = f"stockbatch-api-test-{port}"
    podman(
        "run", "--detach", "--name", name, "--network", "host",
        "--volume", f"{container_home}:/home/stockbatch/data",
        "--env", f"STOCKBATCH_API__PORT={port}",
        image, "serve", "--host", "127.0.0.1",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        health = podman("healthcheck", "run", name, check=False)
        while health.returncode != 0 and time.monotonic() < deadline:
            time.sleep(1)
            health = podman("healthcheck", "run", name, check=False)
        logs = podman("logs", name, check=False)
        assert health.returncode == 0, f"{health.stdout}{health.stderr}\n{logs.stderr[-3000:]}"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert response.status == 200
        users = podman("top", name, "huser", "user", "args").stdout
        serving = [line for line in users.splitlines() if "serve" in line]
        assert serving, users
        for line in serving:
            assert line.split()[0] == str(UID) and line.split()[1] == "stockbatch", users
    finally:
        podman("rm", "--force", "--time", "2", name, check=False)


def step_cache(log: str) -> dict[str, bool]:
    """``{instruction: reused from cache}`` of each RUN/COPY step of a podman build log."""
    steps: dict[str, bool] = {}
    current = None
    for line in log.splitlines():
        match = re.match(r"\[\d+/\d+\] STEP \d+/\d+: (.*)", line)
        if match:
            instruction = match.group(1)
            current = instruction if instruction.startswith(("RUN ", "COPY ")) else None
            if current:
                steps[current] = False
        elif current and line.startswith("--> Using cache"):
            steps[current] = True
    return steps


def test_code_change_rebuilds_only_the_last_layers(
    image: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A changed source file reuses the dependency layers (the lock did not change) and
    rebuilds only the wheel and the project's layer."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    repo = tmp_path / "repo"
    for name in filter(None, tracked):
        src = REPO / name.decode()
        if src.is_file():
            dst = repo / name.decode()
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    init = repo / "src" / "stockbatch" / "__init__.py"
    # Unique, so no earlier run's layers (the cache outlives removed images) match it.
    marker = f"# a code change {uuid.uuid4()}"
    init.write_text(init.read_text() + f"\n{marker}\n")
    tag = "localhost/stockbatch:test-rebuild"
    log = build(tag, repo, base=BASE)
    request.addfinalizer(lambda: podman("rmi", "--force", tag, check=False))
    steps = step_cache(log)
    shown = "\n".join(
        f"{'cached ' if hit else 'rebuilt'} {step[:90]}" for step, hit in steps.items()
    )
    deps = [s for s in steps if "uv pip install" in s and "requirements.lock" in s]
    wheel = [s for s in steps if "uv build --wheel" in s]
    assert deps and all(steps[s] for s in deps), shown
    assert wheel and not any(steps[s] for s in wheel), shown
    # The runtime reuses its dependency layers and reinstalls the project.
    venv = [s for s in steps if s.startswith("COPY --from=build /opt/venv")]
    assert venv and all(steps[s] for s in venv), shown
    project = [s for s in steps if "stockbatch-*.whl" in s]
    assert project and not any(steps[s] for s in project), shown
    # ...and the image holds the changed code (a stale reused layer would not).
    out = podman(
        "run", "--rm", "--network", "none", "--no-healthcheck", "--entrypoint", "/bin/sh", tag,
        "-c", "tail -n 1 /opt/venv/lib/python3.11/site-packages/stockbatch/__init__.py",
    ).stdout  # fmt: skip
    assert marker in out, out


@pytest.fixture
def secrets() -> Iterator[Callable[[str, Path], str]]:
    """Create podman secrets from files (names unique to the test); removed at the end."""
    names: list[str] = []

    def create(name: str, path: Path) -> str:
        unique = f"sbtest-{uuid.uuid4().hex[:8]}-{name}"
        podman("secret", "create", unique, str(path))
        names.append(unique)
        return unique

    yield create
    for name in names:
        podman("secret", "rm", name, check=False)


def test_warehouse_on_postgresql_in_a_container(
    image: str,
    host_home: Path,
    tmp_path: Path,
    secrets: Callable[[str, Path], str],
) -> None:
    """The storage tier in a container too: PostgreSQL 15 from Debian on the local base
    (deploy/podman/postgres.Containerfile), TLS only; the pipeline container loads it
    through a URL secret with verify-full, and its exports equal the host's."""
    from stockbatch.services.tls import issue

    pg_image = "localhost/stockbatch-postgres:test"
    podman(
        "build", "--format", "docker", "--network", "host",
        "--build-arg", f"BASE_IMAGE={BASE}",
        "--file", str(REPO / "deploy" / "podman" / "postgres.Containerfile"),
        "--tag", pg_image, str(REPO / "deploy/podman"),
        timeout=900,
    )  # fmt: skip
    cert = issue(tmp_path / "tls-home", "postgresql", ["127.0.0.1", "localhost"])
    password = tmp_path / "pw"
    password.write_text(uuid.uuid4().hex)
    port = free_port()
    url = tmp_path / "url"
    url.write_text(
        f"postgresql+psycopg://stockbatch:{password.read_text()}@127.0.0.1:{port}/stockbatch"
        "?sslmode=verify-full&sslrootcert=/run/secrets/ca"
    )
    pw, crt, key = (secrets(n, p) for n, p in (("pw", password), ("crt", cert.cert_file),
                                                ("key", cert.key_file)))  # fmt: skip
    name = f"stockbatch-pg-test-{port}"
    podman(
        "run", "--detach", "--name", name, "--network", "host",
        "--secret", f"{pw},type=mount,uid=999,mode=0400",
        "--secret", f"{crt},type=mount,uid=999,mode=0444",
        "--secret", f"{key},type=mount,uid=999,mode=0400",
        "--env", f"POSTGRES_PASSWORD_FILE=/run/secrets/{pw}",
        "--env", f"POSTGRES_TLS_CERT_FILE=/run/secrets/{crt}",
        "--env", f"POSTGRES_TLS_KEY_FILE=/run/secrets/{key}",
        "--env", f"PGPORT={port}", "--env", "POSTGRES_LISTEN=127.0.0.1",
        pg_image,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while podman("healthcheck", "run", name, check=False).returncode != 0:
            assert time.monotonic() < deadline, podman("logs", name, check=False).stderr
            time.sleep(1)
        data = tmp_path / "home"
        data.mkdir()
        os.chown(data, UID, UID)
        ca = secrets("ca", cert.ca_file)
        wh = secrets("url", url)
        base_args = [
            "run", "--rm", "--network", "host", "--no-healthcheck",
            "--volume", f"{data}:/home/stockbatch/data",
            "--secret", f"{wh},type=mount,uid={UID},mode=0400,target=wh_url",
            "--secret", f"{ca},type=mount,uid={UID},mode=0444,target=ca",
            "--env", "STOCKBATCH_WAREHOUSE__KIND=postgresql",
            "--env", "STOCKBATCH_WAREHOUSE__URL_FILE=/run/secrets/wh_url",
            image,
        ]  # fmt: skip
        out = podman(
            *base_args, "run", "--source", "kaggle", "--path", "/app/data/demo/kaggle",
            "--as-of", AS_OF, "-q",
        )  # fmt: skip
        assert "succeeded" in out.stdout + out.stderr, out.stdout + out.stderr
        podman(*base_args, "export", "quarterly", "--out", "/home/stockbatch/data/q.parquet")
        host = pl.read_parquet(host_home / "exports" / "quarterly.parquet")
        assert_frame_equal(pl.read_parquet(data / "q.parquet"), host)
        # The host reaches the same rows over verified TLS; plain TCP is refused.
        import psycopg

        dsn = f"host=127.0.0.1 port={port} dbname=stockbatch user=stockbatch"
        with psycopg.connect(
            dsn, password=password.read_text(), sslmode="verify-full",
            sslrootcert=str(cert.ca_file),
        ) as conn:  # fmt: skip
            rows = conn.execute("SELECT count(*) FROM quarterly_features").fetchone()
            assert rows is not None and rows[0] == host.height
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn, password=password.read_text(), sslmode="disable")
    finally:
        podman("rm", "--force", "--time", "2", name, check=False)
        podman("rmi", "--force", pg_image, check=False)
