"""A real OpenSearch 2.19 node (single node, plain HTTP) on loopback.

How it works:

1. :func:`ensure_opensearch_jars` resolves ``org.opensearch:opensearch`` and the
   modules a search node needs (``transport-netty4-client`` for HTTP,
   ``analysis-common``, ``mapper-extras-client``, ``lang-painless``) plus Log4j
   from Maven Central with ``deploy/services/opensearch/pom.xml`` into
   ``$STOCKBATCH_CACHE/opensearch-<version>/libs`` (default ``~/.cache/stockbatch``),
   then compiles the tiny launcher ``deploy/services/opensearch/StockbatchOpenSearch.java``
   next to them with ``javac``. Once per machine.
2. :class:`OpenSearchService` keeps everything of one node under
   ``$STOCKBATCH_HOME/services/opensearch/``: ``data/`` (indices, kept across
   restarts), ``logs/stockbatch.log``, ``opensearch.out`` (JVM stdout/stderr),
   ``config/`` (``opensearch.yml`` and ``log4j2.properties``, regenerated at each
   start), ``state.json`` (ports) and ``opensearch.pid``.
3. ``up()`` starts ``java -cp 'libs/*:launcher' StockbatchOpenSearch`` detached,
   waits until ``GET /_cluster/health`` answers yellow or green, and records
   ``{"url": "http://127.0.0.1:<port>", ...}`` in ``$STOCKBATCH_HOME/services.json``.

Why a launcher and not the distribution: Maven Central publishes the server and
module jars but not the distribution's ``modules/*/`` descriptors and security
policies, so the launcher loads the modules as classpath plugins (as OpenSearch's
own test clusters do). There is no security plugin: HTTP is plain and
unauthenticated, which is why the node binds to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stockbatch.services.base import (
    ServiceError,
    ServiceStatus,
    State,
    file_lock,
    free_port,
    kill_process,
    pid_alive,
    port_is_free,
    process_cmdline,
    read_state,
    start_detached,
    stop_process,
    tail,
    write_state,
)
from stockbatch.services.endpoints import forget_endpoint, record_endpoint, recorded_endpoints
from stockbatch.services.kafka import cache_root, find_java

if TYPE_CHECKING:
    from stockbatch.settings import Settings

OPENSEARCH_VERSION = "2.19.6"
"""OpenSearch release run locally (the newest line on Java 17); keep in sync with the pom."""

HOST = "127.0.0.1"
LAUNCHER_CLASS = "StockbatchOpenSearch"

# src/stockbatch/services/opensearch.py -> the repository root (editable install / checkout).
REPO_ROOT = Path(__file__).resolve().parents[3]
DEPLOY_DIR = REPO_ROOT / "deploy" / "services" / "opensearch"
POM = DEPLOY_DIR / "pom.xml"
LAUNCHER_SOURCE = DEPLOY_DIR / f"{LAUNCHER_CLASS}.java"

_JDK_HINT = "install a Java 17 JDK (Debian: apt-get install openjdk-17-jdk-headless)"
_MVN_HINT = "install Apache Maven (Debian: apt-get install maven)"


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


def _resolve_jars(version: str, libs: Path) -> None:
    mvn = shutil.which("mvn")
    if not mvn:
        raise ServiceError(
            f"OpenSearch {version} is not in {libs.parent} yet and `mvn` is not on PATH to "
            f"fetch it from Maven Central: {_MVN_HINT}"
        )
    tmp = libs.parent / f"libs.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        mvn,
        "-B",
        "-q",
        "-Dstyle.color=never",
        "-f",
        str(POM),
        f"-Dopensearch.version={version}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}",
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(f"Maven did not resolve OpenSearch {version} within 20 min") from exc
    if done.returncode != 0 or not (tmp / f"opensearch-{version}.jar").exists():
        output = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        shutil.rmtree(tmp, ignore_errors=True)
        raise ServiceError(
            f"Maven could not resolve org.opensearch:opensearch:{version} "
            f"(exit {done.returncode}):\n{output}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)


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
    libs, marker = base / "libs", base / "COMPLETE"
    if marker.exists() and libs.is_dir() and _launcher_dir(base).is_dir():
        return base
    if not POM.exists() or not LAUNCHER_SOURCE.exists():
        raise ServiceError(f"{DEPLOY_DIR} is incomplete: run from a stockbatch checkout")
    with file_lock(base / ".lock"):
        java = find_java()
        if not (marker.exists() and libs.is_dir()):
            _resolve_jars(version, libs)
            marker.write_text("\n".join(sorted(p.name for p in libs.glob("*.jar"))) + "\n")
        launcher = _launcher_dir(base)
        if not launcher.is_dir():
            _compile_launcher(find_javac(java), libs, launcher)
    return base


# ----------------------------------------------------------------------------- probing


def cluster_health(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """``GET <url>/_cluster/health`` as a dict, or None when nothing answers in ``timeout`` s."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/_cluster/health", timeout=timeout) as r:
            body: dict[str, Any] = json.loads(r.read())
            return body
    except (OSError, ValueError, urllib.error.URLError):
        return None


def probe_opensearch(url: str, timeout: float = 2.0) -> bool:
    """True if an OpenSearch node at ``url`` reports cluster health yellow or green."""
    health = cluster_health(url, timeout)
    return bool(health and health.get("status") in ("yellow", "green"))


def effective_search_url(settings: Settings) -> str | None:
    """The OpenSearch URL to use: ``settings.search.url`` if set (explicit wins), else
    the one ``stockbatch services up opensearch`` recorded under ``settings.home``,
    else None (the caller says how to start a node)."""
    if settings.search.url:
        return settings.search.url
    record = recorded_endpoints(settings.home).get("opensearch") or {}
    url = record.get("url")
    return str(url) if url else None


# ----------------------------------------------------------------------------- the node


_LOG4J2 = """\
# Generated by stockbatch: the node's log, rolled at 20 MB, 3 files kept.
status = error
appender.rolling.type = RollingFile
appender.rolling.name = rolling
appender.rolling.fileName = ${sys:opensearch.logs.base_path}/stockbatch.log
appender.rolling.filePattern = ${sys:opensearch.logs.base_path}/stockbatch.log.%i
appender.rolling.layout.type = PatternLayout
appender.rolling.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] %marker%m%n
appender.rolling.policies.type = Policies
appender.rolling.policies.size.type = SizeBasedTriggeringPolicy
appender.rolling.policies.size.size = 20MB
appender.rolling.strategy.type = DefaultRolloverStrategy
appender.rolling.strategy.max = 3
rootLogger.level = info
rootLogger.appenderRef.rolling.ref = rolling
# Deprecation warnings (one per request of some old APIs) stay out of the node's log.
logger.deprecation.name = org.opensearch.deprecation
logger.deprecation.level = error
"""


class OpenSearchService:
    """One local OpenSearch node under ``home/services/opensearch`` (see the module doc).

    ``port`` is the HTTP port on 127.0.0.1 (default: the one used last time, else a
    free one); the transport port (node-to-node, unused by clients) is chosen and
    kept the same way. ``heap`` is the JVM heap (-Xms = -Xmx).
    """

    name = "opensearch"

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
    ) -> None:
        self.home = Path(home).expanduser().resolve()
        self.port = port
        self.version = version
        self.heap = heap
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.cache = cache
        self._proc: subprocess.Popen[bytes] | None = None

    # -- paths ---------------------------------------------------------------

    @property
    def dir(self) -> Path:
        """Everything of this node: ``$STOCKBATCH_HOME/services/opensearch``."""
        return self.home / "services" / "opensearch"

    @property
    def data_dir(self) -> Path:
        """Indices and cluster state; survives restarts."""
        return self.dir / "data"

    @property
    def log_file(self) -> Path:
        """The node's own log."""
        return self.dir / "logs" / "stockbatch.log"

    @property
    def stdout_file(self) -> Path:
        """JVM stdout and stderr (crashes before logging starts land here)."""
        return self.dir / "opensearch.out"

    @property
    def config_dir(self) -> Path:
        """``opensearch.yml`` and ``log4j2.properties``, regenerated at each start."""
        return self.dir / "config"

    @property
    def _state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def _pid_file(self) -> Path:
        return self.dir / "opensearch.pid"

    # -- state ---------------------------------------------------------------

    def _stored_state(self) -> dict[str, Any]:
        return read_state(self._state_file)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (the port chosen at the last ``up``)."""
        port = self.port or self._stored_state().get("port")
        if port is None:
            raise ServiceError(f"OpenSearch under {self.dir} has never been started: no port yet")
        return f"http://{HOST}:{port}"

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

    # -- process -------------------------------------------------------------

    def _running_pid(self) -> int | None:
        """The node's pid if it runs; checks the command line so a reused pid never matches."""
        try:
            pid = int(self._pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if self._proc is not None and self._proc.pid == pid:
            return pid if self._proc.poll() is None else None
        if not pid_alive(pid):
            return None
        cmdline = process_cmdline(pid)
        if LAUNCHER_CLASS in cmdline and str(self.config_dir) in cmdline:
            return pid
        return None

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

    def _log_tails(self) -> str:
        parts = []
        for path in (self.stdout_file, self.log_file):
            text = tail(path, 30)
            if text.strip():
                parts.append(f"--- last lines of {path}\n{text}")
        return "\n".join(parts) or f"(no output in {self.stdout_file} or {self.log_file})"

    def _wait_ready(self, pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._running_pid() != pid:
                code = self._proc.poll() if self._proc is not None else None
                raise ServiceError(
                    f"OpenSearch (pid {pid}) exited during start-up"
                    + (f" with code {code}" if code is not None else "")
                    + f":\n{self._log_tails()}"
                )
            if probe_opensearch(self.url, timeout=1.0):
                return
            if time.monotonic() >= deadline:
                raise ServiceError(
                    f"OpenSearch (pid {pid}) did not report yellow/green health at {self.url} "
                    f"within {timeout:g} s:\n{self._log_tails()}"
                )
            time.sleep(0.25)

    # -- lifecycle -----------------------------------------------------------

    def up(self) -> ServiceStatus:
        """Provision (jars, launcher) if needed, start, wait for health, record the URL.

        Idempotent: a node that already runs here is kept (asking for another port
        while it runs is an error).
        """
        java = find_java()
        base = ensure_opensearch_jars(version=self.version, root=self.cache)
        with file_lock(self.dir / ".lock"):
            state = self._stored_state()
            pid = self._running_pid()
            if pid is not None:
                if self.port is not None and self.port != state.get("port"):
                    raise ServiceError(
                        f"OpenSearch already runs under {self.dir} (pid {pid}, port "
                        f"{state.get('port')}); run `stockbatch services down opensearch` first"
                    )
                self.port = state["port"]
                self._wait_ready(pid, self.start_timeout)
                record_endpoint(self.home, self.name, {**self.endpoint(), "pid": pid})
                return self.status()

            port = self.port or state.get("port") or free_port()
            if not port_is_free(port):
                raise ServiceError(
                    f"port {HOST}:{port} is taken by another process; stop it or choose "
                    "another port (OpenSearchService(home, port=N))"
                )
            tport = state.get("transport_port")
            if not tport or tport == port or not port_is_free(tport):
                tport = free_port()
                while tport == port:
                    tport = free_port()
            state.update(port=port, transport_port=tport, version=self.version)
            self.port = port
            for folder in (self.data_dir, self.log_file.parent, self.config_dir):
                folder.mkdir(parents=True, exist_ok=True)
            write_state(self._state_file, state)
            (self.config_dir / "opensearch.yml").write_text(self._opensearch_yml(state))
            (self.config_dir / "log4j2.properties").write_text(_LOG4J2)

            with open(self.stdout_file, "ab") as out:
                stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
                out.write(
                    f"\n==== stockbatch: starting OpenSearch {self.version} at {stamp}\n".encode()
                )
            self._proc = start_detached(
                self._java_command(java, base), cwd=self.dir, output=self.stdout_file
            )
            pid = self._proc.pid
            self._pid_file.write_text(f"{pid}\n")
            try:
                self._wait_ready(pid, self.start_timeout)
            except ServiceError:
                stop_process(pid, 5.0, self._proc)
                self._pid_file.unlink(missing_ok=True)
                raise
            record_endpoint(self.home, self.name, {**self.endpoint(), "pid": pid})
            return self.status()

    def down(self) -> bool:
        """SIGTERM (the node closes cleanly), SIGKILL after ``stop_timeout`` s; forget the
        endpoint. Keeps the data. Returns True if a node was running."""
        if not self.dir.exists():  # never started here: nothing to stop, create nothing
            forget_endpoint(self.home, self.name)
            return False
        with file_lock(self.dir / ".lock"):
            pid = self._running_pid()
            if pid is not None:
                stop_process(pid, self.stop_timeout, self._proc)
            self._pid_file.unlink(missing_ok=True)
            forget_endpoint(self.home, self.name)
            return pid is not None

    def kill(self) -> bool:
        """SIGKILL the node at once (a crash, for fault tests); leaves services.json as is."""
        with file_lock(self.dir / ".lock"):
            pid = self._running_pid()
            if pid is not None:
                kill_process(pid, self._proc)
            return pid is not None

    def restart(self) -> ServiceStatus:
        """``down()`` then ``up()`` on the same data dir and port."""
        self.down()
        return self.up()

    def purge(self) -> None:
        """Stop the node and delete its folder (indices, logs, config)."""
        self.down()
        shutil.rmtree(self.dir, ignore_errors=True)

    def status(self) -> ServiceStatus:
        """Running (health yellow/green), unhealthy (process alive, no health) or stopped."""
        pid = self._running_pid()
        endpoint: dict[str, Any] = {}
        with contextlib.suppress(ServiceError):
            endpoint = {**self.endpoint(), "pid": pid}
        state: State
        if pid is None:
            state = "stopped"
            detail = "not running" if self._state_file.exists() else "never started here"
        else:
            health = cluster_health(self.url, timeout=2.0)
            color = (health or {}).get("status")
            if color in ("yellow", "green"):
                state, detail = "running", f"OpenSearch {self.version} (health {color})"
            else:
                state = "unhealthy"
                detail = f"process alive but {self.url} reports health {color or 'nothing'}"
        return ServiceStatus(
            name=self.name,
            state=state,
            pid=pid,
            endpoint=endpoint,
            data_dir=str(self.data_dir),
            log_file=str(self.log_file),
            detail=detail,
        )
