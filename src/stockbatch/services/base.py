"""What every local service shares: :class:`LocalService` (paths, state file, pid,
lifecycle, endpoint record), its status and error types, and the OS plumbing
under it (private files and locks, ports, detached processes).

A local service is a real server run on loopback with its data under
``$STOCKBATCH_HOME/services/<name>/``: Kafka, PostgreSQL and OpenSearch, each a
subclass in its own module. See ``deploy/services/README.md``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar, runtime_checkable

from stockbatch.services.endpoints import forget_endpoint, record_endpoint, recorded_endpoints
from stockbatch.services.system import (
    HOST,
    ServiceError,
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

State = Literal["running", "starting", "stopped", "unhealthy", "not started", "died"]


@dataclass(frozen=True)
class ServiceStatus:
    """One service's state, as ``services status`` prints it."""

    name: str
    state: State
    pid: int | None = None
    endpoint: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    log_file: str | None = None
    detail: str = ""

    @property
    def running(self) -> bool:
        """True when the process is alive and answers on its port."""
        return self.state == "running"

    @property
    def degraded(self) -> bool:
        """True when something needs attention: alive but not answering, or gone while
        still recorded as up (a crash or a kill, not ``services down``)."""
        return self.state in ("unhealthy", "died")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``services status --json``)."""
        return asdict(self)


@runtime_checkable
class Service(Protocol):
    """The interface of a locally provisioned service (what the CLI and registry use)."""

    name: str

    def up(self) -> ServiceStatus:
        """Provision if needed, start if stopped, wait until healthy, record endpoints."""
        ...

    def down(self) -> bool:
        """Stop (graceful, then forced); forget its endpoints. True if it was running."""
        ...

    def status(self) -> ServiceStatus:
        """Current state without changing anything."""
        ...

    def restart(self) -> ServiceStatus:
        """Stop and start again, keeping the data."""
        ...

    def purge(self) -> None:
        """Stop and delete the service's folder (data, logs, generated credentials)."""
        ...


# ----------------------------------------------------------------------------- the base class

P = TypeVar("P")
"""What a service's :meth:`LocalService._provision` finds (binaries, jars) for :meth:`_prepare`."""


@dataclass(frozen=True)
class Launch:
    """How to start a service's process: its command line, folder, extra Popen arguments."""

    command: list[str]
    cwd: Path
    popen: dict[str, Any] = field(default_factory=dict)


class LocalService(ABC, Generic[P]):
    """One server on 127.0.0.1 with everything of it under ``home/services/<name>``.

    The base owns the folder layout, the private ``state.json`` (ports, generated
    passwords), the pid, the lifecycle (:meth:`up`, :meth:`down`, :meth:`kill`,
    :meth:`restart`, :meth:`purge`, :meth:`status`) and the entry in
    ``$STOCKBATCH_HOME/services.json``. A subclass says what differs: how to find
    its binaries (:meth:`_provision`), configure and launch (:meth:`_prepare`),
    recognise its process (:meth:`_owns`), probe it (:meth:`_ready`), and what it
    records (:meth:`endpoint`); the other ``_`` methods are optional hooks.

    ``port`` is the client port (default: the one used last time, else a free one;
    kept across restarts so recorded endpoints stay valid).
    """

    name: str
    """The service's name: its folder, its key in services.json, its CLI name."""
    title: ClassVar[str]
    """How messages call it (``Kafka``)."""
    port_hint: ClassVar[str]
    """How to ask for another port, for the "port is taken" error."""
    log_name: ClassVar[str]
    """The service's own log, relative to :attr:`dir`."""
    writes_pid_file: ClassVar[bool] = True
    """False when the server writes its own pid file (override :attr:`_pid_file`)."""
    stop_signals: ClassVar[Sequence[signal.Signals]] = (signal.SIGTERM,)
    """Sent in turn by :meth:`down` (the first gets ``stop_timeout`` s, others 10 s), then KILL."""
    abort_timeout: ClassVar[float | None] = 5.0
    """Grace for a process that failed to start (None: ``stop_timeout``)."""
    kill_group: ClassVar[bool] = False
    """:meth:`kill` signals the whole process group (a server and its worker processes)."""
    secret_fields: ClassVar[tuple[str, ...]] = ()
    """Endpoint fields holding passwords: recorded in services.json, never in :meth:`status`."""
    probe_timeout: ClassVar[float] = 1.0
    """Timeout of one readiness probe while waiting for a start."""
    probe_interval: ClassVar[float] = 0.2
    """Pause between two readiness probes while waiting for a start."""

    def __init__(
        self,
        home: Path,
        port: int | None = None,
        *,
        version: str | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 30.0,
    ) -> None:
        self.home = Path(home).expanduser().resolve()
        self.port = port
        self.version = version
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    # -- paths ---------------------------------------------------------------

    @property
    def dir(self) -> Path:
        """Everything of this service: ``$STOCKBATCH_HOME/services/<name>``."""
        return self.home / "services" / self.name

    @property
    def data_dir(self) -> Path:
        """The service's data; survives restarts (``purge`` deletes it)."""
        return self.dir / "data"

    @property
    def log_file(self) -> Path:
        """The service's own log."""
        return self.dir / self.log_name

    @property
    def stdout_file(self) -> Path:
        """The process's stdout and stderr (crashes before logging starts land here)."""
        return self.dir / f"{self.name}.out"

    @property
    def _state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def _pid_file(self) -> Path:
        return self.dir / f"{self.name}.pid"

    @property
    def _lock_file(self) -> Path:
        return self.dir / ".lock"

    # -- state ---------------------------------------------------------------

    def _stored_state(self) -> dict[str, Any]:
        return read_state(self._state_file)

    def _save_state(self, state: dict[str, Any]) -> None:
        write_state(self._state_file, state)

    def _state_for_start(self) -> dict[str, Any]:
        """The state ``up()`` starts from (a subclass may fill in what a first start needs)."""
        return self._stored_state()

    def _known_port(self) -> int:
        """The client port: the option, else the one of the last start."""
        port = self.port or self._stored_state().get("port")
        if port is None:
            raise ServiceError(f"{self.title} under {self.dir} has never been started: no port yet")
        return int(port)

    @abstractmethod
    def endpoint(self) -> dict[str, Any]:
        """What ``services.json`` records for this service (the pid is added)."""

    # -- what a subclass provides ----------------------------------------------

    @abstractmethod
    def _provision(self) -> P:
        """Find (or download) what the service runs; called by ``up()`` before the lock."""

    @abstractmethod
    def _prepare(self, state: dict[str, Any], tools: P) -> Launch:
        """Before a start (``state["port"]`` is chosen): fill and save ``state``, write the
        configuration, initialise the data once; return how to launch the process."""

    @abstractmethod
    def _owns(self, cmdline: list[str]) -> bool:
        """True if ``cmdline`` is this service's process (so a reused pid never matches)."""

    @abstractmethod
    def _ready(self, timeout: float) -> bool:
        """One probe: True if the service serves clients now."""

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``: where clients reach it (the port chosen at the last ``up``)."""
        return f"{HOST}:{self._known_port()}"

    @property
    def label(self) -> str:
        """Its title and version (``Kafka 4.1.1``), for messages."""
        return f"{self.title} {self.version}" if self.version else self.title

    def _running_detail(self) -> str:
        """The ``status`` detail of a running service."""
        return self.label

    def _awaiting(self) -> str:
        """What a start waits for, for the timeout message."""
        return f"answer on {self.address}"

    def _health(self) -> tuple[bool, str]:
        """For ``status`` of a live process: is it healthy, and the detail to show."""
        if self._ready(2.0):
            return True, self._running_detail()
        return False, f"process alive but {self.address} does not answer"

    def _check_options(self, state: dict[str, Any], pid: int) -> None:
        """``up()`` of a running service: refuse options it does not run with."""
        if self.port is not None and self.port != state.get("port"):
            raise ServiceError(
                f"{self.title} already runs under {self.dir} (pid {pid}, port "
                f"{state.get('port')}); run `stockbatch services down {self.name}` first"
            )

    def _when_ready(self, state: dict[str, Any]) -> None:
        """Hook run once the service answers, before its endpoint is recorded."""

    def _after_exit(self, cmdline: list[str], clean: bool) -> None:
        """Hook run after the process has exited (``clean``: it stopped gracefully)."""

    # -- process ---------------------------------------------------------------

    def _read_pid(self) -> int | None:
        try:
            return int(self._pid_file.read_text().splitlines()[0].strip())
        except (OSError, IndexError, ValueError):
            return None

    def _running_pid(self) -> int | None:
        """The service's pid if it runs; checks the command line so a reused pid never matches."""
        pid = self._read_pid()
        if pid is None:
            return None
        if self._proc is not None and self._proc.pid == pid:
            return pid if self._proc.poll() is None else None
        if not pid_alive(pid):
            return None
        return pid if self._owns(process_cmdline(pid)) else None

    def _starting(self, pid: int) -> bool:
        """True while ``pid`` (being started, or found running) is alive."""
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None  # our child: alive before it writes any pid file
        return self._running_pid() == pid

    def _log_tails(self) -> str:
        files = list(dict.fromkeys((self.stdout_file, self.log_file)))
        parts = [f"--- last lines of {p}\n{text}" for p in files if (text := tail(p, 30)).strip()]
        return "\n".join(parts) or f"(no output in {' or '.join(map(str, files))})"

    def _wait_ready(self, pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self._starting(pid):
                code = self._proc.poll() if self._proc is not None else None
                raise ServiceError(
                    f"{self.title} (pid {pid}) exited during start-up"
                    + (f" with code {code}" if code is not None else "")
                    + f":\n{self._log_tails()}"
                )
            if self._ready(self.probe_timeout):
                return
            if time.monotonic() >= deadline:
                raise ServiceError(
                    f"{self.title} (pid {pid}) did not {self._awaiting()} within "
                    f"{timeout:g} s:\n{self._log_tails()}"
                )
            time.sleep(self.probe_interval)

    def _choose_port(self, state: dict[str, Any]) -> int:
        port = int(self.port or state.get("port") or free_port())
        if not port_is_free(port):
            raise ServiceError(
                f"port {HOST}:{port} is taken by another process; stop it or choose "
                f"another port ({self.port_hint})"
            )
        return port

    @staticmethod
    def _second_port(state: dict[str, Any], key: str, port: int) -> int:
        """A server-internal port (``state[key]`` if still free), never the client ``port``."""
        other = state.get(key)
        if not other or other == port or not port_is_free(other):
            other = free_port()
            while other == port:
                other = free_port()
        return int(other)

    def _launch(self, launch: Launch) -> int:
        """Start the process detached, output appended to :attr:`stdout_file`; its pid."""
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.stdout_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.stdout_file, "ab") as out:
            out.write(f"\n==== stockbatch: starting {self.label} at {stamp}\n".encode())
        self._proc = start_detached(
            launch.command, cwd=launch.cwd, output=self.stdout_file, **launch.popen
        )
        if self.writes_pid_file:
            self._pid_file.write_text(f"{self._proc.pid}\n")
        return self._proc.pid

    def _abort_start(self, pid: int, command: list[str]) -> None:
        """Stop a process that did not become ready; forget its pid."""
        stop_process(pid, self.abort_timeout or self.stop_timeout, self._proc, self.stop_signals)
        self._after_exit(command, clean=False)
        if self.writes_pid_file:
            self._pid_file.unlink(missing_ok=True)

    def _record(self, pid: int) -> ServiceStatus:

        record_endpoint(self.home, self.name, {**self.endpoint(), "pid": pid})
        return self.status()

    # -- lifecycle -------------------------------------------------------------

    def up(self) -> ServiceStatus:
        """Provision if needed, start, wait until it answers, record the endpoint.

        Idempotent: a service that already runs here is kept (asking for other
        options, such as another port, while it runs is an error).
        """
        tools = self._provision()
        with file_lock(self._lock_file):
            state = self._state_for_start()
            pid = self._running_pid()
            if pid is not None:
                self._check_options(state, pid)
                self.port = int(state["port"])
                self._wait_ready(pid, self.start_timeout)
                self._when_ready(state)
                return self._record(pid)

            state["port"] = self.port = self._choose_port(state)
            launch = self._prepare(state, tools)
            pid = self._launch(launch)
            try:
                self._wait_ready(pid, self.start_timeout)
                self._when_ready(state)
            except Exception:  # a failed start leaves no process behind
                self._abort_start(pid, launch.command)
                raise
            return self._record(pid)

    def down(self) -> bool:
        """Stop gracefully (forced after ``stop_timeout`` s), forget the endpoint, keep the data.

        Returns True if it was running. Where it never started, creates nothing.
        """

        if not self.dir.exists():
            forget_endpoint(self.home, self.name)
            return False
        with file_lock(self._lock_file):
            pid = self._running_pid()
            if pid is not None:
                cmdline = process_cmdline(pid)
                ended = stop_process(pid, self.stop_timeout, self._proc, self.stop_signals)
                self._after_exit(cmdline, clean=ended == "terminated")
            if self.writes_pid_file:
                self._pid_file.unlink(missing_ok=True)
            forget_endpoint(self.home, self.name)
            return pid is not None

    def kill(self) -> bool:
        """SIGKILL at once (a crash, for fault tests); services.json is left as is.

        ``up()`` afterwards recovers from the unclean shutdown on the same data.
        Returns True if it was running.
        """
        with file_lock(self._lock_file):
            pid = self._running_pid()
            if pid is not None:
                cmdline = process_cmdline(pid)
                kill_process(pid, self._proc, group=self.kill_group)
                self._after_exit(cmdline, clean=False)
            return pid is not None

    def restart(self) -> ServiceStatus:
        """``down()`` then ``up()`` on the same data dir and port."""
        self.down()
        return self.up()

    def purge(self) -> None:
        """Stop it and delete its folder (data, logs, generated credentials)."""
        self.down()
        shutil.rmtree(self.dir, ignore_errors=True)

    def status(self) -> ServiceStatus:
        """Running (answers its probe), unhealthy (process alive, no answer) or stopped."""
        pid = self._running_pid()
        endpoint: dict[str, Any] = {}
        with contextlib.suppress(ServiceError):
            public = {k: v for k, v in self.endpoint().items() if k not in self.secret_fields}
            endpoint = {**public, "pid": pid}  # no passwords: status is for humans and logs
        state: State
        if pid is None and not self._state_file.exists():
            state, detail = "not started", "never started in this home"
        elif pid is None and self.name in recorded_endpoints(self.home):
            state, detail = "died", "recorded as up, but its process is gone: see its log"
        elif pid is None:
            state, detail = "stopped", "not running"
        else:
            healthy, detail = self._health()
            state = "running" if healthy else "unhealthy"
        return ServiceStatus(
            name=self.name,
            state=state,
            pid=pid,
            endpoint=endpoint,
            data_dir=str(self.data_dir),
            log_file=str(self.log_file),
            detail=detail,
        )
