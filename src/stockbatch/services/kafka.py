"""A real Apache Kafka 4 broker (KRaft, one node that is both broker and controller)
on loopback: :class:`KafkaService`, a cluster of them (:class:`KafkaCluster`), their
jars (:func:`ensure_kafka_jars`) and a dependency-free readiness probe
(:func:`probe_kafka`).

By default every listener uses TLS with a certificate of the home's CA
(:mod:`stockbatch.services.tls`): the client listener is ``SASL_SSL`` with
SCRAM-SHA-512 (clients verify the broker's certificate and host name against
``ca.pem``), the KRaft controller listener ``SSL`` with mutual TLS, and a cluster's
brokers talk to each other over the same ``SASL_SSL`` listener. ``insecure=True``
(``services up kafka --insecure``) keeps plain listeners: ``PLAINTEXT``, or
``SASL_PLAINTEXT`` with ``scram=True``. Passwords live in 0600 files only
(``state.json``, ``server.properties``, ``client.properties``), never on a command line.
Files, ports and the provisioning steps: ``deploy/services/README.md``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from stockbatch.services import tls
from stockbatch.services.base import Launch, ServiceStatus, State
from stockbatch.services.endpoints import forget_endpoint, record_endpoint, recorded_endpoints
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
from stockbatch.services.system import (
    HOST,
    ServiceError,
    file_lock,
    free_port,
    kill_process,
    port_is_free,
    process_cmdline,
    read_state,
    wait_exit,
    write_private,
    write_state,
)

if TYPE_CHECKING:
    from stockbatch.settings import Settings

KAFKA_VERSION = "4.1.1"
"""Kafka release run locally; keep in sync with ``kafka.version`` in the pom."""

CLIENT_USER = "stockbatch"
BROKER_USER = "kafka-broker"
SCRAM_MECHANISM = "SCRAM-SHA-512"
CERT_NAME = "kafka"
"""The brokers' certificate in the home's CA folder (``services/tls/kafka.pem``): one
for every node, its SANs are the loopback names they all listen on."""

INSECURE_WARNING = (
    "Kafka runs WITHOUT TLS (--insecure): records, and SCRAM logins with --scram, cross "
    "127.0.0.1 in clear text; run `stockbatch services down --purge kafka && stockbatch "
    "services up kafka` for SASL_SSL (the purge deletes the topics)"
)

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


def kafka_ssl_context(
    cafile: Path | str, certfile: Path | str | None = None, keyfile: Path | str | None = None
) -> ssl.SSLContext:
    """A client TLS context that trusts ``cafile`` only and checks the host name (what
    :func:`probe_kafka` uses on a TLS listener); with ``certfile``/``keyfile`` it also
    presents that pair (the controller listener wants a client certificate)."""
    context = ssl.create_default_context(cafile=str(cafile))
    if certfile is not None:
        context.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
    return context


def probe_kafka(
    bootstrap_servers: str, timeout: float = 2.0, ssl_context: ssl.SSLContext | None = None
) -> bool:
    """True if some ``host:port`` of ``bootstrap_servers`` answers a Kafka ApiVersions request.

    Pure sockets, no client library. ApiVersions is allowed before SASL
    authentication, so this also works on a SCRAM listener; a KRaft broker only
    enables its listeners once it has caught up with the metadata log, so an
    answer means it is ready for clients. With ``ssl_context`` (a TLS listener,
    :func:`kafka_ssl_context`) the socket is wrapped first, so the broker's
    certificate and host name are verified before anything is sent.
    """
    client_id = b"stockbatch-probe"
    # Request header v1 (api_key=18 ApiVersions, version 0, correlation id, client id); empty body.
    request = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    frame = struct.pack(">i", len(request)) + request
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        host = host.strip("[]") or HOST
        try:
            with contextlib.ExitStack() as stack:
                sock = stack.enter_context(socket.create_connection((host, int(port)), timeout))
                sock.settimeout(timeout)
                if ssl_context is not None:  # the handshake runs here, within the timeout
                    sock = stack.enter_context(ssl_context.wrap_socket(sock, server_hostname=host))
                sock.sendall(frame)
                (size,) = struct.unpack(">i", _recv_exact(sock, 4))
                correlation, error = struct.unpack(">ih", _recv_exact(sock, size)[:6])
        except (OSError, ValueError, struct.error, ConnectionError):  # ssl.SSLError is an OSError
            continue
        # 35 = UNSUPPORTED_VERSION: still a live Kafka answering (it lists its versions).
        if correlation == 7 and error in (0, 35):
            return True
    return False


def wait_for_kafka(
    bootstrap_servers: str, timeout: float, ssl_context: ssl.SSLContext | None = None
) -> None:
    """Wait until a broker answers at ``bootstrap_servers`` (over TLS with ``ssl_context``);
    ServiceError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if probe_kafka(
            bootstrap_servers, timeout=max(0.1, min(2.0, remaining)), ssl_context=ssl_context
        ):
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


def security_protocol_of(tls_on: bool, scram: bool) -> str:
    """``SASL_SSL`` with TLS (SCRAM is then always on); else ``SASL_PLAINTEXT`` or ``PLAINTEXT``."""
    if tls_on:
        return "SASL_SSL"
    return "SASL_PLAINTEXT" if scram else "PLAINTEXT"


def _jaas(user: str, password: str) -> str:
    """A SCRAM login line (``sasl.jaas.config``): only ever written to 0600 files."""
    return (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{user}" password="{password}";'
    )


def librdkafka_config(
    bootstrap_servers: str,
    protocol: str,
    creds: ScramCredentials | None,
    cafile: str | None,
    **overrides: Any,
) -> dict[str, Any]:
    """A confluent-kafka / librdkafka config dict for a listener of this module's brokers.

    The host name check stays librdkafka's default
    (``ssl.endpoint.identification.algorithm=https``): the certificates name 127.0.0.1.
    """
    config: dict[str, Any] = {"bootstrap.servers": bootstrap_servers, "security.protocol": protocol}
    if creds is not None and protocol.startswith("SASL"):
        config.update(
            {
                "sasl.mechanism": creds.mechanism,
                "sasl.username": creds.username,
                "sasl.password": creds.password,
            }
        )
    if cafile and protocol.endswith("SSL"):
        config["ssl.ca.location"] = cafile
    config.update(overrides)
    return config


def java_client_properties(
    bootstrap_servers: str, protocol: str, creds: ScramCredentials | None, cafile: str | None
) -> str:
    """Kafka's Java client settings for the same listener (``--command-config``,
    ``--producer.config`` of Kafka's tools): written to a 0600 file, never passed on a
    command line."""
    lines = [
        "# Generated by stockbatch at each start: Kafka's Java tools' client settings",
        "# (holds a password: mode 0600).",
        f"bootstrap.servers={bootstrap_servers}",
        f"security.protocol={protocol}",
    ]
    if creds is not None and protocol.startswith("SASL"):
        lines += [
            f"sasl.mechanism={creds.mechanism}",
            f"sasl.jaas.config={_jaas(creds.username, creds.password)}",
        ]
    if cafile and protocol.endswith("SSL"):
        lines += [
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={cafile}",
            "ssl.endpoint.identification.algorithm=https",
        ]
    return "\n".join(lines) + "\n"


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


class _ClientSecurity:
    """The client listeners' security of a broker or a cluster, from its stored state
    (as last started), else from its options (``insecure``, ``_scram``)."""

    insecure: bool
    _scram: bool | None

    def _security_state(self) -> dict[str, Any]:
        """The stored state holding ``security_protocol``, ``ca_file`` and ``users``."""
        raise NotImplementedError

    def _wanted_protocol(self, state: dict[str, Any]) -> str:
        """The client listeners' protocol the options ask for (``state``: the last start's)."""
        if not self.insecure:
            return security_protocol_of(True, True)
        scram = self._scram
        if scram is None:
            scram = state.get("security_protocol") == "SASL_PLAINTEXT"
        return security_protocol_of(False, scram)

    @property
    def security_protocol(self) -> str:
        """The client listeners' protocol: as last started (``SASL_SSL``, ``SASL_PLAINTEXT``
        or ``PLAINTEXT``), else what the options ask for."""
        state = self._security_state()
        return str(state.get("security_protocol") or self._wanted_protocol(state))

    @property
    def tls(self) -> bool:
        """Whether the listeners use TLS (as last started, else the options)."""
        return self.security_protocol.endswith("SSL")

    @property
    def scram(self) -> bool:
        """Whether the client listeners use SASL/SCRAM (always with TLS)."""
        return self.security_protocol.startswith("SASL")

    @property
    def ca_file(self) -> Path | None:
        """The CA clients verify the brokers with (``ssl_cafile``); None without TLS."""
        value = self._security_state().get("ca_file")
        return Path(value) if value and self.tls else None

    @property
    def credentials(self) -> ScramCredentials | None:
        """The client SCRAM user when SCRAM is on (None before the first ``up``)."""
        if not self.scram:
            return None
        password = self._security_state().get("users", {}).get(CLIENT_USER)
        return ScramCredentials(CLIENT_USER, password) if password else None


class KafkaService(_ClientSecurity, JvmService):
    """One local Kafka broker under ``home/services/kafka``.

    ``port`` is the client port on 127.0.0.1 (default: the one used last time, else
    a free one). By default the client listener is ``SASL_SSL`` (SCRAM-SHA-512 over
    TLS, certificate from the home's CA) and the controller listener ``SSL`` (mutual
    TLS); :attr:`credentials` holds the client user and :attr:`ca_file` what clients
    trust. ``insecure=True`` keeps plain listeners (:attr:`warnings` says so), where
    ``scram=True`` puts SASL/SCRAM-SHA-512 on the client listener and ``scram=None``
    means as at the last start (PLAINTEXT for a new broker). A home set up with TLS
    is never silently restarted without it, nor the reverse.
    ``heap`` is the JVM heap (-Xms = -Xmx). ``class_cache`` keeps a JVM class-data
    sharing archive of Kafka's classes next to the jars (written at the first clean
    stop, used by every later start: about a third off the start-up time).
    """

    name = "kafka"
    title = "Kafka"
    port_hint = "`stockbatch services up kafka --port N`"
    log_name = "logs/server.log"
    secret_fields: ClassVar[tuple[str, ...]] = ("sasl_password",)

    def _security_state(self) -> dict[str, Any]:
        return self._stored_state()

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
        insecure: bool = False,
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
        self.insecure = insecure
        self._scram = scram
        self.class_cache = class_cache
        self.warnings: list[str] = []

    @property
    def properties_file(self) -> Path:
        """``server.properties`` (0600: the broker's SCRAM password), regenerated at each start."""
        return self.dir / "server.properties"

    @property
    def client_properties_file(self) -> Path:
        """``client.properties`` (0600), regenerated at each start: the client settings for
        Kafka's Java tools (``--command-config`` / ``--producer.config``)."""
        return self.dir / "client.properties"

    @property
    def keystore_file(self) -> Path:
        """The broker's PEM keystore (0600): its private key (PKCS#8), certificate and CA."""
        return self.dir / "tls" / "keystore.pem"

    # -- options and endpoint --------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:<port>`` (the port chosen at the last ``up``)."""
        return self.address

    def endpoint(self) -> dict[str, Any]:
        """What ``services.json`` records for this broker."""
        creds = self.credentials
        ca = self.ca_file
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "sasl_mechanism": SCRAM_MECHANISM if creds else None,
            "sasl_username": creds.username if creds else None,
            "sasl_password": creds.password if creds else None,
            "ssl_cafile": str(ca) if ca else None,
            "version": self.version,
            "data_dir": str(self.data_dir),
            "log_file": str(self.log_file),
        }

    def client_config(self, **overrides: Any) -> dict[str, Any]:
        """A confluent-kafka / librdkafka config dict that reaches this broker (security
        settings included)."""
        ca = self.ca_file
        return librdkafka_config(
            self.bootstrap_servers,
            self.security_protocol,
            self.credentials,
            str(ca) if ca else None,
            **overrides,
        )

    def up(self) -> ServiceStatus:
        """Provision, start (or keep) the broker, wait until it answers, record it
        (see :meth:`LocalService.up`); :attr:`warnings` says what the user should know."""
        self.warnings = []
        return super().up()

    # -- what differs from the other services ------------------------------------

    def _state_for_start(self) -> dict[str, Any]:
        self._refuse_next_to_cluster()
        try:
            state: dict[str, Any] = json.loads(self._state_file.read_text())
        except FileNotFoundError:
            state = {}
        refuse_switch(self.dir, state, insecure=self.insecure, scram=self._scram)
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
            self._scram is not None
            and state.get("security_protocol") != self._wanted_protocol(state)
        ) or (self.port is not None and self.port != state.get("port")):
            raise ServiceError(
                f"Kafka already runs under {self.dir} (pid {pid}, "
                f"{state.get('security_protocol')} on port {state.get('port')}); "
                "run `stockbatch services down kafka` before changing its options"
            )
        if self.insecure:
            self.warnings.append(INSECURE_WARNING)

    def _ensure_jars(self) -> Path:
        return ensure_kafka_jars(version=self.version, root=self.cache)

    def _prepare(self, state: dict[str, Any], tools: tuple[str, Path]) -> Launch:
        java, libs = tools
        tls_on = not self.insecure
        state.update(
            controller_port=self._controller_port(state),
            security_protocol=self._wanted_protocol(state),
            ca_file=str(tls.ca_file(self.home)) if tls_on else None,
            version=self.version,
        )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if tls_on:
            self._install_certificate()
        else:
            self.warnings.append(INSECURE_WARNING)
            self.keystore_file.unlink(missing_ok=True)
        self._save_state(state)
        write_private(self.properties_file, self._server_properties(state))
        self._write_client_properties(state)
        (self.dir / "log4j2.properties").write_text(_LOG4J2)
        (self.dir / "log4j2-tool.properties").write_text(_LOG4J2_TOOL)
        if not (self.data_dir / "meta.properties").exists():
            self._format(java, libs, state)
        return Launch(self._java_command(java, libs), cwd=self.dir)

    def _install_certificate(self) -> None:
        """Issue (or reuse) the brokers' certificate and write this node's PEM keystore:
        the key (PKCS#8, as Kafka's PEM keystore wants it), the certificate, the CA."""
        issued = tls.issue(self.home, CERT_NAME)
        pem = issued.key_file.read_text() + issued.cert_file.read_text()
        write_private(self.keystore_file, pem + issued.ca_file.read_text())

    def _write_client_properties(self, state: dict[str, Any]) -> None:
        password = state["users"][CLIENT_USER]
        creds = ScramCredentials(CLIENT_USER, password)
        write_private(
            self.client_properties_file,
            java_client_properties(
                f"{HOST}:{state['port']}",
                state["security_protocol"],
                creds,
                state.get("ca_file"),
            ),
        )

    def _controller_port(self, state: dict[str, Any]) -> int:
        """The KRaft controller port (the one of the last start if still free)."""
        return self._second_port(state, "controller_port", state["port"])

    def _record(self, pid: int) -> ServiceStatus:
        # Remembered so that `services status|down|up kafka` without --brokers find
        # the single broker again (a cluster writes the same file with its size).
        write_topology(self.home, 1)
        return super()._record(pid)

    def _refuse_next_to_cluster(self) -> None:
        """A single broker never starts while a cluster of the same home runs: services.json
        holds one Kafka endpoint."""
        if KafkaCluster.stored_size(self.home) and (running := KafkaCluster(self.home).running()):
            raise ServiceError(
                f"a Kafka cluster runs under {self.dir} (node(s) {', '.join(map(str, running))}); "
                "run `stockbatch services down kafka` first"
            )

    def _owns(self, cmdline: list[str]) -> bool:
        return "kafka.Kafka" in cmdline and str(self.properties_file) in cmdline

    def probe_context(self) -> ssl.SSLContext | None:
        """The TLS context a raw client of the client listener needs (None without TLS)."""
        ca = self.ca_file
        return kafka_ssl_context(ca) if ca else None

    def _ready(self, timeout: float) -> bool:
        return probe_kafka(
            self.bootstrap_servers, timeout=timeout, ssl_context=self.probe_context()
        )

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
        listener = state["security_protocol"]
        tls_on = listener.endswith("SSL")
        controller = "SSL" if tls_on else "PLAINTEXT"
        rf, isr = self._replicas()
        lines = [
            "# Generated by stockbatch (src/stockbatch/services/kafka.py) at each start:",
            f"# edits are overwritten. {self._role_comment()}",
            "process.roles=broker,controller",
            f"node.id={self._node_id()}",
            f"controller.quorum.voters={self._voters(cport)}",
            "controller.listener.names=CONTROLLER",
            f"listeners={listener}://{HOST}:{port},CONTROLLER://{HOST}:{cport}",
            f"advertised.listeners={listener}://{HOST}:{port}",
            f"listener.security.protocol.map=CONTROLLER:{controller},{listener}:{listener}",
            f"inter.broker.listener.name={listener}",
            f"log.dirs={self.data_dir}",
            # Producers create their topics explicitly, as on a production cluster.
            "auto.create.topics.enable=false",
            "num.partitions=1",
            f"default.replication.factor={rf}",
            # A single node: every internal topic has one replica (a cluster: 3, and 2 must
            # acknowledge); fewer partitions than the default 50 make the first consumer
            # group start faster on a small machine.
            f"offsets.topic.replication.factor={rf}",
            "offsets.topic.num.partitions=10",
            f"transaction.state.log.replication.factor={rf}",
            f"transaction.state.log.min.isr={isr}",
            "transaction.state.log.num.partitions=10",
            f"share.coordinator.state.topic.replication.factor={rf}",
            f"share.coordinator.state.topic.min.isr={isr}",
            f"min.insync.replicas={isr}",
            "group.initial.rebalance.delay.ms=0",
            # After a crash (SIGKILL) the controller refuses the restarted broker until the
            # old session expires (default 9 s). Shorter, still generous for loopback
            # heartbeats on a busy 2-core machine: a crash-restart is ready ~5 s sooner.
            "broker.heartbeat.interval.ms=1000",
            "broker.session.timeout.ms=4000",
        ]
        if listener.startswith("SASL"):
            # The brokers' own login on the inter-broker listener (this file is 0600).
            lines += [
                f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
                f"sasl.mechanism.inter.broker.protocol={SCRAM_MECHANISM}",
                f"listener.name.{listener.lower()}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config="
                + _jaas(BROKER_USER, state["users"][BROKER_USER]),
            ]
        if tls_on:
            # Every listener: this node's key and certificate (PEM keystore), the home's CA
            # as the only trusted root (PEM truststore), host names checked whenever a node
            # dials another (client side of the inter-broker and controller connections).
            # The controller listener also wants the caller's certificate (mutual TLS).
            lines += [
                "ssl.keystore.type=PEM",
                f"ssl.keystore.location={self.keystore_file}",
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={state['ca_file']}",
                "ssl.endpoint.identification.algorithm=https",
                "ssl.enabled.protocols=TLSv1.3,TLSv1.2",
                "listener.name.controller.ssl.client.auth=required",
            ]
        return "\n".join(lines) + "\n"

    def _role_comment(self) -> str:
        return "One node is both broker and KRaft controller."

    def _node_id(self) -> int:
        return 1

    def _voters(self, controller_port: int) -> str:
        """``controller.quorum.voters``: this node alone."""
        return f"1@{HOST}:{controller_port}"

    def _replicas(self) -> tuple[int, int]:
        """Replication factor and min.insync.replicas of the internal topics."""
        return 1, 1

    def _format(self, java: str, libs: Path, state: dict[str, Any]) -> None:
        """``kafka-storage format`` with the cluster id and both SCRAM users.

        The users' passwords are arguments of ``--add-scram``: they go to a 0600 Java
        argument file (``java @file``, expanded by the launcher), deleted afterwards, so
        no command line (``/proc/<pid>/cmdline``, ``ps``) ever shows them.
        """
        archive = [f for f in self._class_archive(java, libs) if f.startswith("-XX:Shared")]
        args = [
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            state["cluster_id"],
            "--config",
            str(self.properties_file),
        ]
        for user, password in sorted(state["users"].items()):
            args += ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={password}]"]
        arg_file = self.dir / ".format.args"
        write_private(arg_file, "".join(f"{_java_arg(a)}\n" for a in args))
        cmd = [
            java,
            "-Xmx256m",
            *archive,  # the broker's class archive serves the tool too (same jars)
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2-tool.properties'}",
            "-cp",
            f"{libs}/*",
            f"@{arg_file}",
        ]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ServiceError("formatting the Kafka storage took over 180 s") from exc
        finally:
            arg_file.unlink(missing_ok=True)
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip()[-3000:]
            for password in state["users"].values():  # never in an error message either
                output = output.replace(password, "***")
            raise ServiceError(
                f"formatting the Kafka storage in {self.data_dir} failed "
                f"(exit {done.returncode}):\n{output}"
            )


def refuse_switch(
    folder: Path, state: dict[str, Any], *, insecure: bool, scram: bool | None
) -> None:
    """Refuse options a Kafka home was not set up with (``state``: its last start): TLS or
    not never changes silently, since clients set up for one would fail (or send
    passwords in clear) with the other; and the TLS listener always authenticates."""
    if not insecure and scram is False:
        raise ServiceError(
            "--no-scram needs --insecure: Kafka's TLS listener always authenticates "
            "clients (SASL_SSL, SCRAM-SHA-512)"
        )
    protocol = state.get("security_protocol")
    if not protocol:
        return  # never started: either mode
    was_tls = str(protocol).endswith("SSL")
    if was_tls != insecure:
        return
    runs = "with TLS (SASL_SSL)" if was_tls else f"without TLS ({protocol}, --insecure)"
    flags = "without --insecure" if was_tls else "with --insecure"
    raise ServiceError(
        f"Kafka under {folder} was set up {runs}; run `stockbatch services up kafka` "
        f"{flags} as before, or `stockbatch services down --purge kafka` first to set it "
        "up afresh (the purge deletes its topics)"
    )


def _java_arg(value: str) -> str:
    """One argument of a Java ``@argfile``: double-quoted, backslashes and quotes escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ----------------------------------------------------------------------------- a cluster

CLUSTER_REPLICAS = 3
"""Replication factor of every topic of a cluster (min.insync.replicas is one less)."""

QUORUM_LOST_GRACE = 5.0
"""Seconds a cluster's ``down`` still waits for nodes once fewer than a quorum run."""

_TOPOLOGY = "topology.json"


def write_topology(home: Path, brokers: int) -> None:
    """Remember how many nodes the last ``up`` of ``home``'s Kafka ran."""
    folder = Path(home) / "services" / "kafka"
    folder.mkdir(parents=True, exist_ok=True)
    write_state(folder / _TOPOLOGY, {"brokers": brokers})


def last_brokers(home: Path) -> int:
    """How many nodes the last ``up`` of ``home``'s Kafka ran (1 when never started)."""
    return int(read_state(Path(home) / "services" / "kafka" / _TOPOLOGY).get("brokers") or 1)


class KafkaNode(KafkaService):
    """Node ``node_id`` of a :class:`KafkaCluster`: a broker and controller of its own (JVM,
    ``node-<id>/`` folder, client and controller ports); the cluster chooses its ports,
    holds the shared cluster id and SCRAM users, and records the endpoint."""

    def __init__(self, cluster: KafkaCluster, node_id: int) -> None:
        super().__init__(
            cluster.home,
            scram=cluster._scram,
            version=cluster.version,
            heap=cluster.heap,
            start_timeout=cluster.start_timeout,
            stop_timeout=cluster.stop_timeout,
            cache=cluster.cache,
            class_cache=cluster.class_cache,
            insecure=cluster.insecure,
        )
        self.cluster = cluster
        self.node_id = node_id
        self.name = f"kafka-node-{node_id}"  # its pid and output files; never in services.json

    @property
    def dir(self) -> Path:
        """``$STOCKBATCH_HOME/services/kafka/node-<id>``."""
        return self.cluster.dir / f"node-{self.node_id}"

    def _wanted_protocol(self, state: dict[str, Any]) -> str:
        """As the cluster planned it: all nodes share one listener setup."""
        planned = self.cluster.stored_state().get("security_protocol")
        return str(planned) if planned else self.cluster._wanted_protocol({})

    @property
    def credentials(self) -> ScramCredentials | None:
        """The cluster's client user."""
        return self.cluster.credentials

    def _state_for_start(self) -> dict[str, Any]:
        shared = self.cluster.stored_state()
        return {
            **self._stored_state(),
            "cluster_id": shared["cluster_id"],
            "users": shared["users"],
        }

    def _controller_port(self, state: dict[str, Any]) -> int:
        return int(self.cluster.stored_state()["nodes"][str(self.node_id)]["controller_port"])

    def _record(self, pid: int) -> ServiceStatus:
        return self.status()  # the cluster records one endpoint for all nodes

    def _role_comment(self) -> str:
        return (
            f"Node {self.node_id} of a {self.cluster.brokers}-node cluster, broker and controller."
        )

    def _node_id(self) -> int:
        return self.node_id

    def _voters(self, controller_port: int) -> str:
        """Every node of the cluster: a KRaft quorum of them all."""
        nodes = self.cluster.stored_state()["nodes"]
        return ",".join(
            f"{i}@{HOST}:{nodes[str(i)]['controller_port']}"
            for i in range(1, self.cluster.brokers + 1)
        )

    def _replicas(self) -> tuple[int, int]:
        return self.cluster.replication_factor, self.cluster.min_insync_replicas

    def _running_detail(self) -> str:
        return f"node {self.node_id}: {self.label} ({self.security_protocol}) at {self.address}"


class KafkaCluster(_ClientSecurity):
    """A local KRaft cluster of ``brokers`` nodes under ``home/services/kafka``.

    Every node is broker and controller (``process.roles=broker,controller``; the
    quorum is all of them), in its own JVM with its own ``node-<id>/`` folder and
    ports (free ones, kept across restarts). Topics get :data:`CLUSTER_REPLICAS`
    replicas and ``min.insync.replicas`` one less, so with ``acks=all`` a write
    survives any one node and the cluster keeps serving with one node down.
    ``cluster.json`` holds the cluster id, the SCRAM users and the ports;
    ``services.json`` gets one ``kafka`` entry whose ``bootstrap_servers`` lists
    every node. The other options are :class:`KafkaService`'s, for every node: by
    default clients, brokers (inter-broker traffic on the ``SASL_SSL`` listener, as the
    ``kafka-broker`` SCRAM user) and the controller quorum (``SSL``, mutual TLS) all
    talk TLS with the home's CA; ``insecure=True`` keeps plain listeners.
    """

    name = "kafka"

    def __init__(
        self,
        home: Path,
        brokers: int | None = None,
        scram: bool | None = None,
        *,
        version: str = KAFKA_VERSION,
        heap: str = "512m",
        start_timeout: float = 180.0,
        stop_timeout: float = 30.0,
        cache: Path | None = None,
        class_cache: bool = True,
        insecure: bool = False,
    ) -> None:
        # TLS (and authentication) unless `services up --insecure`.
        self.insecure = insecure
        self.warnings: list[str] = []
        self.home = Path(home).expanduser().resolve()
        size = brokers or self.stored_size(self.home) or CLUSTER_REPLICAS
        if size < CLUSTER_REPLICAS:
            raise ServiceError(
                f"a Kafka cluster needs at least {CLUSTER_REPLICAS} brokers (a quorum that "
                f"survives one node down), not {size}; --brokers 1 runs a single broker"
            )
        self.brokers = size
        self._scram = scram
        self.version = version
        self.heap = heap
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.cache = cache
        self.class_cache = class_cache
        self.nodes = [KafkaNode(self, i) for i in range(1, size + 1)]

    # -- files and options ---------------------------------------------------------

    @property
    def dir(self) -> Path:
        """``$STOCKBATCH_HOME/services/kafka`` (the single broker's folder too)."""
        return self.home / "services" / "kafka"

    @property
    def _state_file(self) -> Path:
        return self.dir / "cluster.json"

    @staticmethod
    def stored_size(home: Path) -> int | None:
        """The size of the cluster formatted under ``home`` (None: none was)."""
        size = read_state(Path(home) / "services" / "kafka" / "cluster.json").get("brokers")
        return int(size) if size else None

    def stored_state(self) -> dict[str, Any]:
        """``cluster.json``: cluster id, users, size, protocol, each node's ports."""
        return read_state(self._state_file)

    def _security_state(self) -> dict[str, Any]:
        return self.stored_state()

    @property
    def client_properties_file(self) -> Path:
        """``client.properties`` (0600) for Kafka's Java tools, every node as bootstrap."""
        return self.dir / "client.properties"

    @property
    def replication_factor(self) -> int:
        """Replicas of every topic (internal ones and those the pipeline creates)."""
        return CLUSTER_REPLICAS

    @property
    def min_insync_replicas(self) -> int:
        """Replicas that must have a write before ``acks=all`` confirms it."""
        return CLUSTER_REPLICAS - 1

    @property
    def bootstrap_servers(self) -> str:
        """Every node's client address, comma-separated (as clients take them)."""
        return ",".join(node.address for node in self.nodes)

    def client_config(self, **overrides: Any) -> dict[str, Any]:
        """A confluent-kafka / librdkafka config dict that reaches the cluster."""
        ca = self.ca_file
        return librdkafka_config(
            self.bootstrap_servers,
            self.security_protocol,
            self.credentials,
            str(ca) if ca else None,
            **overrides,
        )

    def endpoint(self) -> dict[str, Any]:
        """What ``services.json`` records: every node, and the topic settings that fit."""
        creds = self.credentials
        ca = self.ca_file
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "brokers": self.brokers,
            "replication_factor": self.replication_factor,
            "min_insync_replicas": self.min_insync_replicas,
            "security_protocol": self.security_protocol,
            "sasl_mechanism": SCRAM_MECHANISM if creds else None,
            "sasl_username": creds.username if creds else None,
            "sasl_password": creds.password if creds else None,
            "ssl_cafile": str(ca) if ca else None,
            "version": self.version,
            "data_dir": str(self.dir),
            "log_file": str(self.nodes[0].log_file),
            "nodes": [
                {
                    "node_id": node.node_id,
                    "bootstrap_server": node.address,
                    "controller_port": node._stored_state().get("controller_port"),
                    "pid": node._running_pid(),
                    "data_dir": str(node.data_dir),
                    "log_file": str(node.log_file),
                }
                for node in self.nodes
            ],
        }

    def running(self) -> list[int]:
        """Ids of the nodes whose JVM runs."""
        return [node.node_id for node in self.nodes if node._running_pid() is not None]

    # -- lifecycle -------------------------------------------------------------------

    def _plan(self) -> dict[str, Any]:
        """The cluster state for a start: shared id and users (made once, at format time,
        like the single broker's), each node's ports (kept while free; a running node
        keeps its own)."""
        state = self.stored_state()
        if state.get("brokers") not in (None, self.brokers):
            raise ServiceError(
                f"the Kafka cluster under {self.dir} was formatted with {state['brokers']} "
                f"nodes; `stockbatch services down kafka --purge` first to change its size"
            )
        if not state.get("cluster_id"):
            state = {
                "cluster_id": new_cluster_id(),
                "users": {
                    CLIENT_USER: secrets.token_urlsafe(18),
                    BROKER_USER: secrets.token_urlsafe(18),
                },
            }
        running = set(self.running())
        old = state.get("nodes") or {}
        taken: set[int] = set()
        nodes: dict[str, dict[str, int]] = {}
        for node in self.nodes:
            ports = old.get(str(node.node_id)) or {}
            keep = node.node_id in running
            nodes[str(node.node_id)] = {
                key: (int(ports[key]) if keep else _free_kept(ports.get(key), taken))
                for key in ("port", "controller_port")
            }
            taken.update(nodes[str(node.node_id)].values())
        state.update(
            brokers=self.brokers,
            nodes=nodes,
            security_protocol=self._wanted_protocol(state),
            ca_file=None if self.insecure else str(tls.ca_file(self.home)),
            version=self.version,
        )
        return state

    def up(self) -> ServiceStatus:
        """Provision, start every node that is not running (all at once: a node only
        serves once a majority of the quorum runs), wait until each answers, record.

        Idempotent; a failed start stops every node again.
        """
        self.warnings = []
        tools = self.nodes[0]._provision()
        del tools  # each node finds the same java and jars (cached) in its own up()
        self.dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.dir / ".cluster.lock"):
            single = KafkaService(self.home)
            if (pid := single._running_pid()) is not None:
                raise ServiceError(
                    f"a single Kafka broker runs under {self.dir} (pid {pid}); run "
                    "`stockbatch services down kafka` first"
                )
            stored = self.stored_state()
            refuse_switch(self.dir, stored, insecure=self.insecure, scram=self._scram)
            state = self._plan()
            if (
                self._scram is not None
                and self.running()
                and stored.get("security_protocol") != state["security_protocol"]
            ):
                raise ServiceError(
                    f"the Kafka cluster under {self.dir} runs with "
                    f"{stored.get('security_protocol')}; run `stockbatch "
                    "services down kafka` before changing its options"
                )
            if self.insecure:
                self.warnings.append(INSECURE_WARNING)
            write_state(self._state_file, state)
            for node in self.nodes:
                node.port = state["nodes"][str(node.node_id)]["port"]
            errors: dict[int, str] = {}

            def start(node: KafkaNode) -> None:
                try:
                    node.up()
                except Exception as exc:  # reported below: a thread must not swallow it
                    errors[node.node_id] = str(exc) or type(exc).__name__

            threads = [threading.Thread(target=start, args=(n,), daemon=True) for n in self.nodes]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if errors:
                self._stop_all()
                raise ServiceError(
                    "the Kafka cluster did not start: "
                    + "\n".join(f"node {i}: {msg}" for i, msg in sorted(errors.items()))
                )
            write_topology(self.home, self.brokers)
            write_private(
                self.client_properties_file,
                java_client_properties(
                    self.bootstrap_servers,
                    state["security_protocol"],
                    self.credentials,
                    state.get("ca_file"),
                ),
            )
            endpoint = self.endpoint()
            # "pid" as every service records it (node 1's; each node's is in "nodes").
            record_endpoint(self.home, self.name, {**endpoint, "pid": endpoint["nodes"][0]["pid"]})
        return self.status()

    def down(self) -> bool:
        """Stop every node, forget the endpoint, keep the data. True if any node was running.

        SIGTERM goes to all nodes at once: each broker's controlled shutdown needs the
        controller quorum, so stopping them one after the other would leave the last
        ones waiting for a controller that is gone. For the same reason, once fewer
        than a quorum are left, the rest get :data:`QUORUM_LOST_GRACE` s before SIGKILL
        (measured: a just-restarted node can still be in its controlled shutdown when
        the others have exited, and would wait the full ``stop_timeout``). A SIGKILLed
        node recovers its logs at the next start; the page cache still holds what it
        acknowledged, so nothing is lost on the same machine.
        """
        if not self.dir.exists():
            forget_endpoint(self.home, self.name)
            return False
        with file_lock(self.dir / ".cluster.lock"):
            return self._stop_all()

    def _stop_all(self) -> bool:
        """:meth:`down` under the cluster lock (held by the caller)."""
        with contextlib.ExitStack() as locks:
            for node in self.nodes:
                if node.dir.exists():
                    locks.enter_context(file_lock(node._lock_file))
            running = {}
            for node in self.nodes:
                if (pid := node._running_pid()) is not None:
                    running[node.node_id] = (node, pid, process_cmdline(pid))
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
            killed = self._wait_stopped(list(running.values()))
            for node_id, (node, _, cmdline) in running.items():
                node._after_exit(cmdline, clean=node_id not in killed)
            for node in self.nodes:
                node._pid_file.unlink(missing_ok=True)
            forget_endpoint(self.home, self.name)
        return bool(running)

    def _wait_stopped(self, running: list[tuple[KafkaNode, int, list[str]]]) -> set[int]:
        """Wait for the SIGTERMed nodes to exit; SIGKILL what is left after ``stop_timeout``
        s, or :data:`QUORUM_LOST_GRACE` s after fewer than a quorum remain. The ids killed."""
        quorum = self.brokers // 2 + 1
        deadline = time.monotonic() + self.stop_timeout
        lost_at: float | None = None
        while True:
            alive = [(n, pid) for n, pid, _ in running if not wait_exit(pid, 0.0, n._proc)]
            now = time.monotonic()
            if not alive:
                return set()
            if lost_at is None and len(alive) < quorum:
                lost_at = now
            if now >= deadline or (lost_at is not None and now - lost_at >= QUORUM_LOST_GRACE):
                for node, pid in alive:
                    kill_process(pid, node._proc)
                return {node.node_id for node, _ in alive}
            time.sleep(0.05)

    def kill(self, node_id: int) -> bool:
        """SIGKILL node ``node_id`` (a crash, for fault tests); ``up()`` brings it back."""
        return self.nodes[node_id - 1].kill()

    def restart(self) -> ServiceStatus:
        """``down()`` then ``up()`` on the same data and ports."""
        self.down()
        return self.up()

    def purge(self) -> None:
        """Stop every node and delete the cluster's folders and ``cluster.json``."""
        self.down()
        for node in self.nodes:
            shutil.rmtree(node.dir, ignore_errors=True)
        self._state_file.unlink(missing_ok=True)
        self.client_properties_file.unlink(missing_ok=True)
        (self.dir / _TOPOLOGY).unlink(missing_ok=True)

    def status(self) -> ServiceStatus:
        """Running (every node answers), unhealthy (some do not), died (recorded as up,
        no node left), stopped or not started."""
        nodes = [node.status() for node in self.nodes]
        up = [s for s in nodes if s.running]
        pid = next((s.pid for s in nodes if s.pid), None)
        endpoint: dict[str, Any] = {}
        if self.stored_state().get("nodes"):
            endpoint = {k: v for k, v in self.endpoint().items() if k != "sasl_password"}
            endpoint["pid"] = pid
        state: State
        if len(up) == len(nodes):
            state = "running"
            detail = f"{self.brokers}-node {self.nodes[0].label} cluster ({self.security_protocol})"
        elif any(s.pid for s in nodes):
            state = "unhealthy"
            detail = "; ".join(
                f"node {n.node_id}: {s.detail}"
                for n, s in zip(self.nodes, nodes, strict=True)
                if not s.running
            )
        elif not self._state_file.exists():
            state, detail = "not started", "never started in this home"
        elif self.name in recorded_endpoints(self.home):
            state, detail = "died", "recorded as up, but no node runs: see the nodes' logs"
        else:
            state, detail = "stopped", "not running"
        return ServiceStatus(
            name=self.name,
            state=state,
            pid=pid,
            endpoint=endpoint,
            data_dir=str(self.dir),
            log_file=str(self.nodes[0].log_file),
            detail=detail,
        )


def _free_kept(port: int | None, taken: set[int]) -> int:
    """``port`` if still free and not handed out yet, else a new free port."""
    if not port or port in taken or not port_is_free(port):
        port = free_port()
        while port in taken:
            port = free_port()
    taken.add(port)
    return int(port)


def kafka_service(
    home: Path,
    port: int | None = None,
    scram: bool | None = None,
    brokers: int | None = None,
    insecure: bool = False,
) -> KafkaService | KafkaCluster:
    """The registry's ``kafka``: a single broker, or a cluster of ``brokers`` nodes.

    ``brokers`` None means as at the last ``up`` in ``home`` (else 1), so ``services
    status|down kafka`` find what runs. ``port`` is the single broker's only.
    """
    if brokers is not None and brokers < 1:
        raise ServiceError(f"--brokers must be at least 1, not {brokers}")
    size = brokers or last_brokers(home)
    if size == 1:
        return KafkaService(home, port, scram, insecure=insecure)
    if port is not None:
        raise ServiceError(
            "--port sets a single broker's port; a cluster's nodes take free ports "
            "(kept across restarts, listed in services.json)"
        )
    return KafkaCluster(home, size, scram, insecure=insecure)
