"""Benchmark: the Kafka transport (produce + collect) on a local broker, in one run.

For each size (``sample``: the shared 10% Kaggle Huge sample; ``10x``: its
deterministic 10x scale-up from synth.py), against a real Apache Kafka broker
that this script starts (``stockbatch.services.KafkaService``, the same jars as
the tests) and stops. The broker is secured as ``services up kafka`` sets it up:
every client below talks SASL_SSL (SCRAM-SHA-512 over TLS, the broker's CA
verified), stockbatch's commands finding the broker, its CA and their credentials
in services.json alone, Kafka's perf tool reading the same settings from the
broker's 0600 ``client.properties``:

1. direct: ``stockbatch ingest --path DIR`` (CSV -> bronze Parquet), fresh home;
2. kafka produce: ``stockbatch ingest --transport kafka --path DIR``, fresh home
   and topic (CSV -> Kafka; every delivery confirmed);
3. kafka collect: ``stockbatch collect`` in that home (Kafka -> bronze Parquet);
4. produce phase: the same units read into memory first, then only
   ``UnitPublisher.publish_unit`` + ``finish`` timed, in-process (what the
   producer itself moves, without the CSV parsing both transports share);
5. Kafka's own ``org.apache.kafka.tools.ProducerPerformance`` sending the same
   number of bytes in records of the same size (records = stockbatch's record
   count, size = its mean value size), with the same producer settings
   (acks=all, idempotence, compression, linger.ms, batch.size), same partitions,
   same listener (``--producer.config client.properties``: SASL_SSL);
6. ``sample`` only: the per-bar alternative format (one JSON record per bar,
   produced with the same client settings), for the codec decision.

Ratios printed, with the issue's targets:

- produce bytes/s of stockbatch / the perf tool's bytes/s >= 0.5, for the
  produce phase (4; like for like: the perf tool reads no files either) and,
  shown too, for the whole ingest command (2, CSV parsing included);
- (kafka produce + collect) wall time / direct ingest wall time <= 1.5.

Commands 1-3 run under ``_measure.py`` (wall time, peak RSS). Results: a table
on stdout and ``benchmarks/out/bench_kafka-<UTC time>.json`` (+ ``-latest``).

Run: ``.venv/bin/python benchmarks/bench_kafka.py [--sizes sample,10x]``
(needs ``STOCKBATCH_SHARED_DATA``; Java 17 and Maven for the broker's jars).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
PYTHON = sys.executable
PRODUCE_TARGET = 0.5  # stockbatch produce bytes/s >= 0.5 x the perf tool's
PATH_TARGET = 1.5  # kafka produce + collect <= 1.5 x the direct ingest time
MIB = 2**20

sys.path.insert(0, str(HERE))
import synth  # noqa: E402  (a sibling script, not a package)


def dataset(size: str) -> Path:
    """Folder of one benchmark size (builds the 10x set on first use)."""
    shared = os.environ.get("STOCKBATCH_SHARED_DATA")
    if not shared:
        raise SystemExit("set STOCKBATCH_SHARED_DATA to the shared data/ folder")
    sample = Path(shared) / "kaggle" / "huge-stock-market-sample"
    if size == "sample":
        return sample
    if size == "10x":
        return synth.build(sample, synth.DEFAULT_OUT)
    raise SystemExit(f"unknown size {size!r}: use sample or 10x")


def measured(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run one command under a fresh _measure.py wrapper; fail loudly if it failed."""
    wrapper = [PYTHON, str(HERE / "_measure.py"), "--", *cmd]
    load = round(os.getloadavg()[0], 2)
    done = subprocess.run(wrapper, env=env, capture_output=True, text=True, check=True)
    report: dict[str, Any] = json.loads(done.stdout)
    report["load_before"] = load
    if report["returncode"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n" + "\n".join(report["stderr_tail"]))
    return report


def base_env(home: Path, broker_home: Path, topic: str) -> dict[str, str]:
    """A clean environment pointing stockbatch at one home and topic; the broker (its
    address, protocol, CA file and SCRAM user) comes from the services.json that
    ``services up kafka`` wrote in ``broker_home``, copied into ``home``: no setting."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(broker_home / "services.json", home / "services.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKBATCH_")}
    env |= {
        "STOCKBATCH_HOME": str(home),
        "STOCKBATCH_KAFKA__TOPIC": topic,
        "STOCKBATCH_KAFKA__DEAD_LETTER_TOPIC": topic + ".dlq",
        "STOCKBATCH_KAFKA__CONSUMER_GROUP": topic + "-collector",
        "STOCKBATCH_KAFKA__TIMEOUT_S": "120",
    }
    return env


def last_manifest(home: Path) -> dict[str, Any]:
    """The newest run manifest under ``home``."""
    runs = sorted((home / "lake" / "runs").glob("*.json"))
    return json.loads(runs[-1].read_text())


# ----------------------------------------------------------------------------- in-process phases


def broker_settings(broker_home: Path, topic: str) -> Any:
    """KafkaSettings reaching the broker ``broker_home`` recorded (security included)."""
    from stockbatch.services.endpoints import effective_kafka_settings
    from stockbatch.settings import Settings

    found = effective_kafka_settings(Settings(home=broker_home))
    return found.model_copy(update={"topic": topic, "timeout_s": 120})


def produce_phase(data_dir: Path, broker_home: Path, topic: str) -> dict[str, Any]:
    """Read every unit into memory, then time only the publishing (child process)."""
    from stockbatch.bus.producer import UnitPublisher
    from stockbatch.settings import Settings
    from stockbatch.sources.kaggle import KaggleSource

    src = KaggleSource(data_dir)
    tables = [(u, src.read(u)) for u in src.units()]
    with tempfile.TemporaryDirectory() as home:
        s = Settings(home=Path(home), transport="kafka", kafka=broker_settings(broker_home, topic))
        pub = UnitPublisher(s, "bench")
        started = time.perf_counter()
        for unit, table in tables:
            pub.publish_unit(unit.source, unit.ref, unit.sha256 or "", table)
        stats = pub.producer.close()
        wall = time.perf_counter() - started
    return {
        "wall_s": round(wall, 3),
        "rows": stats.rows,
        "messages": stats.messages,
        "value_bytes": stats.value_bytes,
    }


def per_bar_phase(data_dir: Path, broker_home: Path, topic: str) -> dict[str, Any]:
    """The alternative format: one JSON record per bar, same client settings (child process)."""
    from stockbatch.bus.codec import Envelope
    from stockbatch.bus.producer import BarProducer
    from stockbatch.sources.kaggle import KaggleSource

    src = KaggleSource(data_dir)
    tables = [src.read(u) for u in src.units()]
    producer = BarProducer(broker_settings(broker_home, topic))
    headers = [("stockbatch-schema", b"bar-json.experiment")]
    started = time.perf_counter()
    for table in tables:
        for row in table.to_pylist():
            value = json.dumps(row, separators=(",", ":")).encode()
            producer.send(Envelope(row["symbol"].encode(), value, headers, 1))
    stats = producer.close()
    wall = time.perf_counter() - started
    return {
        "wall_s": round(wall, 3),
        "rows": stats.rows,
        "messages": stats.messages,
        "value_bytes": stats.value_bytes,
        "note": "rows read into memory first; the timed part serialises and produces",
    }


def child(phase: str, data_dir: Path, broker_home: Path, topic: str) -> dict[str, Any]:
    """Run one in-process phase in a fresh interpreter (memory released after); it finds
    the broker and its credentials in ``broker_home``'s services.json, none on its
    command line."""
    cmd = [PYTHON, __file__, "--phase", phase, "--path", str(data_dir)]
    cmd += ["--broker-home", str(broker_home), "--topic", topic]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ----------------------------------------------------------------------------- the perf tool

_PERF_RE = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency"
)


def perf_tool(
    service: Any, topic: str, records: int, record_size: int, partitions: int
) -> dict[str, Any]:
    """Kafka's ProducerPerformance with stockbatch's producer settings, on the same
    listener: its client settings (SASL_SSL, the CA, the SCRAM login) come from the
    broker's 0600 ``client.properties`` (``--producer.config``), never the command line."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from stockbatch.bus.producer import PRODUCER_BATCH_BYTES
    from stockbatch.services.kafka import find_java, kafka_libs_dir
    from stockbatch.settings import KafkaSettings

    k = KafkaSettings()
    admin = AdminClient(service.client_config())
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
    props = {
        "bootstrap.servers": service.bootstrap_servers,
        "acks": "all",
        "enable.idempotence": "true",
        "compression.type": k.compression,
        "linger.ms": str(k.linger_ms),
        "batch.size": str(PRODUCER_BATCH_BYTES),
    }
    cmd = [
        find_java(),
        "-cp",
        str(kafka_libs_dir() / "*"),
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        topic,
        "--num-records",
        str(records),
        "--record-size",
        str(record_size),
        "--throughput",
        "-1",
        "--producer.config",
        str(service.client_properties_file),
        "--producer-props",
        *[f"{key}={value}" for key, value in props.items()],
    ]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    match = None
    for line in done.stdout.splitlines():
        match = _PERF_RE.search(line) or match
    if done.returncode != 0 or match is None:
        raise SystemExit(f"ProducerPerformance failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    sent, per_s, mb_s, latency = match.groups()
    return {
        "records": int(sent),
        "record_size": record_size,
        "records_per_s": float(per_s),
        "mib_per_s": float(mb_s),  # the tool's "MB" is 2^20 bytes
        "bytes_per_s": float(mb_s) * MIB,
        "avg_latency_ms": float(latency),
        "process_wall_s": round(wall, 3),  # JVM start included; the rate above excludes it
        "props": props,
        "security_protocol": service.security_protocol,
        "client_config_file": str(service.client_properties_file),
    }


def warm_up(config: dict[str, Any]) -> None:
    """First use of a fresh broker: create its internal topics before anything is timed.

    The first idempotent producer and the first consumer group make the broker
    create and load ``__consumer_offsets`` (and its producer-id state), a one-off
    of a few seconds that no later run pays.
    """
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = "bench.warmup"
    admin = AdminClient(config)  # kept alive until the result
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({**config, "enable.idempotence": True})
    producer.produce(topic, b"warm-up")
    if producer.flush(60):
        raise SystemExit("warm-up record was not delivered")
    consumer = Consumer({**config, "group.id": "bench-warmup", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            consumer.commit(msg, asynchronous=False)
            break
    consumer.close()


# ----------------------------------------------------------------------------- one size


def bench_size(size: str, service: Any, per_bar: bool) -> dict[str, Any]:
    """Every measurement of one size, against the running broker ``service``."""
    data_dir = dataset(size)
    exe = str(Path(PYTHON).with_name("stockbatch"))
    tag = f"{size}-{uuid.uuid4().hex[:6]}"
    work = Path(tempfile.mkdtemp(prefix=f"bench-kafka-{size}-", dir=OUT))
    broker_home = service.home
    res: dict[str, Any] = {
        "size": size,
        "data_dir": str(data_dir),
        "security_protocol": service.security_protocol,
    }
    try:
        print(f"[{size}] direct ingest ...", flush=True)
        direct_home = work / "direct"
        env = base_env(direct_home, broker_home, f"unused.{tag}")
        res["direct"] = measured([exe, "ingest", "--path", str(data_dir), "-q"], env)
        res["direct"]["rows"] = last_manifest(direct_home)["ingest"]["rows"]
        shutil.rmtree(direct_home, ignore_errors=True)

        print(f"[{size}] kafka ingest (produce) ...", flush=True)
        home = work / "kafka"
        topic = f"bench.bars.{tag}"
        env = base_env(home, broker_home, topic)
        cmd = [exe, "ingest", "--transport", "kafka", "--path", str(data_dir), "-q"]
        res["produce"] = measured(cmd, env)
        produced = last_manifest(home)["ingest"]
        res["produce"] |= {
            "rows": produced["rows"],
            "messages": produced["kafka"]["messages"],
            "value_bytes": produced["kafka"]["value_bytes"],
        }
        print(f"[{size}] kafka collect ...", flush=True)
        res["collect"] = measured([exe, "collect", "-q"], env)
        collected = last_manifest(home)["collect"]
        res["collect"] |= {"rows": collected["rows"], "messages": collected["messages"]}
        shutil.rmtree(home, ignore_errors=True)

        print(f"[{size}] produce phase (in memory) ...", flush=True)
        res["produce_phase"] = child("produce", data_dir, broker_home, f"bench.phase.{tag}")
        messages = res["produce"]["messages"]
        value_bytes = res["produce"]["value_bytes"]
        print(f"[{size}] ProducerPerformance ...", flush=True)
        res["perf_tool"] = perf_tool(
            service, f"bench.perf.{tag}", messages, round(value_bytes / messages), 6
        )
        if per_bar:
            print(f"[{size}] per-bar format ...", flush=True)
            res["per_bar"] = child("per-bar", data_dir, broker_home, f"bench.perbar.{tag}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["counts_agree"] = (
        res["direct"]["rows"]
        == res["produce"]["rows"]
        == res["collect"]["rows"]
        == res["produce_phase"]["rows"]
    )
    res["ratios"] = ratios(res)
    return res


def ratios(res: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue asks for."""
    perf = res["perf_tool"]["bytes_per_s"]
    vb = res["produce"]["value_bytes"]
    phase_rate = res["produce_phase"]["value_bytes"] / res["produce_phase"]["wall_s"]
    command_rate = vb / res["produce"]["wall_s"]
    kafka_path = res["produce"]["wall_s"] + res["collect"]["wall_s"]
    out = {
        "produce_phase_vs_perf_tool": round(phase_rate / perf, 3),
        "ingest_command_vs_perf_tool": round(command_rate / perf, 3),
        "kafka_path_vs_direct": round(kafka_path / res["direct"]["wall_s"], 3),
    }
    out["produce_verdict"] = (
        "met" if out["produce_phase_vs_perf_tool"] >= PRODUCE_TARGET else "MISSED"
    )
    out["path_verdict"] = "met" if out["kafka_path_vs_direct"] <= PATH_TARGET else "MISSED"
    if "per_bar" in res:
        batch_rows_s = res["produce_phase"]["rows"] / res["produce_phase"]["wall_s"]
        bar_rows_s = res["per_bar"]["rows"] / res["per_bar"]["wall_s"]
        out["batch_vs_per_bar_rows_per_s"] = round(batch_rows_s / bar_rows_s, 1)
    return out


def _line(size: str, step: str, wall: float, rows: int, nbytes: float | None, peak: Any) -> None:
    mib = f"{nbytes / wall / MIB:8.1f}" if nbytes is not None else f"{'':>8}"
    pk = f"{peak:8.0f}" if peak is not None else f"{'':>8}"
    print(f"{size:<7} {step:<29} {wall:8.2f} {rows / wall:12,.0f} {mib} {pk}")


def print_table(results: list[dict[str, Any]]) -> None:
    """Human-readable summary."""
    print()
    head = f"{'size':<7} {'step':<29} {'wall s':>8} {'rows/s':>12} {'MiB/s':>8} {'peak MB':>8}"
    print(head)
    print("-" * len(head))
    for res in results:
        size = res["size"]
        vb = res["produce"]["value_bytes"]
        rows = res["produce"]["rows"]
        d, p, c, ph = res["direct"], res["produce"], res["collect"], res["produce_phase"]
        _line(size, "direct ingest (CSV->bronze)", d["wall_s"], d["rows"], None, d["peak_mb"])
        _line(size, "kafka ingest (CSV->topic)", p["wall_s"], rows, vb, p["peak_mb"])
        _line(size, "kafka collect (topic->bronze)", c["wall_s"], c["rows"], vb, c["peak_mb"])
        _line(size, "produce phase (in memory)", ph["wall_s"], ph["rows"], ph["value_bytes"], None)
        pt = res["perf_tool"]
        perf_bytes = pt["records"] * pt["record_size"]
        _line(size, "ProducerPerformance", perf_bytes / pt["bytes_per_s"], rows, perf_bytes, None)
        if "per_bar" in res:
            pb = res["per_bar"]
            _line(size, "per-bar JSON records", pb["wall_s"], pb["rows"], pb["value_bytes"], None)
        r = res["ratios"]
        print(
            f"{size:<7} records: {p['messages']:,} of {vb / p['messages'] / 1000:.0f} kB "
            f"mean ({vb / MIB:,.0f} MiB); counts agree: {res['counts_agree']}; every "
            f"client on {res.get('security_protocol', 'PLAINTEXT')}"
        )
        print(
            f"{size:<7} produce phase / perf tool bytes/s = "
            f"{r['produce_phase_vs_perf_tool']:.2f}x ({r['produce_verdict']}, target >= "
            f"{PRODUCE_TARGET}x); whole ingest command / perf tool = "
            f"{r['ingest_command_vs_perf_tool']:.2f}x"
        )
        print(
            f"{size:<7} kafka path (produce + collect) / direct ingest = "
            f"{r['kafka_path_vs_direct']:.2f}x ({r['path_verdict']}, target <= {PATH_TARGET}x)"
        )
        if "batch_vs_per_bar_rows_per_s" in r:
            print(
                f"{size:<7} columnar batch records move "
                f"{r['batch_vs_per_bar_rows_per_s']}x the rows/s of one record per bar"
            )
        print()


def environment() -> dict[str, Any]:
    """What the figures depend on."""
    import confluent_kafka

    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "git_commit": commit,
        "confluent_kafka": confluent_kafka.version()[0],
        "librdkafka": confluent_kafka.libversion()[0],
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="sample,10x", help="comma list of sample, 10x")
    parser.add_argument("--no-per-bar", action="store_true", help="skip the per-bar format run")
    parser.add_argument("--phase", choices=["produce", "per-bar"], help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--broker-home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:  # a child process of this script
        fn = produce_phase if args.phase == "produce" else per_bar_phase
        print(json.dumps(fn(args.path, args.broker_home, args.topic)))
        return 0

    from stockbatch.services import KafkaService

    OUT.mkdir(parents=True, exist_ok=True)
    broker_home = OUT / "kafka-bench-home"
    service = KafkaService(broker_home)  # secured, as `services up kafka`: SASL_SSL
    service.purge()  # a fresh broker: no topics or data from earlier runs
    print("starting a local Kafka broker ...", flush=True)
    service.up()
    print(f"broker: {service.bootstrap_servers} ({service.security_protocol})", flush=True)
    warm_up(service.client_config())
    results = []
    try:
        for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
            per_bar = size == "sample" and not args.no_per_bar
            results.append(bench_size(size, service, per_bar))
    finally:
        service.purge()
    print_table(results)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    doc = {"environment": environment(), "results": results}
    for name in (f"bench_kafka-{stamp}.json", "bench_kafka-latest.json"):
        (OUT / name).write_text(json.dumps(doc, indent=2))
    print(f"results: {OUT / f'bench_kafka-{stamp}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
