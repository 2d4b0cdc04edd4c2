"""Benchmark: the pipeline in the stockbatch container vs the same job on the host.

The same command, ``stockbatch run --source kaggle --path DATA --as-of DAY -q`` (direct
transport, Polars, the embedded SQLite warehouse), each time in a fresh, empty home:

1. **host** (the peer): ``.venv/bin/stockbatch run ...`` as a subprocess;
2. **container**: ``podman --runtime runc run --rm --network none`` of the image
   (``scripts/build-image.sh``), the data mounted read-only, the home on a mounted
   volume owned by the image's user.

Both walls are measured from start to exit (interpreter start and imports included;
the container's also podman's own set-up and tear-down). ``--repeat`` runs each
(alternating, so drift of the machine hits both); the medians and their ratio are
reported, with the container's start-up alone (``stockbatch --help``, the same
alternation) and the image's size. Target (issue 17): the container within 1.15x of
the host on the full sample (its overhead is podman's start, not the job).

Data: ``--path``, default the shared 10% Kaggle Huge sample (``$STOCKBATCH_SHARED_DATA``,
900 files, 1.88 M rows, as of 2017-11-10), else the repository's demo sample.
Results: the table on stdout and ``benchmarks/out/bench_container-<UTC time>.json``
(+ ``-latest``). Run: ``.venv/bin/python benchmarks/bench_container.py [--repeat 3]
[--image TAG] [--path DIR --as-of DAY]`` (needs podman, runc; root for the base image).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
UID = 10001
HOME = "/home/stockbatch/data"  # the image's STOCKBATCH_HOME volume
PODMAN = ["podman", "--runtime", "runc"]


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(REPO / "deploy" / "podman" / "containers.conf")}


def container(image: str, *volumes: str) -> list[str]:
    """``podman run`` of a throwaway container of ``image`` without a network (the
    embedded pipeline needs none) and with the given ``--volume`` specs; the command's
    arguments follow."""
    mounts = [arg for volume in volumes for arg in ("--volume", volume)]
    return [*PODMAN, "run", "--rm", "--network", "none", "--no-healthcheck", *mounts, image]


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of ``cmd``; a failure stops the benchmark with the command's output."""
    started = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if res.returncode not in (0, 3):  # 3: the run succeeded with quarantined rows
        sys.exit(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stdout}\n{res.stderr}")
    return wall


def ensure_image(tag: str, rebuild: bool) -> float | None:
    """Build the image unless present; the build's seconds when it was built."""
    exists = subprocess.run([*PODMAN, "image", "exists", tag], env=podman_env()).returncode == 0
    if exists and not rebuild:
        return None
    started = time.perf_counter()
    subprocess.run(
        ["bash", str(REPO / "scripts" / "build-image.sh"), "--tag", tag],
        env=podman_env(),
        check=True,
    )
    return time.perf_counter() - started


def image_size_mb(tag: str) -> float:
    info = subprocess.run(
        [*PODMAN, "image", "inspect", tag], env=podman_env(), capture_output=True, check=True
    ).stdout
    return float(json.loads(info)[0]["Size"]) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="localhost/stockbatch:bench")
    parser.add_argument("--rebuild", action="store_true", help="Build the image even if present.")
    parser.add_argument("--path", type=Path, help="Kaggle folder (default: see above).")
    parser.add_argument("--as-of", help="YYYY-MM-DD (default: the data's last session).")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    shared = os.environ.get("STOCKBATCH_SHARED_DATA")
    if args.path is None and shared:
        args.path = Path(shared) / "kaggle" / "huge-stock-market-sample"
        args.as_of = args.as_of or "2017-11-10"
    elif args.path is None:
        args.path = REPO / "data" / "demo" / "kaggle"
        args.as_of = args.as_of or "2023-06-30"
    if not args.as_of:
        parser.error("--as-of is needed with --path")
    data = args.path.resolve()
    if shutil.which("podman") is None:
        sys.exit("podman is missing: apt-get install -y podman runc debootstrap")

    built_s = ensure_image(args.image, args.rebuild)
    size = image_size_mb(args.image)
    run_args = ["run", "--source", "kaggle", "--as-of", args.as_of, "-q"]
    host_cli = str(REPO / ".venv" / "bin" / "stockbatch")
    scratch = Path(tempfile.mkdtemp(prefix="bench-container-"))
    walls: dict[str, list[float]] = {"host": [], "container": [], "host_start": [], "ctr_start": []}
    load_before = os.getloadavg()
    try:
        for i in range(args.repeat):
            home = scratch / f"host-{i}"
            walls["host"].append(
                timed(
                    [host_cli, *run_args, "--path", str(data)],
                    env={**os.environ, "STOCKBATCH_HOME": str(home)},
                )
            )
            volume = scratch / f"ctr-{i}"
            volume.mkdir()
            os.chown(volume, UID, UID)
            walls["container"].append(
                timed(
                    [
                        *container(args.image, f"{data}:/data:ro", f"{volume}:{HOME}"),
                        *run_args,
                        "--path",
                        "/data",
                    ],
                    env=podman_env(),
                )
            )
            walls["host_start"].append(timed([host_cli, "--help"]))
            walls["ctr_start"].append(timed([*container(args.image), "--help"], env=podman_env()))
            print(
                f"round {i + 1}/{args.repeat}: host {walls['host'][-1]:.1f}s, "
                f"container {walls['container'][-1]:.1f}s",
                file=sys.stderr,
            )
    finally:
        subprocess.run(["rm", "-rf", str(scratch)], check=False)
    med = {k: statistics.median(v) for k, v in walls.items()}
    ratio = med["container"] / med["host"]
    result: dict[str, Any] = {
        "benchmark": "bench_container",
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data": str(data),
        "as_of": args.as_of,
        "image": args.image,
        "image_size_mb": round(size),
        "image_build_s": None if built_s is None else round(built_s, 1),
        "walls_s": {k: [round(x, 2) for x in v] for k, v in walls.items()},
        "medians_s": {k: round(v, 2) for k, v in med.items()},
        "ratio_container_vs_host": round(ratio, 3),
        "target": 1.15,
        "met": ratio <= 1.15,
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }
    print(f"bench_container: {data.name}, as of {args.as_of}, {args.repeat} rounds, medians")
    print(f"  host       stockbatch run   {med['host']:7.2f} s   (peer)")
    print(f"  container  stockbatch run   {med['container']:7.2f} s   {ratio:.2f}x the host")
    print(f"  start-up   --help           host {med['host_start']:.2f} s, "
          f"container {med['ctr_start']:.2f} s")  # fmt: skip
    print(
        f"  image {args.image}: {size:.0f} MB" + (f", built in {built_s:.0f} s" if built_s else "")
    )
    print(f"  target <= 1.15x: {'met' if result['met'] else 'MISSED'}")
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    for name in (f"bench_container-{stamp}.json", "bench_container-latest.json"):
        (OUT / name).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
