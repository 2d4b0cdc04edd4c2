"""This machine's side of the local services: private files, locks, ports, processes."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

HOST = "127.0.0.1"
"""Every local service listens on loopback only."""


class ServiceError(RuntimeError):
    """A service could not be provisioned, started, reached or stopped.

    The message says what went wrong and what to do about it (and, for a start
    that failed, ends with the tail of the service's log).
    """


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


def free_port(host: str = HOST) -> int:
    """A TCP port that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = HOST) -> bool:
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


def start_detached(
    cmd: list[str], cwd: Path, output: Path, **popen: Any
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session (survives the caller), stdout+stderr to ``output``.

    ``popen``: more :class:`subprocess.Popen` arguments (``env``, ``user``, ...).
    """
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
            **popen,
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
    pid: int,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    signals: Sequence[signal.Signals] = (signal.SIGTERM,),
) -> Literal["terminated", "killed", "gone"]:
    """Send ``signals`` in turn (the first gets ``timeout`` s to work, later ones 10 s),
    then SIGKILL. Says how it ended ("terminated": one of ``signals`` did it)."""
    if _exited(pid, proc):
        return "gone"
    for i, sig in enumerate(signals):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if wait_exit(pid, timeout if i == 0 else 10.0, proc):
            return "terminated"
    kill_process(pid, proc)
    return "killed"


def kill_process(
    pid: int, proc: subprocess.Popen[bytes] | None = None, *, group: bool = False
) -> None:
    """SIGKILL at once (a crash, for fault tests) and wait until it is gone.

    ``group``: the whole process group that ``pid`` leads (a server and its workers).
    """
    if _exited(pid, proc):
        return
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    if not wait_exit(pid, 10.0, proc):
        raise ServiceError(f"process {pid} survived SIGKILL for 10 s")


# ----------------------------------------------------------------------------- OS users
# PostgreSQL and Elasticsearch refuse to run as root: as root, they run as an
# unprivileged user, and these helpers give that user what it needs.


def server_user(what: str, hint: str) -> pwd.struct_passwd:
    """Who runs a server that refuses root: the current user, or (as root) ``postgres``,
    else ``nobody``. ``what`` and ``hint`` go into the error when neither exists."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ServiceError(
        f"running as root, and neither a `postgres` nor a `nobody` user exists to run "
        f"{what} as (it refuses root): {hint}"
    )


def popen_as(user: pwd.struct_passwd, home: Path) -> dict[str, Any]:
    """Popen keyword arguments that run a command as ``user`` (nothing when it is us);
    ``home`` is its HOME when the user has none."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": user.pw_dir if os.path.isdir(user.pw_dir) else str(home),
    }
    if user.pw_uid == os.geteuid():
        return {"env": env}
    return {"env": env, "user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def make_reachable(folder: Path, user: pwd.struct_passwd) -> None:
    """Give ``user`` search (x) permission on ``folder`` and every folder above it that
    it lacks. Only needed as root; ``o+x`` lets others traverse, not list or read."""
    if user.pw_uid == os.geteuid():
        return
    for f in [folder, *folder.parents]:
        st = f.stat()
        if st.st_uid == user.pw_uid:
            continue
        if st.st_gid == user.pw_gid and st.st_mode & stat.S_IXGRP:
            continue
        if not st.st_mode & stat.S_IXOTH:
            os.chmod(f, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def own_dir(path: Path, user: pwd.struct_passwd) -> None:
    """A private folder (0700) owned by ``user``."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    if user.pw_uid != os.geteuid():
        os.chown(path, user.pw_uid, user.pw_gid)


def write_as(path: Path, text: str, user: pwd.struct_passwd) -> None:
    """Write a file a server reads (owned by its user, 0600)."""
    write_private(path, text)
    if user.pw_uid != os.geteuid():
        os.chown(path, user.pw_uid, user.pw_gid)
