"""The Kubernetes manifests of deploy/k8s: schema-valid, hardened, wired to real settings.

No cluster and no mocks: every document is validated against the Kubernetes JSON
schemas that kubernetes-validate ships (strict: an unknown field fails), and the
properties the deployment relies on are read from the YAML itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from deploy.settings_vars import unknown_variables

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p != KUSTOMIZATION)

# Fixed schema versions (never "the latest the package knows", which would move the
# test under us): 1.37, the newest that kubernetes-validate 1.37.0 ships, and 1.35, the
# oldest minor still inside upstream's ~14-month support window on 2026-12-03 by the
# usual release cadence (released December 2025).
KUBERNETES_VERSIONS = ("1.35.0", "1.37.0")

UID = 10001  # the image's user (deploy/Dockerfile: USER 10001:10001)
SECRET_MOUNT = "/run/secrets/stockbatch"


def documents(path: Path) -> list[dict[str, Any]]:
    """The non-empty YAML documents of ``path``."""
    with path.open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def all_documents() -> list[tuple[str, dict[str, Any]]]:
    """``(file name, document)`` of every manifest."""
    return [(p.name, d) for p in MANIFESTS for d in documents(p)]


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    """``(kind/name, pod spec)`` of every workload: Deployments, Jobs, CronJobs."""
    for _, doc in all_documents():
        kind, spec = doc["kind"], doc.get("spec", {})
        name = f"{kind}/{doc['metadata']['name']}"
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield name, spec["template"]["spec"]
        elif kind == "CronJob":
            yield name, spec["jobTemplate"]["spec"]["template"]["spec"]


def containers() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(kind/name/container, container, pod spec)`` of every container and init
    container."""
    for name, pod in pod_specs():
        for c in pod.get("initContainers", []) + pod["containers"]:
            yield f"{name}/{c['name']}", c, pod


CONTAINERS = list(containers())
CONTAINER_IDS = [cid for cid, _, _ in CONTAINERS]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in all_documents() if d["kind"] == kind]


# ----------------------------------------------------------------------------- schemas


def test_manifests_exist() -> None:
    """The folder holds the expected parts (so an empty glob cannot pass the rest)."""
    kinds = {d["kind"] for _, d in all_documents()}
    assert {
        "Namespace",
        "ConfigMap",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "NetworkPolicy",
        "CronJob",
    } <= kinds


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_every_document_is_schema_valid(path: Path, version: str) -> None:
    """Every document validates, strictly, against the fixed Kubernetes version.

    ``validate`` raises on an unknown kind too (SchemaNotFoundError), where the CLI
    would only warn, so a typo in ``apiVersion`` or ``kind`` cannot pass.
    """
    docs = documents(path)
    assert docs, f"{path.name} holds no document"
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        error = None
        try:
            validated = kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            error = f"{'.'.join(str(p) for p in e.path)}: {e.message}"
        if error is not None:
            # Failed outside the except block: the chained report would print the whole
            # schema and hide the one line that matters.
            pytest.fail(f"{path.name} {name}: {error}", pytrace=False)
        assert validated == version.rsplit(".", 1)[0], name


BROKEN = {  # case -> (the pod spec's containers, what the error says)
    "unknown field": (
        "      containers:\n"
        "        - name: api\n"
        "          image: stockbatch:0.1.0\n"
        "          imagePullPolicyy: IfNotPresent\n",
        "'imagePullPolicyy' was unexpected",
    ),
    "wrong type": (
        "      containers:\n"
        "        - name: api\n"
        "          image: stockbatch:0.1.0\n"
        "          ports:\n"
        "            - containerPort: eight-thousand\n",
        "'eight-thousand' is not of type 'integer'",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_validator_rejects_a_broken_manifest(tmp_path: Path, case: str) -> None:
    """The check above can fail: a misspelt field and a wrong type are refused (the
    file is written and read back like the real manifests)."""
    path = tmp_path / "broken.yaml"
    path.write_text(
        "apiVersion: apps/v1\n"
        "kind: Deployment\n"
        "metadata:\n"
        "  name: broken\n"
        "spec:\n"
        "  selector:\n"
        "    matchLabels: {app: broken}\n"
        "  template:\n"
        "    metadata:\n"
        "      labels: {app: broken}\n"
        "    spec:\n" + BROKEN[case][0],
        encoding="utf-8",
    )
    (doc,) = documents(path)
    with pytest.raises(kubernetes_validate.ValidationError) as caught:
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[0], strict=True)
    assert BROKEN[case][1] in caught.value.message


def test_no_secret_values_are_committed() -> None:
    """Secrets are referenced by name only: no Secret object in the manifests."""
    assert not by_kind("Secret")


# ----------------------------------------------------------------------------- containers


@pytest.mark.parametrize(("cid", "container", "pod"), CONTAINERS, ids=CONTAINER_IDS)
def test_container_has_requests_and_limits(
    cid: str, container: dict[str, Any], pod: dict[str, Any]
) -> None:
    resources = container.get("resources", {})
    for part in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources.get(part, {})), f"{cid}: {part}"


def _effective(container: dict[str, Any], pod: dict[str, Any], key: str) -> Any:
    """A securityContext field as the kubelet applies it: the container's, else the pod's."""
    own = container.get("securityContext", {})
    return own[key] if key in own else pod.get("securityContext", {}).get(key)


@pytest.mark.parametrize(("cid", "container", "pod"), CONTAINERS, ids=CONTAINER_IDS)
def test_container_is_hardened(cid: str, container: dict[str, Any], pod: dict[str, Any]) -> None:
    """Non-root as the image's user, no privilege escalation, no capabilities, a
    read-only root file system with a writable /tmp from an emptyDir."""
    assert _effective(container, pod, "runAsNonRoot") is True, cid
    assert _effective(container, pod, "runAsUser") == UID, cid
    sc = container.get("securityContext", {})
    assert sc.get("allowPrivilegeEscalation") is False, cid
    assert sc.get("capabilities", {}).get("drop") == ["ALL"], cid
    assert sc.get("readOnlyRootFilesystem") is True, cid
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
    assert tmp, f"{cid}: no /tmp mount"
    assert "emptyDir" in volumes[tmp[0]["name"]], f"{cid}: /tmp is not an emptyDir"
    assert pod.get("automountServiceAccountToken") is False, cid


IMAGE = re.compile(
    r"^(?P<name>[a-z0-9./_-]+(:\d+/[a-z0-9./_-]+)?):(?P<tag>[A-Za-z0-9_][\w.-]{0,127})$"
)


@pytest.mark.parametrize(("cid", "container", "pod"), CONTAINERS, ids=CONTAINER_IDS)
def test_image_has_an_explicit_tag(
    cid: str, container: dict[str, Any], pod: dict[str, Any]
) -> None:
    match = IMAGE.match(container["image"])
    assert match, f"{cid}: {container['image']!r} has no explicit tag"
    assert match["tag"] != "latest", cid


def test_kustomization_pins_the_image_tag() -> None:
    """The kustomize image override (what `kustomize edit set image` changes) keeps a
    version tag too."""
    images = yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8")).get("images", [])
    for image in images:
        assert image.get("newTag") and image["newTag"] != "latest", image


# ----------------------------------------------------------------------------- settings


def stockbatch_variables() -> set[str]:
    """Every STOCKBATCH_* name the manifests set: ConfigMap keys and container env."""
    names = {k for cm in by_kind("ConfigMap") for k in cm.get("data", {})}
    names |= {e["name"] for _, c, _ in CONTAINERS for e in c.get("env", [])}
    return {n for n in names if n.startswith("STOCKBATCH_")}


def test_every_variable_is_a_setting() -> None:
    """A misspelt variable would be ignored silently (extra="ignore"): refuse it."""
    names = stockbatch_variables()
    assert len(names) > 10
    assert unknown_variables(names) == []


def test_the_settings_check_can_fail() -> None:
    """The helper does flag a name the tree does not read."""
    assert unknown_variables({"STOCKBATCH_KAFKA__BOOTSTRAP_SERVER"}) == [
        "STOCKBATCH_KAFKA__BOOTSTRAP_SERVER"
    ]


@pytest.mark.parametrize(("cid", "container", "pod"), CONTAINERS, ids=CONTAINER_IDS)
def test_secret_files_are_mounted(cid: str, container: dict[str, Any], pod: dict[str, Any]) -> None:
    """Every *_FILE variable names a file under a mounted Secret volume, and the
    ConfigMap's file paths (CA bundles) lie under that mount too."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    secret_mounts = [
        m["mountPath"] for m in container.get("volumeMounts", []) if "secret" in volumes[m["name"]]
    ]
    files = [e["value"] for e in container.get("env", []) if e["name"].endswith("_FILE")]
    for path in files:
        assert any(path.startswith(f"{m}/") for m in secret_mounts), f"{cid}: {path}"
    if files:
        assert SECRET_MOUNT in secret_mounts, cid
    shared = {
        cm["metadata"]["name"]: [v for v in cm.get("data", {}).values() if v.startswith("/run/")]
        for cm in by_kind("ConfigMap")
    }
    for source in container.get("envFrom", []):
        for path in shared.get(source.get("configMapRef", {}).get("name"), []):
            assert any(path.startswith(f"{m}/") for m in secret_mounts), f"{cid}: {path}"


# ----------------------------------------------------------------------------- the parts


def test_api_deployment() -> None:
    """Two replicas on port 8000, probed on /healthz, behind the Service, selected by
    its NetworkPolicy."""
    (deploy,) = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "stockbatch-api"]
    assert deploy["spec"]["replicas"] == 2
    pod = deploy["spec"]["template"]
    (api,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    assert ports == {"http": 8000}
    env = {e["name"]: e.get("value") for e in api["env"]}
    scheme = "HTTPS" if env.get("STOCKBATCH_API__TLS") == "true" else "HTTP"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = api[probe]["httpGet"]
        assert get["path"] == "/healthz", probe
        assert ports.get(get["port"], get["port"]) == 8000, probe
        assert get.get("scheme", "HTTP") == scheme, probe
    labels = pod["metadata"]["labels"]
    (service,) = [s for s in by_kind("Service") if s["metadata"]["name"] == "stockbatch-api"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] in ("http", 8000)
    policies = [
        p
        for p in by_kind("NetworkPolicy")
        if p["spec"]["podSelector"].get("matchLabels")
        and p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    ]
    assert policies, "no NetworkPolicy selects the API pods"
    assert {"Ingress", "Egress"} <= set(policies[0]["spec"]["policyTypes"])


def test_the_lake_volume_is_shared() -> None:
    """One ReadWriteMany claim, mounted as the home by every workload."""
    (pvc,) = by_kind("PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    name = pvc["metadata"]["name"]
    (config,) = by_kind("ConfigMap")
    home = config["data"]["STOCKBATCH_HOME"]
    for cid, container, pod in CONTAINERS:
        claims = {
            v["name"]
            for v in pod.get("volumes", [])
            if v.get("persistentVolumeClaim", {}).get("claimName") == name
        }
        mounts = [m for m in container["volumeMounts"] if m["name"] in claims]
        assert [m["mountPath"] for m in mounts] == [home], cid


def test_pipeline_commands_are_real() -> None:
    """Each Job runs a stockbatch command that exists (the image's entry point is
    `stockbatch`, so args[0] is the command)."""
    from stockbatch.cli.main import app

    commands = {
        c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands
    }
    used = {c["args"][0] for _, c, _ in CONTAINERS}
    assert used >= {"serve", "ingest", "collect", "process", "load"}
    assert used <= commands


# ----------------------------------------------------------------------------- kustomize


def test_kustomization_lists_every_manifest() -> None:
    resources = yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8"))["resources"]
    assert sorted(resources) == sorted(p.name for p in MANIFESTS)
    assert len(resources) == len(set(resources))


def test_kustomize_builds() -> None:
    """`kubectl kustomize` (offline: no cluster) renders every document, in the
    stockbatch namespace."""
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is missing: scripts/setup-services.sh installs it (kubernetes-client)")
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    built = [d for d in yaml.safe_load_all(out) if d]
    assert len(built) == len(all_documents())
    for doc in built:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "stockbatch", doc["metadata"]["name"]
