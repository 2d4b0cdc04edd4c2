"""A real Spark standalone cluster on loopback: :class:`SparkService` runs one master and
N workers from the installed PySpark distribution (its ``jars/``), under one supervisor
process (:mod:`stockbatch.services.supervisor`), with everything under
``$STOCKBATCH_HOME/services/spark``.

``--engine spark`` then runs on it: :func:`stockbatch.services.endpoints.effective_spark_settings`
turns the record into the master URL and the executor settings that fit the workers.
Ports, resources and how to run the same job on another cluster:
``docs/design/spark-cluster.md``.

Security (unless ``insecure``, ``services up spark --insecure``): every RPC connection
(master, workers, executors, the driver) is authenticated with a shared secret
(``spark.authenticate``) and encrypted with TLS (``spark.ssl.rpc``, PEM files issued
by the home's CA, :mod:`stockbatch.services.tls`); the master's and workers' web
UIs serve HTTPS (``spark.ssl.standalone``, a PKCS#12 keystore of the same pair; their
plain HTTP ports only redirect). The secret and the keystore password reach the
daemons through a 0600 properties file (``--properties-file``), never their command
lines; applications get the path of a 0600 secret file in the recorded ``app_conf``
(``spark.authenticate.secret.file``, which :func:`stockbatch.process.spark_session.spark_session`
reads). Details: ``docs/design/security.md``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

from stockbatch.services import tls
from stockbatch.services.base import Launch, LocalService
from stockbatch.services.jvm import find_java
from stockbatch.services.system import (
    HOST,
    ServiceError,
    free_port,
    port_is_free,
    tail,
    write_private,
)

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"

DEFAULT_WORKERS = 2
DEFAULT_WORKER_CORES = 1
DEFAULT_WORKER_MEMORY = "1g"
DAEMON_HEAP = "256m"
"""Heap of the master and worker daemons themselves (they only schedule; executors are
separate JVMs sized by ``worker_memory``)."""

INSTALL_HINT = (
    "install the project's spark extra (bash scripts/setup.sh; PySpark is pinned in "
    "requirements.lock) into the virtualenv that runs stockbatch"
)
_MEMORY = re.compile(r"^[1-9]\d*[mg]$", re.IGNORECASE)

NO_HOSTNAME_CHECK = "-Dio.netty.handler.ssl.defaultEndpointVerificationAlgorithm=NONE"
"""Netty 4.2 checks the server's host name by default, but Spark 4.3's RPC opens its TLS
engines without a peer host, so every handshake fails ("Hostname or IP address is
undefined", measured). The chain is still verified (against ``certChain``: the CA)."""

INSECURE_WARNING = (
    "Spark runs WITHOUT authentication or TLS (--insecure): any local process can submit "
    "applications, and RPC and web UI traffic crosses 127.0.0.1 in clear text; run "
    "`stockbatch services down spark && stockbatch services up spark` for a secured cluster"
)


def spark_home() -> Path:
    """The installed PySpark distribution (``site-packages/pyspark``, with ``jars/``)."""
    try:
        import pyspark
    except ImportError as exc:
        raise ServiceError(f"PySpark is not importable ({exc}): {INSTALL_HINT}") from exc
    home = Path(pyspark.__file__).resolve().parent
    if not (home / "jars").is_dir():
        raise ServiceError(
            f"{home} has no jars/ folder (not a full PySpark install): {INSTALL_HINT}"
        )
    return home


def spark_version() -> str:
    """The installed PySpark version (``4.3.0``), or ``unknown``."""
    # The distribution's metadata, not ``pyspark.version``: importing PySpark costs
    # ~0.1 s, and the service registry asks for this in every command.
    from importlib import metadata

    try:
        return metadata.version("pyspark")
    except metadata.PackageNotFoundError:
        return "unknown"


def scala_version(home: Path) -> str:
    """The Scala binary version of the distribution's jars (``2.13``).

    The worker's executor launcher needs it as ``SPARK_SCALA_VERSION``: without it, it
    looks for a source build (``launcher/target/scala-*``) and fails with "Cannot find
    any build directories" (measured with PySpark 4.3).
    """
    for jar in (home / "jars").glob("spark-core_*.jar"):
        if match := re.match(r"spark-core_(\d+\.\d+)-", jar.name):
            return match.group(1)
    raise ServiceError(f"no spark-core jar in {home / 'jars'}: {INSTALL_HINT}")


def ui_context(ca_file: str | Path | None) -> ssl.SSLContext | None:
    """An SSL context verifying a web UI against ``ca_file`` (None: the system's default)."""
    return ssl.create_default_context(cafile=str(ca_file)) if ca_file else None


def master_state(
    web_ui: str, timeout: float = 2.0, ca_file: str | Path | None = None
) -> dict[str, Any] | None:
    """The master's ``GET <web_ui>/json/`` (workers, apps, status); None if nothing answers.

    An ``https`` UI is verified against ``ca_file`` (the local CA)."""
    context = ui_context(ca_file) if web_ui.startswith("https:") else None
    try:
        url = f"{web_ui.rstrip('/')}/json/"
        with urllib.request.urlopen(url, timeout=timeout, context=context) as r:
            body: dict[str, Any] = json.loads(r.read())
            return body
    except (OSError, ValueError, urllib.error.URLError):
        return None


def alive_workers(state: dict[str, Any]) -> int:
    """How many workers the master's JSON lists as ALIVE."""
    return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")


class SparkService(LocalService[tuple[str, Path]]):
    """A local Spark standalone cluster under ``home/services/spark``.

    ``port`` is the master's RPC port (``spark://127.0.0.1:<port>``; default: the one
    used last time, else a free one); the web UI ports are chosen and kept the same
    way. ``workers``, ``worker_cores`` and ``worker_memory`` (``1g``, ``512m``) size
    the cluster; None means as last time, else 2 workers of 1 core and 1 GB each (a
    share of a 2-core machine). One executor runs per worker, as big as the worker.
    ``insecure``: no authentication and no TLS (see the module doc); :attr:`warnings`
    then says so.
    """

    name = "spark"
    title = "Spark standalone cluster"
    port_hint = "SparkService(home, port=N)"  # the CLI's --port is Kafka's
    log_name = "spark.log"
    stop_signals: ClassVar[tuple[signal.Signals, ...]] = (signal.SIGTERM,)
    # The supervisor gives the daemons 20 s after SIGTERM (a worker first stops its executors).
    abort_timeout = 25.0
    kill_group = True  # the supervisor leads the group: master, workers, executors
    probe_interval = 0.5

    def __init__(
        self,
        home: Path,
        port: int | None = None,
        *,
        workers: int | None = None,
        worker_cores: int | None = None,
        worker_memory: str | None = None,
        start_timeout: float = 180.0,
        stop_timeout: float = 30.0,
        insecure: bool = False,
    ) -> None:
        # TLS (and authentication) unless `services up --insecure`.
        self.insecure = insecure
        self.warnings: list[str] = []
        super().__init__(
            home,
            port,
            version=spark_version(),
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
        if workers is not None and workers < 1:
            raise ServiceError(f"--workers must be at least 1, not {workers}")
        if worker_cores is not None and worker_cores < 1:
            raise ServiceError(f"--worker-cores must be at least 1, not {worker_cores}")
        if worker_memory is not None and not _MEMORY.match(worker_memory):
            raise ServiceError(
                f"--worker-memory takes sizes like 512m or 1g, not {worker_memory!r}"
            )
        self.workers = workers
        self.worker_cores = worker_cores
        self.worker_memory = worker_memory

    # -- paths ---------------------------------------------------------------

    @property
    def stdout_file(self) -> Path:
        """The supervisor's output is the service's log (what started, stopped, died)."""
        return self.log_file

    def component_log(self, component: str) -> Path:
        """The output of one daemon (``master``, ``worker-1`` ...): Spark's own log."""
        return self.dir / "logs" / f"{component}.log"

    @property
    def work_dir(self) -> Path:
        """Executors' folders (``worker-N/<app id>/<executor id>/stderr``)."""
        return self.dir / "work"

    @property
    def data_dir(self) -> Path:
        """The cluster keeps no data of its own: its data folder is the executors' work."""
        return self.work_dir

    @property
    def _spec_file(self) -> Path:
        return self.dir / "supervisor.json"

    @property
    def _pids_file(self) -> Path:
        return self.dir / "components.json"

    @property
    def conf_dir(self) -> Path:
        """The daemons' properties file and the secret file (0700 folder, 0600 files)."""
        return self.dir / "conf"

    @property
    def secret_file(self) -> Path:
        """The shared secret (``spark.authenticate``) of master, workers and applications."""
        return self.conf_dir / "auth.secret"

    @property
    def _properties_file(self) -> Path:
        return self.conf_dir / "daemons.properties"

    @property
    def _chain_file(self) -> Path:
        """The RPC certificate followed by the CA: what RPC clients trust (Netty's PEM mode)."""
        return self.conf_dir / "rpc-chain.pem"

    @property
    def tls(self) -> bool:
        """True if the cluster was last started secured (authentication and TLS)."""
        return bool(self._stored_state().get("tls"))

    @property
    def ca_file(self) -> Path | None:
        """The CA the web UIs and RPC certificates are verified with; None without TLS."""
        state = self._stored_state()
        return Path(state["ca_file"]) if state.get("tls") and state.get("ca_file") else None

    @property
    def master_url(self) -> str:
        """``spark://127.0.0.1:<port>`` (the port chosen at the last ``up``)."""
        return f"spark://{self.address}"

    @property
    def web_ui(self) -> str:
        """The master's web UI (``/json/`` is its state): ``https://127.0.0.1:<port>``, or
        ``http://`` on an insecure cluster."""
        state = self._stored_state()
        port = state.get("webui_port")
        if port is None:
            raise ServiceError(f"{self.title} under {self.dir} has never been started")
        if state.get("tls") and state.get("webui_https_port"):
            return f"https://{HOST}:{state['webui_https_port']}"
        return f"http://{HOST}:{port}"

    @staticmethod
    def _state_sizes(state: dict[str, Any]) -> tuple[int, int, str]:
        """Workers, cores and memory per worker of ``state`` (defaults where absent)."""
        return (
            int(state.get("workers") or DEFAULT_WORKERS),
            int(state.get("worker_cores") or DEFAULT_WORKER_CORES),
            str(state.get("worker_memory") or DEFAULT_WORKER_MEMORY),
        )

    def _sizes(self, state: dict[str, Any]) -> tuple[int, int, str]:
        """Workers, cores and memory per worker: the options, else last time's, else defaults."""
        workers, cores, memory = self._state_sizes(state)
        return (
            self.workers or workers,
            self.worker_cores or cores,
            self.worker_memory or memory,
        )

    def app_conf(self) -> dict[str, str]:
        """Spark settings an application needs to use every worker: one executor per worker,
        as many cores and as much memory as one worker offers; on a secured cluster also
        authentication (the secret FILE's path, never the secret) and TLS on RPC."""
        state = self._stored_state()
        workers, cores, memory = self._sizes(state)
        total = workers * cores
        conf = {
            "spark.executor.cores": str(cores),
            "spark.executor.memory": memory,
            "spark.cores.max": str(total),
            # As for local[*]: a few tasks per core, not Spark's 200 tiny shuffle partitions.
            "spark.sql.shuffle.partitions": str(2 * total),
            "spark.default.parallelism": str(total),
        }
        if state.get("tls"):
            conf.update(
                {
                    "spark.authenticate": "true",
                    # Spark itself reads secret files on Kubernetes only; spark_session()
                    # turns this into spark.authenticate.secret inside the driver's JVM.
                    "spark.authenticate.secret.file": str(self.secret_file),
                    **self._rpc_tls_conf(),
                }
            )
        return conf

    def _rpc_tls_conf(self) -> dict[str, str]:
        """TLS on every RPC connection, from PEM files (no keystore password to hand out).

        Netty's PEM mode needs ``openSslEnabled`` (it falls back to the JDK provider when
        OpenSSL is missing); a client trusts the certificates in ``certChain``, which
        holds the CA, so any certificate of the local CA is accepted."""
        issued = tls.issue(self.home, self.name)
        return {
            # The JVMs of the driver and executors need it from their start (Netty reads it
            # once); the *default* Java options leave extraJavaOptions to the user.
            "spark.driver.defaultJavaOptions": NO_HOSTNAME_CHECK,
            "spark.executor.defaultJavaOptions": NO_HOSTNAME_CHECK,
            "spark.ssl.rpc.enabled": "true",
            "spark.ssl.rpc.openSslEnabled": "true",
            "spark.ssl.rpc.privateKey": str(issued.key_file),
            "spark.ssl.rpc.certChain": str(self._chain_file),
        }

    def endpoint(self) -> dict[str, Any]:
        """What ``services.json`` records: master URL, web UI, the workers' size, app settings."""
        workers, cores, memory = self._sizes(self._stored_state())
        state = self._stored_state()
        return {
            "master_url": self.master_url,
            "web_ui": self.web_ui,
            "tls": bool(state.get("tls")),
            "authenticate": bool(state.get("tls")),
            "ca_file": state.get("ca_file") if state.get("tls") else None,
            "secret_file": str(self.secret_file) if state.get("tls") else None,
            "workers": workers,
            "worker_cores": cores,
            "worker_memory": memory,
            "app_conf": self.app_conf(),
            "version": self.version,
            "spark_home": self._stored_state().get("spark_home"),
            "work_dir": str(self.work_dir),
            "log_file": str(self.log_file),
        }

    # -- what differs from the other services ------------------------------------

    def _provision(self) -> tuple[str, Path]:
        home = spark_home()  # first: without PySpark, say so before looking for Java
        return find_java(), home

    def _check_options(self, state: dict[str, Any], pid: int) -> None:
        super()._check_options(state, pid)
        given = (self.workers, self.worker_cores, self.worker_memory)
        running = self._state_sizes(state)
        if any(g is not None and g != r for g, r in zip(given, running, strict=True)):
            raise ServiceError(
                f"{self.title} already runs under {self.dir} (pid {pid}) with {running[0]} "
                f"worker(s) of {running[1]} core(s) and {running[2]}; run `stockbatch services "
                "down spark` first to resize it"
            )
        if bool(state.get("tls")) == self.insecure:
            runs = "with authentication and TLS" if state.get("tls") else "without TLS (--insecure)"
            raise ServiceError(
                f"{self.title} already runs under {self.dir} {runs} (pid {pid}); run "
                f"`stockbatch services down {self.name}` first to change it"
            )
        if self.insecure:
            self.warnings.append(INSECURE_WARNING)

    def _prepare(self, state: dict[str, Any], tools: tuple[str, Path]) -> Launch:
        java, home = tools
        workers, cores, memory = self._sizes(state)
        port = int(state["port"])
        taken = {port}
        webui = self._free_kept(state.get("webui_port"), taken)
        worker_uis = self._free_ports(state.get("worker_webui_ports"), workers, taken)
        # HTTPS ports of the UIs (Spark would take http + 400, which may be taken).
        webui_https = self._free_kept(state.get("webui_https_port"), taken)
        worker_https = self._free_ports(state.get("worker_webui_https_ports"), workers, taken)
        state.update(
            webui_port=webui,
            worker_webui_ports=worker_uis,
            webui_https_port=webui_https,
            worker_webui_https_ports=worker_https,
            workers=workers,
            worker_cores=cores,
            worker_memory=memory,
            version=self.version,
            spark_home=str(home),
        )
        for folder in (self.dir / "logs", self.work_dir, self.dir / "tmp"):
            folder.mkdir(parents=True, exist_ok=True)
        if self.insecure:
            state.update(tls=False, ca_file=None)
            self.warnings.append(INSECURE_WARNING)
            self._properties_file.unlink(missing_ok=True)
        else:
            self._write_security(state)
            state.update(tls=True, ca_file=str(tls.ca_file(self.home)))
        self._save_state(state)
        components = {"master": self._master_command(java, home, port, webui, webui_https)}
        for i, (ui, https) in enumerate(zip(worker_uis, worker_https, strict=True), start=1):
            components[f"worker-{i}"] = self._worker_command(
                java, home, i, ui, https, cores, memory
            )
        spec = {
            "components": components,
            "log_dir": str(self.dir / "logs"),
            "pids_file": str(self._pids_file),
            "grace": 20,
        }
        self._spec_file.write_text(json.dumps(spec, indent=2) + "\n")
        command = [sys.executable, "-m", "stockbatch.services.supervisor", str(self._spec_file)]
        return Launch(command, cwd=self.dir, popen={"env": self._environment(home)})

    def _owns(self, cmdline: list[str]) -> bool:
        return "stockbatch.services.supervisor" in cmdline and str(self._spec_file) in cmdline

    def _ready(self, timeout: float) -> bool:
        state = master_state(self.web_ui, timeout, self.ca_file)
        want = self._sizes(self._stored_state())[0]
        return bool(state and state.get("status") == "ALIVE" and alive_workers(state) >= want)

    def _awaiting(self) -> str:
        want = self._sizes(self._stored_state())[0]
        return f"report ALIVE with {want} worker(s) at {self.web_ui}/json/"

    def _health(self) -> tuple[bool, str]:
        state = master_state(self.web_ui, timeout=3.0, ca_file=self.ca_file)
        if state is None:
            return False, f"process alive but the master's {self.web_ui}/json/ does not answer"
        want = self._sizes(self._stored_state())[0]
        alive = alive_workers(state)
        if state.get("status") != "ALIVE" or alive < want:
            return False, (
                f"master {state.get('status')}, {alive} of {want} worker(s) alive "
                f"(see {self.dir / 'logs'})"
            )
        return True, self._running_detail()

    def _running_detail(self) -> str:
        workers, cores, memory = self._sizes(self._stored_state())
        security = "authentication + TLS" if self.tls else "INSECURE: no authentication, no TLS"
        return (
            f"Spark {self.version} at {self.master_url} (UI {self.web_ui}), {workers} "
            f"worker(s) of {cores} core(s), {memory}; {security}"
        )

    def _log_tails(self) -> str:
        names = ["master"] + [
            f"worker-{i}" for i in range(1, self._sizes(self._stored_state())[0] + 1)
        ]
        parts = []
        for path in (self.log_file, *(self.component_log(n) for n in names)):
            if (text := tail(path, 15)).strip():
                parts.append(f"--- last lines of {path}\n{text}")
        return "\n".join(parts) or f"(no output in {self.dir})"

    # -- the daemons ---------------------------------------------------------------

    @staticmethod
    def _free_kept(port: int | None, taken: set[int]) -> int:
        """``port`` if still free and not handed out yet, else a new free port."""
        if not port or port in taken or not port_is_free(port):
            port = free_port()
            while port in taken:
                port = free_port()
        taken.add(port)
        return int(port)

    @classmethod
    def _free_ports(cls, kept: list[int] | None, count: int, taken: set[int]) -> list[int]:
        """``count`` ports: the ``kept`` ones still free first, then new ones."""
        ports = [cls._free_kept(p, taken) for p in (kept or [])][:count]
        return ports + [cls._free_kept(None, taken) for _ in range(count - len(ports))]

    def _write_security(self, state: dict[str, Any]) -> None:
        """The secret (kept across restarts), the RPC chain and the daemons' 0600
        properties file: authentication, TLS on RPC, HTTPS web UIs."""
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.conf_dir, 0o700)
        if not self.secret_file.exists():
            write_private(self.secret_file, secrets.token_hex(32))
        issued = tls.issue(self.home, self.name)
        write_private(self._chain_file, issued.cert_file.read_text() + issued.ca_file.read_text())
        password = state.get("keystore_password") or secrets.token_urlsafe(24)
        state["keystore_password"] = password
        keystore = tls.write_pkcs12(issued, password, self.conf_dir / "ui-keystore.p12")
        settings = {
            "spark.authenticate": "true",
            "spark.authenticate.secret": self.secret_file.read_text().strip(),
            **self._rpc_tls_conf(),
            "spark.ssl.standalone.enabled": "true",
            "spark.ssl.standalone.keyStore": str(keystore),
            "spark.ssl.standalone.keyStoreType": "PKCS12",
            "spark.ssl.standalone.keyStorePassword": password,
            "spark.ssl.standalone.keyPassword": password,
            # The JDK's choice: TLS 1.3 or 1.2 (older versions are disabled in Java 17).
            "spark.ssl.standalone.protocol": "TLS",
        }
        # Java properties syntax: backslashes and leading spaces would be mangled; the
        # values here are paths and generated tokens ([A-Za-z0-9_-]), so none occur.
        lines = [f"{key}={value}" for key, value in settings.items()]
        write_private(self._properties_file, "\n".join(lines) + "\n")

    def _java(self, java: str, home: Path, main: str, options: list[str]) -> list[str]:
        return [
            java,
            *options,
            f"-Xms{DAEMON_HEAP}",
            f"-Xmx{DAEMON_HEAP}",
            # Spark 4 starts the submission REST server on the fixed port 6066 by default:
            # not needed here (client-mode drivers only), and two clusters would collide.
            "-Dspark.master.rest.enabled=false",
            f"-Djava.io.tmpdir={self.dir / 'tmp'}",
            "-cp",
            f"{home / 'jars'}/*",
            main,
        ]

    def _secured(self, https_port: int) -> tuple[list[str], list[str]]:
        """JVM options and arguments of a secured daemon: its HTTPS port (a -D option: the
        properties file is shared) and the properties file holding the secrets."""
        if self.insecure:
            return [], []
        return (
            [NO_HOSTNAME_CHECK, f"-Dspark.ssl.standalone.port={https_port}"],
            ["--properties-file", str(self._properties_file)],
        )

    def _master_command(
        self, java: str, home: Path, port: int, webui: int, https: int
    ) -> list[str]:
        options, args = self._secured(https)
        return [
            *self._java(java, home, MASTER_CLASS, options),
            "--host",
            HOST,
            "--port",
            str(port),
            "--webui-port",
            str(webui),
            *args,
        ]

    def _worker_command(
        self, java: str, home: Path, index: int, webui: int, https: int, cores: int, memory: str
    ) -> list[str]:
        options, args = self._secured(https)
        return [
            *self._java(java, home, WORKER_CLASS, options),
            *args,
            "--host",
            HOST,
            "--webui-port",
            str(webui),
            "--cores",
            str(cores),
            "--memory",
            memory,
            "--work-dir",
            str(self.work_dir / f"worker-{index}"),
            f"spark://{HOST}:{self._known_port()}",
        ]

    def _environment(self, home: Path) -> dict[str, str]:
        """The daemons' environment (executors inherit it): this one without SPARK_* and
        PYSPARK_* variables, plus the distribution and loopback. (The executors' Python is
        the driver's choice: ``spark.pyspark.python``, set by ``spark_session``.)"""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK_", "PYSPARK_"))}
        env.update(
            SPARK_HOME=str(home),
            SPARK_SCALA_VERSION=scala_version(home),
            # Web UIs bind here (they default to 0.0.0.0): they have no login of their own.
            SPARK_LOCAL_IP=HOST,
            SPARK_LOCAL_DIRS=str(self.dir / "tmp"),
        )
        return env
