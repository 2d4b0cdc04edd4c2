"""A real Apache Kafka 4 broker (KRaft, one node that is both broker and controller)
on loopback: :class:`KafkaService`, its jars (:func:`ensure_kafka_jars`) and a
dependency-free readiness probe (:func:`probe_kafka`).

With ``scram=True`` the client listener is ``SASL_PLAINTEXT`` with SCRAM-SHA-512.
Files, ports and the provisioning steps: ``deploy/services/README.md``.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import struct
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from stockbatch.services.base import Launch
from stockbatch.services.jvm import (
    DEPLOY_DIR,
    JvmService,
    cache_root,
    copy_dependencies,
    find_java,
    find_mvn,
    jars_complete,
    java_version,
    log4j2_rolling_file,
)
from stockbatch.services.system import HOST, ServiceError, file_lock

if TYPE_CHECKING:
    from stockbatch.settings import Settings

KAFKA_VERSION = "4.1.1"
"""Kafka release run locally; keep in sync with ``kafka.version`` in the pom."""

CLIENT_USER = "stockbatch"
BROKER_USER = "kafka-broker"
SCRAM_MECHANISM = "SCRAM-SHA-512"

POM = DEPLOY_DIR / "kafka" / "pom.xml"


# ----------------------------------------------------------------------------- provisioning


def kafka_libs_dir(version: str = KAFKA_VERSION, root: Path | None = None) -> Path:
    """Where the jars of Kafka ``version`` live (whether or not provisioned yet)."""
    return (root or cache_root()) / f"kafka-{version}" / "libs"


def ensure_kafka_jars(
    settings: Settings | None = None,
    *,
    version: str = KAFKA_VERSION,
    root: Path | None = None,
) -> Path:
    """Return the folder of Kafka's jars, resolving them with Maven on first use.

    ``settings`` is accepted so callers pass what they have; the cache location
    comes from :func:`~stockbatch.services.jvm.cache_root` (``STOCKBATCH_CACHE``)
    or ``root``. Safe to call from several processes at once (a file lock makes one
    of them download). Raises :class:`ServiceError` naming what to install if
    ``mvn`` or ``java`` is missing, and Maven's own output if the resolution fails.
    """
    del settings  # the cache is per user, not per STOCKBATCH_HOME
    libs = kafka_libs_dir(version, root)
    if jars_complete(libs):
        return libs
    with file_lock(libs.parent / ".lock"):
        if jars_complete(libs):  # another process finished meanwhile
            return libs
        mvn = find_mvn(f"Kafka {version}", libs)
        find_java()  # Maven needs it too; fail with the same clear message
        if not POM.exists():
            raise ServiceError(
                f"{POM} is missing (run from a stockbatch checkout), or provision the jars "
                f"by hand into {libs} and create {libs.parent / 'COMPLETE'}"
            )
        copy_dependencies(mvn, POM, "kafka.version", version, "org.apache.kafka:kafka_2.13", libs)
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


_LOG4J2 = log4j2_rolling_file(
    "broker", "warn", "${sys:kafka.logs.dir}/server.log", "[%d] %p %m (%c)%n", "INFO"
)

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


class KafkaService(JvmService):
    """One local Kafka broker under ``home/services/kafka``.

    ``port`` is the client port on 127.0.0.1 (default: the one used last time, else
    a free one). ``scram=True`` puts SASL/SCRAM-SHA-512 on the client listener;
    :attr:`credentials` then holds the client user; ``scram=None`` (the default)
    means as at the last start, PLAINTEXT for a new broker.
    ``heap`` is the JVM heap (-Xms = -Xmx). ``class_cache`` keeps a JVM class-data
    sharing archive of Kafka's classes next to the jars (written at the first clean
    stop, used by every later start: about a third off the start-up time).
    """

    name = "kafka"
    title = "Kafka"
    port_hint = "`stockbatch services up kafka --port N`"
    log_name = "logs/server.log"
    secret_fields: ClassVar[tuple[str, ...]] = ("sasl_password",)

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
        super().__init__(
            home,
            port,
            version=version,
            heap=heap,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
            cache=cache,
        )
        self._scram = scram
        self.class_cache = class_cache

    @property
    def properties_file(self) -> Path:
        """``server.properties``, regenerated at each start."""
        return self.dir / "server.properties"

    # -- options and endpoint --------------------------------------------------

    @property
    def scram(self) -> bool:
        """Whether the client listener uses SASL/SCRAM (the option, else as last started)."""
        if self._scram is not None:
            return self._scram
        return bool(self._stored_state().get("security_protocol") == "SASL_PLAINTEXT")

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
        return self.address

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

    # -- what differs from the other services ------------------------------------

    def _state_for_start(self) -> dict[str, Any]:
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

    def _check_options(self, state: dict[str, Any], pid: int) -> None:
        if (
            self._scram is not None and state.get("security_protocol") != self.security_protocol
        ) or (self.port is not None and self.port != state.get("port")):
            raise ServiceError(
                f"Kafka already runs under {self.dir} (pid {pid}, "
                f"{state.get('security_protocol')} on port {state.get('port')}); "
                "run `stockbatch services down kafka` before changing its options"
            )

    def _ensure_jars(self) -> Path:
        return ensure_kafka_jars(version=self.version, root=self.cache)

    def _prepare(self, state: dict[str, Any], tools: tuple[str, Path]) -> Launch:
        java, libs = tools
        state.update(
            controller_port=self._second_port(state, "controller_port", state["port"]),
            security_protocol=self.security_protocol,
            version=self.version,
        )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._save_state(state)
        self.properties_file.write_text(self._server_properties(state))
        (self.dir / "log4j2.properties").write_text(_LOG4J2)
        (self.dir / "log4j2-tool.properties").write_text(_LOG4J2_TOOL)
        if not (self.data_dir / "meta.properties").exists():
            self._format(java, libs, state)
        return Launch(self._java_command(java, libs), cwd=self.dir)

    def _owns(self, cmdline: list[str]) -> bool:
        return "kafka.Kafka" in cmdline and str(self.properties_file) in cmdline

    def _ready(self, timeout: float) -> bool:
        return probe_kafka(self.bootstrap_servers, timeout=timeout)

    def _running_detail(self) -> str:
        return f"{self.label} ({self.security_protocol})"

    # -- the JVM and its files ----------------------------------------------------

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

    def _after_exit(self, cmdline: list[str], clean: bool) -> None:
        """After the broker exited: publish a freshly dumped archive, or drop a partial one."""
        for flag in cmdline:
            if not flag.startswith("-XX:ArchiveClassesAtExit="):
                continue
            dump = Path(flag.split("=", 1)[1])
            archive = dump.with_name(dump.name.rsplit(".", 2)[0])
            if clean and dump.exists() and dump.stat().st_size > 0 and not archive.exists():
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
