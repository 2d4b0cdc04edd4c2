"""The compose stack (deploy/compose.yaml): valid against the Compose Specification,
parsed by podman-compose, every service healthchecked, pinned, limited and networked,
and every STOCKBATCH_* variable a real setting. Fast: no image, no container, no network.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.deploy.settings_vars import unknown_variables

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
BIN = Path(sys.executable).parent

# ${NAME}, ${NAME:-default}, ${NAME-default}; "$${...}" is an escaped dollar, not one.
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")
STOCKBATCH_NAME = re.compile(r"\bSTOCKBATCH_[A-Z0-9_]*[A-Z0-9]")


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():  # installed by the lock (check-jsonschema, podman-compose)
        pytest.fail(f"{path} is missing: run scripts/setup.sh")
    return str(path)


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return _run([_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)])


def _interpolate(value: str) -> str:
    """``value`` with every ``${NAME:-default}`` replaced by its default (what compose
    does with an empty environment)."""
    return INTERPOLATION.sub(lambda m: m.group(2) or "", value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


# ----------------------------------------------------------------------------- schema


def test_compose_file_matches_the_compose_specification() -> None:
    result = _validate(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validator_rejects_an_invalid_file(tmp_path: Path) -> None:
    """The check above can fail: an unknown key in a service is refused."""
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    data["services"]["api"]["helthcheck"] = {"test": ["CMD", "true"]}
    broken = tmp_path / "compose.yaml"
    broken.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = _validate(broken)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "helthcheck" in result.stdout + result.stderr


def test_podman_compose_parses_the_file(tmp_path: Path) -> None:
    """podman-compose (the tool `podman compose` runs here) reads the file and the
    example .env, and sees every service; secret files need not exist for `config`."""
    env = {**os.environ, "CONTAINERS_CONF": str(DEPLOY / "podman" / "containers.conf")}
    result = _run(
        [_tool("podman-compose"), "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE), "config"],
        cwd=tmp_path,
        env=env,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    parsed = yaml.safe_load(result.stdout)
    assert set(parsed["services"]) == set(
        yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    ), output


# ----------------------------------------------------------------------------- services


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    missing = [
        name
        for name, s in services.items()
        if not (s.get("healthcheck") or {}).get("test") or s["healthcheck"].get("disable")
    ]
    assert not missing, f"services without a healthcheck: {missing}"


def test_every_image_is_pinned_by_a_version_tag(services: dict[str, dict[str, Any]]) -> None:
    bad = {}
    for name, s in services.items():
        image = _interpolate(str(s.get("image", "")))
        last = image.rsplit("/", 1)[-1]
        tag = last.split(":", 1)[1] if ":" in last else ""
        if "@" in image or not re.search(r"\d", tag) or tag == "latest":
            bad[name] = image
    assert not bad, f"images not pinned by a version tag: {bad}"


def test_depends_on_waits_for_healthy_services(services: dict[str, dict[str, Any]]) -> None:
    bad = []
    for name, s in services.items():
        deps = s.get("depends_on") or {}
        if isinstance(deps, list):  # the short form has no condition
            bad += [f"{name} -> {d}" for d in deps]
            continue
        for dep, spec in deps.items():
            if (spec or {}).get("condition") != "service_healthy" or dep not in services:
                bad.append(f"{name} -> {dep}")
    assert not bad, f"depends_on without condition service_healthy: {bad}"


def test_every_service_has_limits_and_a_network(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    for name, s in services.items():
        limits = ((s.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        assert limits.get("cpus") and limits.get("memory"), f"{name}: no cpus/memory limits"
        networks = s.get("networks") or []
        assert networks, f"{name}: no network"
        assert set(networks) <= set(compose["networks"]), f"{name}: undeclared network"


def test_kafka_is_a_three_node_kraft_cluster(services: dict[str, dict[str, Any]]) -> None:
    brokers = {n: s for n, s in services.items() if s["image"].startswith("apache/kafka:")}
    assert len(brokers) == 3
    ids = {_environment(s)["KAFKA_NODE_ID"] for s in brokers.values()}
    assert ids == {"1", "2", "3"}
    for s in brokers.values():
        env = _environment(s)
        assert "controller" in env["KAFKA_PROCESS_ROLES"]
        assert len(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == 3


def test_secrets_come_from_declared_files(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """Every top-level secret is a file under SB_SECRETS_DIR; every secret a service
    names is declared; every *_FILE variable and every path under /run/secrets a service
    sets points at a secret mounted in it."""
    declared = compose["secrets"]
    for name, spec in declared.items():
        assert spec["file"].startswith("${SB_SECRETS_DIR:-./compose/secrets}/"), name
    for name, s in services.items():
        mounted = {}
        for item in s.get("secrets") or []:
            source = item if isinstance(item, str) else item["source"]
            assert source in declared, f"{name}: undeclared secret {source}"
            target = source if isinstance(item, str) else item.get("target", source)
            mounted[target if target.startswith("/") else f"/run/secrets/{target}"] = source
        for var, value in _environment(s).items():
            if var.endswith("_FILE") or value.startswith("/run/secrets/"):
                assert value in mounted, f"{name}: {var}={value} is not a mounted secret"
    committed = _run(["git", "ls-files", "deploy/compose/secrets"], cwd=ROOT).stdout.split()
    assert set(committed) <= {
        "deploy/compose/secrets/README.md",
        "deploy/compose/secrets/.gitignore",
    }, committed


# ----------------------------------------------------------------------------- settings


def test_every_stockbatch_variable_is_a_setting(services: dict[str, dict[str, Any]]) -> None:
    names = {var for s in services.values() for var in _environment(s)}
    stockbatch = {n for n in names if n.startswith("STOCKBATCH_")}
    assert stockbatch, "no STOCKBATCH_* variable found: the test reads the wrong thing"
    assert unknown_variables(stockbatch) == []


def test_env_example_names_only_settings_and_documents_every_interpolation() -> None:
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    assert unknown_variables(set(STOCKBATCH_NAME.findall(text))) == []
    assigned = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", text, flags=re.MULTILINE)
    }
    lines = text.splitlines()
    for i, line in enumerate(lines):  # a comment right above every setting
        if re.match(r"^[A-Za-z_]", line):
            assert lines[i - 1].startswith("#"), f".env.example: no comment above {line}"
    compose_text = COMPOSE.read_text(encoding="utf-8")
    interpolated = {m.group(1): m.group(2) for m in INTERPOLATION.finditer(compose_text)}
    # Compose-level knobs are SB_*: a STOCKBATCH_* name is only ever a setting.
    assert not [n for n in interpolated if n.startswith("STOCKBATCH_")]
    undocumented = sorted(set(interpolated) - set(assigned))
    assert not undocumented, f"interpolated but not in .env.example: {undocumented}"
    differing = {n: (assigned[n], d) for n, d in interpolated.items() if assigned[n] != d}
    assert not differing, f".env.example value != compose default: {differing}"


def test_helper_scripts_parse() -> None:
    bash = shutil.which("bash")
    assert bash
    for script in [
        DEPLOY / "compose" / "make-secrets.sh",
        DEPLOY / "compose" / "postgres" / "entrypoint.sh",
        *sorted((DEPLOY / "compose" / "postgres" / "initdb").glob("*.sh")),
    ]:
        result = _run([bash, "-n", str(script)])
        assert result.returncode == 0, f"{script}: {result.stderr}"


def test_make_secrets_and_the_stockbatch_environments(
    tmp_path: Path, compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """make-secrets.sh creates every file the compose file declares, and each stockbatch
    service's environment, with its /run/secrets paths pointed at those files, loads as
    Settings (the *_FILE secrets read, the JSON values parsed)."""
    secrets_dir = tmp_path / "secrets"
    made = _run(
        ["bash", str(DEPLOY / "compose" / "make-secrets.sh"), str(secrets_dir)],
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert made.returncode == 0, made.stdout + made.stderr
    files = {
        name: secrets_dir / spec["file"].rsplit("/", 1)[1]
        for name, spec in compose["secrets"].items()
    }
    assert not [str(p) for p in files.values() if not p.is_file()]

    probe = (
        "import json; from stockbatch.settings import Settings; "
        "s = Settings(); print(json.dumps({'warehouse': s.warehouse.kind, "
        "'url_user': (s.warehouse.url or '').partition('@')[0].rpartition(':')[0], "
        "'search': s.search.kind, "
        "'password': s.search.password is not None, 'home': str(s.home)}))"
    )
    stockbatch_services = {n: s for n, s in services.items() if s["image"].startswith("${SB_IMAGE")}
    assert set(stockbatch_services) == {"producer", "collector", "processor", "api"}
    for name, service in stockbatch_services.items():
        mounted = {
            f"/run/secrets/{item}" if isinstance(item, str) else item.get("target"): (
                item if isinstance(item, str) else item["source"]
            )
            for item in service.get("secrets") or []
        }
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
        for var, value in _environment(service).items():
            value = _interpolate(value)
            env[var] = str(files[mounted[value]]) if value in mounted else value
        result = _run([sys.executable, "-c", probe], env=env, cwd=ROOT)
        assert result.returncode == 0, f"{name}: {result.stderr}"
        loaded = json.loads(result.stdout)
        assert loaded["home"] == "/home/stockbatch/data", name
        if name == "processor":
            assert loaded["url_user"] == "postgresql+psycopg://stockbatch_loader", loaded
            assert loaded["search"] == "opensearch" and loaded["password"], loaded
