"""A real Elasticsearch 8.19 node (single node, plain HTTP, security off) on loopback:
:class:`ElasticsearchService` and its distribution (:func:`ensure_elasticsearch`).

The node runs from Elastic's minimal distribution on Maven Central
(``org.elasticsearch.distribution.integ-test-zip:elasticsearch``, resolved with
``deploy/services/elasticsearch/pom.xml`` and unpacked into the user cache) through
its own CLI launcher. Elasticsearch refuses to run as root: as root the node runs as
the unprivileged user PostgreSQL uses (:class:`~stockbatch.services.postgresql.PostgresService`'s
helpers). Files, ports and what the minimal distribution lacks: ``deploy/services/README.md``.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

from stockbatch.services.base import Launch
from stockbatch.services.jvm import (
    DEPLOY_DIR,
    JvmService,
    cache_root,
    find_mvn,
    log4j2_rolling_file,
    maven_resolve,
)
from stockbatch.services.opensearch import cluster_health, probe_opensearch
from stockbatch.services.system import (
    HOST,
    ServiceError,
    file_lock,
    make_reachable,
    own_dir,
    popen_as,
    server_user,
    write_as,
)

ELASTICSEARCH_VERSION = "8.19.0"
"""Elasticsearch release run locally (8.x runs on Java 17); keep in sync with the pom."""

ARTIFACT = "org.elasticsearch.distribution.integ-test-zip:elasticsearch"
POM = DEPLOY_DIR / "elasticsearch" / "pom.xml"
CLI_CLASS = "org.elasticsearch.launcher.CliToolLauncher"


# ----------------------------------------------------------------------------- provisioning


def elasticsearch_dir(version: str = ELASTICSEARCH_VERSION, root: Path | None = None) -> Path:
    """The cache folder of Elasticsearch ``version`` (the unpacked distribution in ``home/``)."""
    return (root or cache_root()) / f"elasticsearch-{version}"


def _unzip(archive: Path, dest: Path) -> None:
    """Unpack ``archive`` into ``dest`` keeping the files' modes (zipfile drops them)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = Path(zf.extract(info, dest))
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                target.chmod(mode)


def ensure_elasticsearch(*, version: str = ELASTICSEARCH_VERSION, root: Path | None = None) -> Path:
    """Return the Elasticsearch home (``bin/``, ``lib/``, ``modules/``) of ``version``,
    provisioning it on first use.

    Provisioning = Maven resolves the distribution zip (~97 MB) from Maven Central, and
    it is unpacked into ``<cache>/elasticsearch-<version>/home`` (a ``COMPLETE`` file
    marks a finished unpack). Safe to call from several processes at once (a file lock
    makes one of them work). Raises :class:`ServiceError` when ``mvn`` is missing.
    """
    base = elasticsearch_dir(version, root)
    home = base / "home"
    if (base / "COMPLETE").exists() and home.is_dir():
        return home
    if not POM.exists():
        raise ServiceError(f"{POM} is missing: run from a stockbatch checkout")
    with file_lock(base / ".lock"):
        if (base / "COMPLETE").exists() and home.is_dir():
            return home
        mvn = find_mvn(f"Elasticsearch {version}", home)
        tmp = base / f"download.tmp-{os.getpid()}"
        archive = tmp / f"elasticsearch-{version}.zip"
        coordinates = f"{ARTIFACT}:{version}"
        maven_resolve(mvn, POM, "elasticsearch.version", version, coordinates, tmp, archive.name)
        unpacked = tmp / "unpacked"
        try:
            _unzip(archive, unpacked)
            top = unpacked / f"elasticsearch-{version}"
            if not (top / "lib" / f"elasticsearch-{version}.jar").exists():
                raise ServiceError(
                    f"{archive.name} has no elasticsearch-{version}/lib: not a distribution"
                )
            shutil.rmtree(home, ignore_errors=True)
            top.rename(home)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        modules = sorted(p.name for p in (home / "modules").iterdir())
        (base / "COMPLETE").write_text(f"{ARTIFACT}:{version}\nmodules: {' '.join(modules)}\n")
    return home


# ----------------------------------------------------------------------------- the node

_LOG4J2 = log4j2_rolling_file(
    "node",
    "error",
    "${sys:es.logs.base_path}/stockbatch.log",
    "[%d{ISO8601}][%-5p][%-25c{1.}] %marker%m%n",
    "info",
    # Deprecation warnings (one per request of some old APIs) stay out of the node's log.
    "logger.deprecation.name = org.elasticsearch.deprecation\nlogger.deprecation.level = error\n",
)


class ElasticsearchService(JvmService):
    """One local Elasticsearch node under ``home/services/elasticsearch``.

    ``port`` is the HTTP port on 127.0.0.1 (default: the one used last time, else a
    free one); the transport port is chosen and kept the same way. ``heap`` is the
    node's JVM heap (-Xms = -Xmx). Security (x-pack-security) is switched off: plain
    HTTP without users on loopback, as for the local OpenSearch node.
    """

    name = "elasticsearch"
    title = "Elasticsearch"
    port_hint = "ElasticsearchService(home, port=N)"  # the CLI's --port is Kafka's
    log_name = "logs/stockbatch.log"
    probe_interval = 0.25
    kill_group = True  # the CLI launcher and the server JVM it starts

    def __init__(
        self,
        home: Path,
        port: int | None = None,
        *,
        version: str = ELASTICSEARCH_VERSION,
        heap: str = "512m",
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
        """``elasticsearch.yml``, ``jvm.options``, ``log4j2.properties`` (regenerated at each
        start) and the node's keystore."""
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
            "security": "none (xpack.security.enabled: false, plain HTTP, loopback only)",
            "data_dir": str(self.data_dir),
            "log_file": str(self.log_file),
        }

    # -- what differs from the other services ------------------------------------

    def _ensure_jars(self) -> Path:
        return ensure_elasticsearch(version=self.version, root=self.cache)

    def _prepare(self, state: dict[str, Any], tools: tuple[str, Path]) -> Launch:
        java, es_home = tools
        user = server_user(
            "Elasticsearch", "create one (useradd --system nobody)"
        )  # the current user, or postgres/nobody as root
        state.update(
            transport_port=self._second_port(state, "transport_port", state["port"]),
            version=self.version,
            user=user.pw_name,
        )
        self.dir.mkdir(parents=True, exist_ok=True)
        self._save_state(state)
        tmpdir = self.dir / "tmp"
        for folder in (self.data_dir, self.log_file.parent, self.config_dir, tmpdir):
            own_dir(folder, user)
        # As root the node's user must traverse to its folders and to the distribution.
        make_reachable(self.dir, user)
        make_reachable(es_home, user)
        files = {
            "elasticsearch.yml": self._elasticsearch_yml(state),
            "jvm.options": self._jvm_options(),
            "log4j2.properties": _LOG4J2,
        }
        for file_name, text in files.items():
            write_as(self.config_dir / file_name, text, user)
        popen = popen_as(user, self.dir)
        popen["env"] |= {
            "ES_JAVA_HOME": str(Path(java).resolve().parents[1]),
            "ES_TMPDIR": str(tmpdir),
            "ES_PATH_CONF": str(self.config_dir),
        }
        # cwd: the launcher finds lib/tools and modules/ relative to it (as bin/elasticsearch does).
        return Launch(self._cli_command(java, es_home), cwd=es_home, popen=popen)

    def _owns(self, cmdline: list[str]) -> bool:
        return CLI_CLASS in cmdline and f"-Des.path.conf={self.config_dir}" in cmdline

    def _ready(self, timeout: float) -> bool:
        return probe_opensearch(self.url, timeout=timeout)  # same API: /_cluster/health

    def _awaiting(self) -> str:
        return f"report yellow/green health at {self.url}"

    def _health(self) -> tuple[bool, str]:
        color = (cluster_health(self.url, timeout=2.0) or {}).get("status")
        if color in ("yellow", "green"):
            return True, f"{self.label} (health {color})"
        return False, f"process alive but {self.url} reports health {color or 'nothing'}"

    # -- the JVMs and their files --------------------------------------------------

    def _cli_command(self, java: str, es_home: Path) -> list[str]:
        # What bin/elasticsearch runs (without its shell scripts): the CLI launcher, a
        # small JVM that checks the config, creates the keystore, then starts the server
        # JVM with config/jvm.options and stays its parent (SIGTERM stops both).
        return [
            java,
            "-Xms4m",
            "-Xmx64m",
            "-XX:+UseSerialGC",
            "-Dcli.name=server",
            f"-Dcli.script={es_home / 'bin' / 'elasticsearch'}",
            f"-Dcli.libs={es_home / 'lib' / 'tools' / 'server-cli'}",
            f"-Des.path.home={es_home}",
            f"-Des.path.conf={self.config_dir}",
            "-Des.distribution.type=zip",
            "-cp",
            f"{es_home / 'lib'}/*:{es_home / 'lib' / 'cli-launcher'}/*",
            CLI_CLASS,
        ]

    def _jvm_options(self) -> str:
        # The distribution's config/jvm.options, minus GC logs and heap dumps (its
        # relative paths point into the read-only distribution).
        lines = [
            "# Generated by stockbatch (src/stockbatch/services/elasticsearch.py) at each start.",
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.io.tmpdir=${ES_TMPDIR}",
            "20-:--add-modules=jdk.incubator.vector",
            "-XX:+ExitOnOutOfMemoryError",
            f"-XX:ErrorFile={self.log_file.parent}/hs_err_pid%p.log",
        ]
        return "\n".join(lines) + "\n"

    def _elasticsearch_yml(self, state: dict[str, Any]) -> str:
        lines = [
            "# Generated by stockbatch (src/stockbatch/services/elasticsearch.py) at each start:",
            "# edits are overwritten.",
            "cluster.name: stockbatch",
            "node.name: stockbatch-1",
            f"path.data: {json.dumps(str(self.data_dir))}",
            f"path.logs: {json.dumps(str(self.log_file.parent))}",
            # Loopback only: security is off, so no authentication at all.
            f"network.host: {HOST}",
            f"http.port: {state['port']}",
            f"transport.port: {state['transport_port']}",
            "discovery.type: single-node",
            "xpack.security.enabled: false",
            # Indices are created explicitly (from the index templates), never by a typo.
            "action.auto_create_index: false",
            # A developer disk at 90 % must not turn every index read-only mid-test.
            "cluster.routing.allocation.disk.threshold_enabled: false",
            "bootstrap.memory_lock: false",
        ]
        return "\n".join(lines) + "\n"
