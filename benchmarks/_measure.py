"""Run one command and report its wall time and peak memory as JSON.

Used by bench_process.py, one fresh ``python _measure.py`` process per
measured command, because ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` is a
high-water mark over *all* children a process ever waited for: only a fresh
wrapper gives the peak of exactly one command.

Two memory figures, because each misses something the other catches:

- ``maxrss_mb``: the kernel's exact RSS high-water mark of the largest single
  process in the command's tree (``RUSAGE_CHILDREN`` covers waited-for
  descendants). It cannot miss a short spike, but it does not add up
  processes that run at the same time.
- ``tree_rss_peak_mb``: psutil polling (every 20 ms) of the summed RSS of the
  whole tree. It adds up concurrent workers, but can miss a spike shorter than
  the polling interval, and counts shared pages once per process.

``peak_mb`` is the larger of the two, the figure the benchmark compares.

Usage: ``python _measure.py [--cwd DIR] -- CMD [ARG ...]``; extra environment
comes from the caller. Prints one JSON object on stdout; the command's own
stdout/stderr are captured and their last lines included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time

import psutil

POLL_S = 0.02


def _tree_rss(proc: psutil.Process) -> int:
    """Summed RSS (bytes) of a process and its live descendants."""
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def measure(cmd: list[str], cwd: str | None = None) -> dict[str, object]:
    """Run ``cmd`` to completion; wall time, exit code, peak memory, output tails."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err)
        peak = 0
        done = threading.Event()

        def poll() -> None:
            nonlocal peak
            proc = psutil.Process(child.pid)
            while not done.is_set():
                peak = max(peak, _tree_rss(proc))
                done.wait(POLL_S)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        code = child.wait()
        wall = time.perf_counter() - started
        done.set()
        poller.join()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    maxrss_mb = usage.ru_maxrss / 1024  # Linux reports KiB
    tree_mb = peak / 2**20
    return {
        "cmd": cmd,
        "returncode": code,
        "wall_s": round(wall, 3),
        "user_s": round(usage.ru_utime, 3),
        "sys_s": round(usage.ru_stime, 3),
        "maxrss_mb": round(maxrss_mb, 1),
        "tree_rss_peak_mb": round(tree_mb, 1),
        "peak_mb": round(max(maxrss_mb, tree_mb), 1),
        "stdout_tail": stdout.strip().splitlines()[-5:],
        "stderr_tail": stderr.strip().splitlines()[-15:],
    }


def main() -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description="Measure one command (see module docstring).")
    parser.add_argument("--cwd", default=None)
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("give the command after --")
    json.dump(measure(cmd, args.cwd), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
