"""What every locally provisioned service shares: its status record, its error
type, and the process plumbing (detached start, liveness, graceful stop).

A service here is a real server (Kafka today; PostgreSQL and OpenSearch next)
that the project downloads from a public registry and runs on loopback, with
its data under ``$STOCKBATCH_HOME/services/<name>/``. Each one is a module with
a class that satisfies :class:`Service`; :mod:`stockbatch.services.registry`
maps names to those classes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

State = Literal["running", "starting", "stopped", "unhealthy"]


class ServiceError(RuntimeError):
    """A service could not be provisioned, started, reached or stopped.

    The message says what went wrong and what to do about it (and, for a start
    that failed, ends with the tail of the service's log).
    """


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``services status --json``)."""
        return asdict(self)


@runtime_checkable
class Service(Protocol):
    """The interface of a locally provisioned service."""

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


# ----------------------------------------------------------------------------- files


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock: serialises two ``services up`` on one home."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_private(path: Path, text: str) -> None:
    """Write atomically (temp + rename), readable by the owner only (files hold passwords)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_state(path: Path) -> dict[str, Any]:
    """A service's private JSON state file ({} when missing or unreadable)."""
    try:
        return dict(json.loads(path.read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Write a service's JSON state file (owner-readable only: it holds passwords)."""
    write_private(path, json.dumps(state, indent=2, sort_keys=True) + "\n")


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


# ----------------------------------------------------------------------------- ports


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if ``host:port`` can be bound (SO_REUSEADDR, as servers bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
        return True


# ----------------------------------------------------------------------------- processes


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (a dead child nobody reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # Field 3 of /proc/<pid>/stat is the state; the name before it may hold spaces.
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
    except OSError:
        return True


def process_cmdline(pid: int) -> list[str]:
    """The command line of ``pid`` ([] if unknown)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def start_detached(cmd: list[str], cwd: Path, output: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session (survives the caller), stdout+stderr to ``output``."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "ab") as out:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


def _exited(pid: int, proc: subprocess.Popen[bytes] | None) -> bool:
    if proc is not None and proc.pid == pid:
        return proc.poll() is not None
    return not pid_alive(pid)


def wait_exit(pid: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Wait until ``pid`` is gone; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _exited(pid, proc):
            return True
        time.sleep(0.05)
    return _exited(pid, proc)


def stop_process(
    pid: int, timeout: float, proc: subprocess.Popen[bytes] | None = None
) -> Literal["terminated", "killed", "gone"]:
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Says how it ended."""
    if _exited(pid, proc):
        return "gone"
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_exit(pid, timeout, proc):
        return "terminated"
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not wait_exit(pid, 10.0, proc):
        raise ServiceError(f"process {pid} survived SIGKILL for 10 s")
    return "killed"


def kill_process(pid: int, proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGKILL at once (a crash, for fault tests) and wait until it is gone."""
    if _exited(pid, proc):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not wait_exit(pid, 10.0, proc):
        raise ServiceError(f"process {pid} survived SIGKILL for 10 s")
