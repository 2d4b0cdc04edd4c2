"""A real Apache Kafka 4 broker (KRaft, one combined broker+controller node) on loopback.

How it works:

1. :func:`ensure_kafka_jars` resolves ``org.apache.kafka:kafka_2.13`` (plus
   ``kafka-tools`` and a Log4j 2 backend) from Maven Central with
   ``deploy/services/kafka/pom.xml`` into a cache folder, once:
   ``$STOCKBATCH_CACHE/kafka-<version>/libs`` (default ``~/.cache/stockbatch``).
2. :class:`KafkaService` keeps everything of one broker under
   ``$STOCKBATCH_HOME/services/kafka/``: ``data/`` (the KRaft log dirs, kept across
   restarts), ``logs/server.log``, ``kafka.out`` (JVM stdout/stderr),
   ``server.properties`` (regenerated at each start), ``state.json`` (cluster id,
   ports, generated SCRAM passwords) and ``kafka.pid``.
3. ``up()`` formats the storage once (``kafka.tools.StorageTool format``, with two
   SCRAM-SHA-512 users: ``stockbatch`` for clients and ``kafka-broker`` for the
   broker's own inter-broker connections), starts ``java -cp 'libs/*' kafka.Kafka``
   detached, waits until the listener answers a Kafka ``ApiVersions`` request, and
   records the endpoint in ``$STOCKBATCH_HOME/services.json``.

With ``scram=True`` the client listener is ``SASL_PLAINTEXT`` with SCRAM-SHA-512
(the KRaft controller listener stays PLAINTEXT on loopback: Kafka does not support
SCRAM on controller listeners). Topics are never auto-created: producers must
create them, as on a production cluster.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import json
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

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

if TYPE_CHECKING:
    from stockbatch.settings import KafkaSettings, Settings

KAFKA_VERSION = "4.1.1"
"""Kafka release run locally; keep in sync with ``kafka.version`` in the pom."""

MIN_JAVA = 17
HOST = "127.0.0.1"
CLIENT_USER = "stockbatch"
BROKER_USER = "kafka-broker"
SCRAM_MECHANISM = "SCRAM-SHA-512"

# src/stockbatch/services/kafka.py -> the repository root (editable install / checkout).
REPO_ROOT = Path(__file__).resolve().parents[3]
POM = REPO_ROOT / "deploy" / "services" / "kafka" / "pom.xml"

_JAVA_HINT = "install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless)"
_MVN_HINT = "install Apache Maven (Debian: apt-get install maven)"


# ----------------------------------------------------------------------------- provisioning


def cache_root() -> Path:
    """Download cache: ``$STOCKBATCH_CACHE``, else ``$XDG_CACHE_HOME/stockbatch``, else
    ``~/.cache/stockbatch``."""
    if value := os.environ.get("STOCKBATCH_CACHE"):
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "stockbatch"


def kafka_libs_dir(version: str = KAFKA_VERSION, root: Path | None = None) -> Path:
    """Where the jars of Kafka ``version`` live (whether or not provisioned yet)."""
    return (root or cache_root()) / f"kafka-{version}" / "libs"


@functools.lru_cache(maxsize=8)
def java_version(java: str) -> str:
    """The full version of ``java`` (``17.0.15``), from ``java -version``."""
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f"`{java} -version` failed ({exc}): {_JAVA_HINT}") from exc
    match = re.search(r'version "([^"]+)"', out.stderr + out.stdout)
    if not match:
        raise ServiceError(f"cannot read the Java version from `{java} -version`: {out.stderr}")
    return match.group(1)


def find_java() -> str:
    """The ``java`` to run (``$JAVA_HOME/bin/java`` first), checked to be Java 17+."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    java = str(candidate) if candidate and candidate.exists() else shutil.which("java")
    if not java:
        raise ServiceError(f"`java` was not found on PATH (nor in $JAVA_HOME): {_JAVA_HINT}")
    parts = [int(p) for p in re.findall(r"\d+", java_version(java))[:2]] or [0]
    major = parts[1] if parts[0] == 1 and len(parts) > 1 else parts[0]  # "1.8.0" is Java 8
    if major < MIN_JAVA:
        raise ServiceError(f"Kafka 4 needs Java {MIN_JAVA}+, {java} is Java {major}: {_JAVA_HINT}")
    return java


def ensure_kafka_jars(
    settings: Settings | None = None,
    *,
    version: str = KAFKA_VERSION,
    root: Path | None = None,
) -> Path:
    """Return the folder of Kafka's jars, resolving them with Maven on first use.

    ``settings`` is accepted so callers pass what they have; the cache location
    comes from :func:`cache_root` (``STOCKBATCH_CACHE``) or ``root``. Safe to call
    from several processes at once (a file lock makes one of them download).
    Raises :class:`ServiceError` naming what to install if ``mvn`` or ``java`` is
    missing, and Maven's own output if the resolution fails.
    """
    del settings  # the cache is per user, not per STOCKBATCH_HOME
    libs = kafka_libs_dir(version, root)
    marker = libs.parent / "COMPLETE"
    if marker.exists() and libs.is_dir():
        return libs
    with file_lock(libs.parent / ".lock"):
        if marker.exists() and libs.is_dir():  # another process finished meanwhile
            return libs
        mvn = shutil.which("mvn")
        if not mvn:
            raise ServiceError(
                f"Kafka {version} is not in {libs.parent} yet and `mvn` is not on PATH to "
                f"fetch it from Maven Central: {_MVN_HINT}"
            )
        find_java()  # Maven needs it too; fail with the same clear message
        if not POM.exists():
            raise ServiceError(
                f"{POM} is missing (run from a stockbatch checkout), or provision the jars "
                f"by hand into {libs} and create {marker}"
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
            f"-Dkafka.version={version}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
        ]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ServiceError(f"Maven did not resolve Kafka {version} within 20 min") from exc
        broker_jar = tmp / f"kafka_2.13-{version}.jar"
        if done.returncode != 0 or not broker_jar.exists():
            output = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
            shutil.rmtree(tmp, ignore_errors=True)
            raise ServiceError(
                f"Maven could not resolve org.apache.kafka:kafka_2.13:{version} "
                f"(exit {done.returncode}):\n{output}"
            )
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
        jars = sorted(p.name for p in libs.glob("*.jar"))
        marker.write_text("\n".join(jars) + "\n")
    return libs


# ----------------------------------------------------------------------------- probing


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return bytes(buf)


def probe_kafka(bootstrap_servers: str, timeout: float = 2.0) -> bool:
    """True if some ``host:port`` of ``bootstrap_servers`` answers a Kafka ApiVersions request.

    Pure sockets, no client library. ApiVersions is allowed before SASL
    authentication, so this also works on a SCRAM listener; a KRaft broker only
    enables its listeners once it has caught up with the metadata log, so an
    answer means it is ready for clients.
    """
    client_id = b"stockbatch-probe"
    # Request header v1 (api_key=18 ApiVersions, version 0, correlation id, client id); empty body.
    request = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    frame = struct.pack(">i", len(request)) + request
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or HOST, int(port)), timeout) as sock:
                sock.settimeout(timeout)
                sock.sendall(frame)
                (size,) = struct.unpack(">i", _recv_exact(sock, 4))
                correlation, error = struct.unpack(">ih", _recv_exact(sock, size)[:6])
        except (OSError, ValueError, struct.error, ConnectionError):
            continue
        # 35 = UNSUPPORTED_VERSION: still a live Kafka answering (it lists its versions).
        if correlation == 7 and error in (0, 35):
            return True
    return False


def wait_for_kafka(bootstrap_servers: str, timeout: float) -> None:
    """Wait until a broker answers at ``bootstrap_servers``; ServiceError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if probe_kafka(bootstrap_servers, timeout=max(0.1, min(2.0, remaining))):
            return
        if time.monotonic() >= deadline:
            raise ServiceError(
                f"no Kafka broker answers at {bootstrap_servers} after {timeout:g} s: start one "
                "with `stockbatch services up kafka` or set STOCKBATCH_KAFKA__BOOTSTRAP_SERVERS"
            )
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


# ----------------------------------------------------------------------------- settings


_RECORDED_FIELDS = ("security_protocol", "sasl_mechanism", "sasl_username", "sasl_password")


def effective_kafka_settings(settings: Settings) -> KafkaSettings:
    """``settings.kafka`` completed from ``$STOCKBATCH_HOME/services.json``.

    Explicit settings win: when ``kafka.bootstrap_servers`` is set, the record is
    ignored entirely (it describes another cluster). Otherwise the recorded
    bootstrap servers are used, and the recorded security fields fill in every
    field still at its default. With nothing recorded, ``settings.kafka`` is
    returned unchanged (``bootstrap_servers`` stays None: the caller says how to
    start a broker).
    """
    kafka = settings.kafka
    if kafka.bootstrap_servers:
        return kafka
    record = recorded_endpoints(settings.home).get("kafka")
    if not record or not record.get("bootstrap_servers"):
        return kafka
    update: dict[str, Any] = {"bootstrap_servers": record["bootstrap_servers"]}
    fields = type(kafka).model_fields
    for name in _RECORDED_FIELDS:
        value = record.get(name)
        if value is None or getattr(kafka, name) != fields[name].default:
            continue
        update[name] = SecretStr(value) if name == "sasl_password" else value
    return kafka.model_copy(update=update)


# ----------------------------------------------------------------------------- the broker


@dataclass(frozen=True)
class ScramCredentials:
    """A SCRAM user of the local broker."""

    username: str
    password: str
    mechanism: str = SCRAM_MECHANISM


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in URL-safe base64 without padding (as Kafka's own)."""
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not value.startswith("-"):  # Kafka avoids ids that look like CLI flags
            return value


_LOG4J2 = """\
# Generated by stockbatch: the broker's log, rolled at 20 MB, 3 files kept.
status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
"""

_LOG4J2_TOOL = """\
# Generated by stockbatch: command-line tools print warnings and errors only.
status = warn
appender.console.type = Console
appender.console.name = STDERR
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.console.ref = STDERR
"""


class KafkaService:
    """One local Kafka broker under ``home/services/kafka`` (see the module doc).

    ``port`` is the client port on 127.0.0.1 (default: the one used last time, else
    a free one). ``scram=True`` puts SASL/SCRAM-SHA-512 on the client listener;
    :attr:`credentials` then holds the client user; ``scram=None`` (the default)
    means as at the last start, PLAINTEXT for a new broker.
    ``heap`` is the JVM heap (-Xms = -Xmx). ``class_cache`` keeps a JVM class-data
    sharing archive of Kafka's classes next to the jars (written at the first clean
    stop, used by every later start: about a third off the start-up time).
    """

    name = "kafka"

    def __init__(
        self,
        home: Path,
        port: int | None = None,
        scram: bool | None = None,
        *,
        version: str = KAFKA_VERSION,
        heap: str = "512m",
        start_timeout: float = 120.0,
        stop_timeout: float = 30.0,
        cache: Path | None = None,
        class_cache: bool = True,
    ) -> None:
        self.home = Path(home).expanduser().resolve()
        self.port = port
        self._scram = scram
        self.version = version
        self.heap = heap
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.cache = cache
        self.class_cache = class_cache
        self._proc: subprocess.Popen[bytes] | None = None

    # -- paths ---------------------------------------------------------------

    @property
    def dir(self) -> Path:
        """Everything of this broker: ``$STOCKBATCH_HOME/services/kafka``."""
        return self.home / "services" / "kafka"

    @property
    def data_dir(self) -> Path:
        """The KRaft log dir (topics and metadata); survives restarts."""
        return self.dir / "data"

    @property
    def log_file(self) -> Path:
        """The broker's own log."""
        return self.dir / "logs" / "server.log"

    @property
    def stdout_file(self) -> Path:
        """JVM stdout and stderr (crashes before logging starts land here)."""
        return self.dir / "kafka.out"

    @property
    def properties_file(self) -> Path:
        """``server.properties``, regenerated at each start."""
        return self.dir / "server.properties"

    @property
    def _state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def _pid_file(self) -> Path:
        return self.dir / "kafka.pid"

    # -- state ---------------------------------------------------------------

    def _load_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self._state_file.read_text())
        except FileNotFoundError:
            state = {}
        if not state.get("cluster_id"):
            # Passwords are generated once, at format time: the SCRAM users live in the
            # metadata log, so they must stay the same for as long as data_dir does.
            state = {
                "cluster_id": new_cluster_id(),
                "users": {
                    CLIENT_USER: secrets.token_urlsafe(18),
                    BROKER_USER: secrets.token_urlsafe(18),
                },
            }
        return state

    def _stored_state(self) -> dict[str, Any]:
        return read_state(self._state_file)

    @property
    def scram(self) -> bool:
        """Whether the client listener uses SASL/SCRAM (the option, else as last started)."""
        if self._scram is not None:
            return self._scram
        return bool(self._stored_state().get("security_protocol") == "SASL_PLAINTEXT")

    def _save_state(self, state: dict[str, Any]) -> None:
        write_state(self._state_file, state)

    @property
    def credentials(self) -> ScramCredentials | None:
        """The client SCRAM user when ``scram`` is on (None before the first ``up``)."""
        if not self.scram:
            return None
        password = self._stored_state().get("users", {}).get(CLIENT_USER)
        return ScramCredentials(CLIENT_USER, password) if password else None

    @property
    def security_protocol(self) -> str:
        """``SASL_PLAINTEXT`` with SCRAM on, else ``PLAINTEXT``."""
        return "SASL_PLAINTEXT" if self.scram else "PLAINTEXT"

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:<port>`` (the port chosen at the last ``up``)."""
        port = self.port or self._stored_state().get("port")
        if port is None:
            raise ServiceError(f"Kafka under {self.dir} has never been started: no port yet")
        return f"{HOST}:{port}"

    def endpoint(self) -> dict[str, Any]:
        """What ``services.json`` records for this broker."""
        creds = self.credentials
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "sasl_mechanism": SCRAM_MECHANISM if creds else None,
            "sasl_username": creds.username if creds else None,
            "sasl_password": creds.password if creds else None,
            "version": self.version,
            "data_dir": str(self.data_dir),
            "log_file": str(self.log_file),
        }

    def client_config(self, **overrides: Any) -> dict[str, Any]:
        """A confluent-kafka / librdkafka config dict that reaches this broker."""
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        creds = self.credentials
        if creds:
            config.update(
                {
                    "security.protocol": self.security_protocol,
                    "sasl.mechanism": creds.mechanism,
                    "sasl.username": creds.username,
                    "sasl.password": creds.password,
                }
            )
        config.update(overrides)
        return config

    # -- process -------------------------------------------------------------

    def _running_pid(self) -> int | None:
        """The broker's pid if it runs; checks the command line so a reused pid never matches."""
        try:
            pid = int(self._pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if self._proc is not None and self._proc.pid == pid:
            return pid if self._proc.poll() is None else None
        if not pid_alive(pid):
            return None
        cmdline = process_cmdline(pid)
        if "kafka.Kafka" in cmdline and str(self.properties_file) in cmdline:
            return pid
        return None

    def _class_archive(self, java: str, libs: Path) -> list[str]:
        """JVM flags to use (or, the first time, to write) the class-data sharing archive.

        The JVM dumps the archive when it exits normally; it dumps to a unique temp
        name and ``down()`` renames it into place, so two brokers stopping at once
        never write the same file and a killed broker leaves no half archive.
        """
        if not self.class_cache:
            return []
        archive = libs.parent / f"classes-jdk{java_version(java)}.jsa"
        if archive.exists():
            return [f"-XX:SharedArchiveFile={archive}"]
        dump = archive.with_name(f"{archive.name}.{uuid.uuid4().hex[:8]}.tmp")
        # -Xlog:cds=off: the dump lists every class it skips, hundreds of harmless lines.
        return [f"-XX:ArchiveClassesAtExit={dump}", "-Xlog:cds=off"]

    @staticmethod
    def _settle_class_archive(cmdline: list[str], clean_exit: bool) -> None:
        """After the broker exited: publish a freshly dumped archive, or drop a partial one."""
        for flag in cmdline:
            if not flag.startswith("-XX:ArchiveClassesAtExit="):
                continue
            dump = Path(flag.split("=", 1)[1])
            archive = dump.with_name(dump.name.rsplit(".", 2)[0])
            if clean_exit and dump.exists() and dump.stat().st_size > 0 and not archive.exists():
                os.replace(dump, archive)
            dump.unlink(missing_ok=True)

    def _java_command(self, java: str, libs: Path) -> list[str]:
        return [
            java,
            *self._class_archive(java, libs),
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            # Kafka's own launcher flags (bin/kafka-run-class.sh), minus the GC log.
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.log_file.parent}",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(self.properties_file),
        ]

    def _server_properties(self, state: dict[str, Any]) -> str:
        port, cport = state["port"], state["controller_port"]
        listener = self.security_protocol
        lines = [
            "# Generated by stockbatch (src/stockbatch/services/kafka.py) at each start:",
            "# edits are overwritten. One node is both broker and KRaft controller.",
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{HOST}:{cport}",
            "controller.listener.names=CONTROLLER",
            f"listeners={listener}://{HOST}:{port},CONTROLLER://{HOST}:{cport}",
            f"advertised.listeners={listener}://{HOST}:{port}",
            f"listener.security.protocol.map=CONTROLLER:PLAINTEXT,{listener}:{listener}",
            f"inter.broker.listener.name={listener}",
            f"log.dirs={self.data_dir}",
            # Producers create their topics explicitly, as on a production cluster.
            "auto.create.topics.enable=false",
            "num.partitions=1",
            "default.replication.factor=1",
            # A single node: every internal topic has one replica; fewer partitions than the
            # default 50 make the first consumer group start faster on a small machine.
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=10",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=10",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "min.insync.replicas=1",
            "group.initial.rebalance.delay.ms=0",
            # After a crash (SIGKILL) the controller refuses the restarted broker until the
            # old session expires (default 9 s). Shorter, still generous for loopback
            # heartbeats on a busy 2-core machine: a crash-restart is ready ~5 s sooner.
            "broker.heartbeat.interval.ms=1000",
            "broker.session.timeout.ms=4000",
        ]
        if self.scram:
            broker_password = state["users"][BROKER_USER]
            lines += [
                f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
                f"sasl.mechanism.inter.broker.protocol={SCRAM_MECHANISM}",
                "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{BROKER_USER}" password="{broker_password}";',
            ]
        return "\n".join(lines) + "\n"

    def _format(self, java: str, libs: Path, state: dict[str, Any]) -> None:
        """``kafka-storage format`` with the cluster id and both SCRAM users."""
        archive = [f for f in self._class_archive(java, libs) if f.startswith("-XX:Shared")]
        cmd = [
            java,
            "-Xmx256m",
            *archive,  # the broker's class archive serves the tool too (same jars)
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2-tool.properties'}",
            "-cp",
            f"{libs}/*",
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            state["cluster_id"],
            "--config",
            str(self.properties_file),
        ]
        for user, password in sorted(state["users"].items()):
            cmd += ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={password}]"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ServiceError("formatting the Kafka storage took over 180 s") from exc
        if done.returncode != 0:
            raise ServiceError(
                f"formatting the Kafka storage in {self.data_dir} failed "
                f"(exit {done.returncode}):\n{(done.stdout + done.stderr).strip()[-3000:]}"
            )

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
                    f"Kafka (pid {pid}) exited during start-up"
                    + (f" with code {code}" if code is not None else "")
                    + f":\n{self._log_tails()}"
                )
            if probe_kafka(self.bootstrap_servers, timeout=1.0):
                return
            if time.monotonic() >= deadline:
                raise ServiceError(
                    f"Kafka (pid {pid}) did not answer on {self.bootstrap_servers} within "
                    f"{timeout:g} s:\n{self._log_tails()}"
                )
            time.sleep(0.2)

    # -- lifecycle -----------------------------------------------------------

    def up(self) -> ServiceStatus:
        """Provision (jars, storage) if needed, start, wait until it answers, record it.

        Idempotent: a broker that already runs with the same options is kept.
        """
        java = find_java()
        libs = ensure_kafka_jars(version=self.version, root=self.cache)
        with file_lock(self.dir / ".lock"):
            state = self._load_state()
            pid = self._running_pid()
            if pid is not None:
                if (
                    self._scram is not None
                    and state.get("security_protocol") != self.security_protocol
                ) or (self.port is not None and self.port != state.get("port")):
                    raise ServiceError(
                        f"Kafka already runs under {self.dir} (pid {pid}, "
                        f"{state.get('security_protocol')} on port {state.get('port')}); "
                        "run `stockbatch services down kafka` before changing its options"
                    )
                self.port = state["port"]
                self._wait_ready(pid, self.start_timeout)
                record_endpoint(self.home, self.name, {**self.endpoint(), "pid": pid})
                return self.status()

            port = self.port or state.get("port") or free_port()
            if not port_is_free(port):
                raise ServiceError(
                    f"port {HOST}:{port} is taken by another process; stop it or choose "
                    "another port (`stockbatch services up kafka --port N`)"
                )
            cport = state.get("controller_port")
            if not cport or cport == port or not port_is_free(cport):
                cport = free_port()
                while cport == port:
                    cport = free_port()
            state.update(
                port=port,
                controller_port=cport,
                security_protocol=self.security_protocol,
                version=self.version,
            )
            self.port = port
            self.dir.mkdir(parents=True, exist_ok=True)
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._save_state(state)
            self.properties_file.write_text(self._server_properties(state))
            (self.dir / "log4j2.properties").write_text(_LOG4J2)
            (self.dir / "log4j2-tool.properties").write_text(_LOG4J2_TOOL)
            if not (self.data_dir / "meta.properties").exists():
                self._format(java, libs, state)

            with open(self.stdout_file, "ab") as out:
                stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
                out.write(f"\n==== stockbatch: starting Kafka {self.version} at {stamp}\n".encode())
            command = self._java_command(java, libs)
            self._proc = start_detached(command, cwd=self.dir, output=self.stdout_file)
            pid = self._proc.pid
            self._pid_file.write_text(f"{pid}\n")
            try:
                self._wait_ready(pid, self.start_timeout)
            except ServiceError:
                stop_process(pid, 5.0, self._proc)
                self._settle_class_archive(command, clean_exit=False)
                self._pid_file.unlink(missing_ok=True)
                raise
            record_endpoint(self.home, self.name, {**self.endpoint(), "pid": pid})
            return self.status()

    def down(self) -> bool:
        """SIGTERM, wait ``stop_timeout`` s, then SIGKILL; forget the endpoint. Keeps the data.

        Returns True if a broker was running.
        """
        if not self.dir.exists():  # never started here: nothing to stop, create nothing
            forget_endpoint(self.home, self.name)
            return False
        with file_lock(self.dir / ".lock"):
            pid = self._running_pid()
            if pid is not None:
                cmdline = process_cmdline(pid)
                ended = stop_process(pid, self.stop_timeout, self._proc)
                self._settle_class_archive(cmdline, clean_exit=ended == "terminated")
            self._pid_file.unlink(missing_ok=True)
            forget_endpoint(self.home, self.name)
            return pid is not None

    def kill(self) -> bool:
        """SIGKILL the broker at once (a crash, for fault tests); leaves services.json as is.

        ``up()`` afterwards recovers from the unclean shutdown on the same data.
        """
        with file_lock(self.dir / ".lock"):
            pid = self._running_pid()
            if pid is not None:
                cmdline = process_cmdline(pid)
                kill_process(pid, self._proc)
                self._settle_class_archive(cmdline, clean_exit=False)
            return pid is not None

    def restart(self) -> ServiceStatus:
        """``down()`` then ``up()`` on the same data dir and port."""
        self.down()
        return self.up()

    def purge(self) -> None:
        """Stop the broker and delete its folder (topics, logs, credentials)."""
        self.down()
        shutil.rmtree(self.dir, ignore_errors=True)

    def status(self) -> ServiceStatus:
        """Running (answers), unhealthy (process alive, no answer) or stopped."""
        pid = self._running_pid()
        endpoint: dict[str, Any] = {}
        with contextlib.suppress(ServiceError):
            endpoint = {**self.endpoint(), "pid": pid}
            endpoint.pop("sasl_password", None)  # status output is for humans and logs
        state: State
        if pid is None:
            state = "stopped"
            detail = "not running" if self._state_file.exists() else "never started here"
        elif probe_kafka(self.bootstrap_servers, timeout=2.0):
            state, detail = "running", f"Kafka {self.version} ({self.security_protocol})"
        else:
            state = "unhealthy"
            detail = f"process alive but {self.bootstrap_servers} does not answer"
        return ServiceStatus(
            name=self.name,
            state=state,
            pid=pid,
            endpoint=endpoint,
            data_dir=str(self.data_dir),
            log_file=str(self.log_file),
            detail=detail,
        )
