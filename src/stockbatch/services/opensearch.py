"""A real OpenSearch 2.19 node (single node, plain HTTP, no security plugin) on loopback:
:class:`OpenSearchService`, its jars and launcher (:func:`ensure_opensearch_jars`) and
a health probe (:func:`probe_opensearch`).

The node runs from Maven Central's jars through a small launcher
(``deploy/services/opensearch/StockbatchOpenSearch.java``); why, and its files and
ports: ``deploy/services/README.md``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from stockbatch.services.base import Launch
from stockbatch.services.jvm import (
    DEPLOY_DIR,
    JvmService,
    cache_root,
    copy_dependencies,
    find_java,
    find_mvn,
    jars_complete,
    log4j2_rolling_file,
)
from stockbatch.services.system import HOST, ServiceError, file_lock

OPENSEARCH_VERSION = "2.19.6"
"""OpenSearch release run locally (the newest line on Java 17); keep in sync with the pom."""

LAUNCHER_CLASS = "StockbatchOpenSearch"

POM = DEPLOY_DIR / "opensearch" / "pom.xml"
LAUNCHER_SOURCE = DEPLOY_DIR / "opensearch" / f"{LAUNCHER_CLASS}.java"

_JDK_HINT = "install a Java 17 JDK (Debian: apt-get install openjdk-17-jdk-headless)"


# ----------------------------------------------------------------------------- provisioning


def opensearch_dir(version: str = OPENSEARCH_VERSION, root: Path | None = None) -> Path:
    """The cache folder of OpenSearch ``version`` (``libs/`` and ``launcher-*/`` inside)."""
    return (root or cache_root()) / f"opensearch-{version}"


def _launcher_dir(base: Path) -> Path:
    # Keyed by the source's hash: an edited launcher is recompiled once, never run stale.
    digest = hashlib.sha256(LAUNCHER_SOURCE.read_bytes()).hexdigest()[:12]
    return base / f"launcher-{digest}"


def find_javac(java: str) -> str:
    """The ``javac`` of the same JDK as ``java`` (else the one on PATH)."""
    sibling = Path(java).resolve().parent / "javac"
    javac = str(sibling) if sibling.exists() else shutil.which("javac")
    if not javac:
        raise ServiceError(f"`javac` was not found next to {java} nor on PATH: {_JDK_HINT}")
    return javac


def _compile_launcher(javac: str, libs: Path, out: Path) -> None:
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [javac, "-proc:none", "-cp", f"{libs}/*", "-d", str(tmp), str(LAUNCHER_SOURCE)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ServiceError("compiling the OpenSearch launcher took over 300 s") from exc
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ServiceError(
            f"javac could not compile {LAUNCHER_SOURCE} (exit {done.returncode}):\n"
            f"{(done.stdout + done.stderr).strip()[-3000:]}"
        )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def ensure_opensearch_jars(*, version: str = OPENSEARCH_VERSION, root: Path | None = None) -> Path:
    """Return the cache folder of OpenSearch ``version``, provisioning it on first use.

    Provisioning = Maven resolves the jars into ``libs/`` (a ``COMPLETE`` file marks
    a finished download), then ``javac`` compiles the launcher into ``launcher-<hash>/``.
    Safe to call from several processes at once (a file lock makes one of them work).
    Raises :class:`ServiceError` naming what to install when ``mvn``/``javac`` is missing.
    """
    base = opensearch_dir(version, root)
    libs = base / "libs"
    if jars_complete(libs) and _launcher_dir(base).is_dir():
        return base
    if not POM.exists() or not LAUNCHER_SOURCE.exists():
        raise ServiceError(f"{POM.parent} is incomplete: run from a stockbatch checkout")
    with file_lock(base / ".lock"):
        java = find_java()
        if not jars_complete(libs):
            mvn = find_mvn(f"OpenSearch {version}", libs)
            copy_dependencies(
                mvn, POM, "opensearch.version", version, "org.opensearch:opensearch", libs
            )
        launcher = _launcher_dir(base)
        if not launcher.is_dir():
            _compile_launcher(find_javac(java), libs, launcher)
    return base


# ----------------------------------------------------------------------------- probing


def cluster_health(
    url: str,
    timeout: float = 2.0,
    *,
    auth: tuple[str, str] | None = None,
    ca_file: Path | None = None,
) -> dict[str, Any] | None:
    """``GET <url>/_cluster/health`` as a dict, or None when nothing answers in ``timeout`` s.

    ``auth`` (user, password) is sent as HTTP basic auth; ``ca_file`` is the CA an
    ``https://`` server certificate must chain to (hostname checked too). A refused
    login, a failed TLS verification or an error status also give None.
    """
    request = urllib.request.Request(f"{url.rstrip('/')}/_cluster/health")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
    context = None
    if url.startswith("https://"):
        # Default context = certificate and hostname verification; only the trust changes.
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as r:
            body: dict[str, Any] = json.loads(r.read())
            return body
    except (OSError, ValueError, urllib.error.URLError):
        return None


def probe_opensearch(
    url: str,
    timeout: float = 2.0,
    *,
    auth: tuple[str, str] | None = None,
    ca_file: Path | None = None,
) -> bool:
    """True if an OpenSearch node at ``url`` reports cluster health yellow or green.

    ``auth`` and ``ca_file``: as for :func:`cluster_health` (a secured node).
    """
    health = cluster_health(url, timeout, auth=auth, ca_file=ca_file)
    return bool(health and health.get("status") in ("yellow", "green"))


# ----------------------------------------------------------------------------- the node


_LOG4J2 = log4j2_rolling_file(
    "node",
    "error",
    "${sys:opensearch.logs.base_path}/stockbatch.log",
    "[%d{ISO8601}][%-5p][%-25c{1.}] %marker%m%n",
    "info",
    # Deprecation warnings (one per request of some old APIs) stay out of the node's log.
    "logger.deprecation.name = org.opensearch.deprecation\nlogger.deprecation.level = error\n",
)


class OpenSearchService(JvmService):
    """One local OpenSearch node under ``home/services/opensearch``.

    ``port`` is the HTTP port on 127.0.0.1 (default: the one used last time, else a
    free one); the transport port (node-to-node, unused by clients) is chosen and
    kept the same way. ``heap`` is the JVM heap (-Xms = -Xmx).
    """

    name = "opensearch"
    title = "OpenSearch"
    port_hint = "OpenSearchService(home, port=N)"  # the CLI's --port is Kafka's
    log_name = "logs/stockbatch.log"
    probe_interval = 0.25

    def __init__(
        self,
        home: Path,
        port: int | None = None,
        *,
        version: str = OPENSEARCH_VERSION,
        heap: str = "768m",
        start_timeout: float = 180.0,
        stop_timeout: float = 30.0,
        cache: Path | None = None,
        insecure: bool = False,
    ) -> None:
        # TLS (and authentication) unless `services up --insecure`.
        self.insecure = insecure
        super().__init__(
            home,
            port,
            version=version,
            heap=heap,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
            cache=cache,
        )

    @property
    def config_dir(self) -> Path:
        """``opensearch.yml`` and ``log4j2.properties``, regenerated at each start."""
        return self.dir / "config"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (the port chosen at the last ``up``)."""
        return f"http://{self.address}"

    def endpoint(self) -> dict[str, Any]:
        """What ``services.json`` records for this node."""
        return {
            "url": self.url,
            "version": self.version,
            # No security plugin: plain HTTP without users, hence loopback only.
            "security": "none (plain HTTP, loopback only)",
            "data_dir": str(self.data_dir),
            "log_file": str(self.log_file),
        }

    # -- what differs from the other services ------------------------------------

    def _ensure_jars(self) -> Path:
        return ensure_opensearch_jars(version=self.version, root=self.cache)

    def _prepare(self, state: dict[str, Any], tools: tuple[str, Path]) -> Launch:
        java, base = tools
        state.update(
            transport_port=self._second_port(state, "transport_port", state["port"]),
            version=self.version,
        )
        for folder in (self.data_dir, self.log_file.parent, self.config_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._save_state(state)
        (self.config_dir / "opensearch.yml").write_text(self._opensearch_yml(state))
        (self.config_dir / "log4j2.properties").write_text(_LOG4J2)
        return Launch(self._java_command(java, base), cwd=self.dir)

    def _owns(self, cmdline: list[str]) -> bool:
        return LAUNCHER_CLASS in cmdline and str(self.config_dir) in cmdline

    def _ready(self, timeout: float) -> bool:
        return probe_opensearch(self.url, timeout=timeout)

    def _awaiting(self) -> str:
        return f"report yellow/green health at {self.url}"

    def _health(self) -> tuple[bool, str]:
        color = (cluster_health(self.url, timeout=2.0) or {}).get("status")
        if color in ("yellow", "green"):
            return True, f"{self.label} (health {color})"
        return False, f"process alive but {self.url} reports health {color or 'nothing'}"

    # -- the JVM and its files ----------------------------------------------------

    def _java_command(self, java: str, base: Path) -> list[str]:
        tmpdir = self.dir / "tmp"
        tmpdir.mkdir(parents=True, exist_ok=True)
        return [
            java,
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            # The distribution's config/jvm.options, minus GC logs and heap dumps.
            "-XX:+UseG1GC",
            "-XX:G1ReservePercent=25",
            "-XX:InitiatingHeapOccupancyPercent=30",
            "-XX:+ExitOnOutOfMemoryError",
            "-XX:-OmitStackTraceInFastThrow",
            "-Xss1m",
            "-Djava.awt.headless=true",
            "-Dfile.encoding=UTF-8",
            "-Djna.nosys=true",
            "-Dio.netty.noUnsafe=true",
            "-Dio.netty.noKeySetOptimization=true",
            "-Dio.netty.recycler.maxCapacityPerThread=0",
            "-Dlog4j.shutdownHookEnabled=false",
            "-Dlog4j2.disable.jmx=true",
            "-Djava.locale.providers=SPI,COMPAT",
            f"-Djava.io.tmpdir={tmpdir}",
            "-cp",
            f"{base / 'libs'}/*:{_launcher_dir(base)}",
            LAUNCHER_CLASS,
            str(self.dir),
            str(self.config_dir),
        ]

    def _opensearch_yml(self, state: dict[str, Any]) -> str:
        lines = [
            "# Generated by stockbatch (src/stockbatch/services/opensearch.py) at each start:",
            "# edits are overwritten.",
            "cluster.name: stockbatch",
            "node.name: stockbatch-1",
            f"path.data: {json.dumps(str(self.data_dir))}",
            f"path.logs: {json.dumps(str(self.log_file.parent))}",
            # Loopback only: there is no security plugin, so no authentication at all.
            f"network.host: {HOST}",
            f"http.port: {state['port']}",
            f"transport.port: {state['transport_port']}",
            "discovery.type: single-node",
            # Indices are created explicitly (from the index templates), never by a typo.
            "action.auto_create_index: false",
            # A developer disk at 90 % must not turn every index read-only mid-test.
            "cluster.routing.allocation.disk.threshold_enabled: false",
            "bootstrap.memory_lock: false",
        ]
        return "\n".join(lines) + "\n"
