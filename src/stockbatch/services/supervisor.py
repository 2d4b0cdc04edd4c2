"""One process that runs several long-lived commands as one service (Airflow's four).

:class:`~stockbatch.services.base.LocalService` manages one pid; a service made of
several servers (the Airflow API server, scheduler, DAG processor and triggerer)
launches this supervisor instead::

    python -m stockbatch.services.supervisor SPEC.json

``SPEC.json``: ``{"components": {"name": [argv...], ...}, "log_dir": "...",
"pids_file": "...", "grace": 20}``. The supervisor starts every component (output
appended to ``log_dir/<name>.log``, environment inherited), records their pids in
``pids_file`` (JSON, removed when they are stopped), and then waits:

- SIGTERM or SIGINT (``services down``): SIGTERM to every component, SIGKILL to those
  still alive after ``grace`` s;
- a component exits by itself: the others are stopped the same way and the
  supervisor exits with code 1 (``services status`` then says "died", and the
  component's log says why).

Before exiting it SIGKILLs whatever is left in its process group (a component's own
workers that outlived it), so ``services down`` leaves no process behind. It runs
in its own session (``start_detached``), so ``kill()`` can kill the whole group.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any


def _say(message: str) -> None:
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    print(f"{stamp} supervisor[{os.getpid()}]: {message}", flush=True)


def _group_members() -> list[int]:
    """Pids of the other live processes of this process group."""
    me, group = os.getpid(), os.getpgrp()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields: state, ppid, pgrp, ...; zombies are already dead.
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == group:
            found.append(int(entry.name))
    return found


def _stop_all(procs: dict[str, subprocess.Popen[bytes]], grace: float) -> None:
    for name, proc in procs.items():
        if proc.poll() is None:
            _say(f"stopping {name} (pid {proc.pid})")
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for name, proc in procs.items():
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _say(f"{name} (pid {proc.pid}) ignored SIGTERM for {grace:g} s: SIGKILL")
            proc.kill()
            proc.wait()
    if os.getpgrp() == os.getpid():  # our own group only (never the caller's)
        for pid in _group_members():
            _say(f"leftover process {pid} of the group: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def supervise(spec: dict[str, Any]) -> int:
    """Run the components of ``spec`` until a signal or until one of them exits."""
    log_dir = Path(spec["log_dir"])
    grace = float(spec.get("grace", 20))
    stop: list[str] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.append(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    procs: dict[str, subprocess.Popen[bytes]] = {}
    pids_file = Path(spec["pids_file"])
    code = 0
    try:
        for name, argv in spec["components"].items():
            with open(log_dir / f"{name}.log", "ab") as out:
                procs[name] = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
                )
            _say(f"started {name} (pid {procs[name].pid}): {' '.join(argv)}")
        pids_file.write_text(json.dumps({n: p.pid for n, p in procs.items()}) + "\n")
        while not stop:
            exited = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
            if exited:
                for name, rc in exited.items():
                    _say(f"{name} exited with code {rc}: see {log_dir / (name + '.log')}")
                code = 1
                break
            time.sleep(0.5)
        if stop:
            _say(f"{stop[0]} received")
    finally:
        _stop_all(procs, grace)
        pids_file.unlink(missing_ok=True)
        _say(f"all components stopped, exit {code}")
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m stockbatch.services.supervisor SPEC.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m stockbatch.services.supervisor SPEC.json", file=sys.stderr)
        return 2
    return supervise(json.loads(Path(args[0]).read_text()))


if __name__ == "__main__":
    sys.exit(main())
