"""A real three-node Kafka cluster (KRaft, every node broker and controller) on loopback.

The module's cluster is started with ``KafkaCluster`` (what ``stockbatch services up
kafka --brokers 3`` runs) in its own temporary home, secured as by default: clients on
SASL_SSL, brokers to each other on the same listener (SCRAM over TLS), the controller
quorum over mutual TLS. Checked: the quorum forms with three brokers over TLS; the
topic the pipeline creates from the recorded endpoint has three replicas,
``min.insync.replicas=2`` and every replica in sync; ``run --transport kafka``
through the cluster gives the direct transport's gold bytes and bronze rows;
one node SIGKILLed in the middle of an ingest and another in the middle of a collect
lose and double nothing.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from confluent_kafka import TopicCollection
from confluent_kafka.admin import AdminClient, ConfigResource
from typer.testing import CliRunner

from integration.kafka_checks import (
    active_bronze,
    count_data_lines,
    env_of,
    kafka_bronze_files,
    kafka_settings,
    key_digest,
    source_keys,
)
from stockbatch import lake, pipeline, runs
from stockbatch.cli import app
from stockbatch.cli.services import services_app
from stockbatch.results import ProgressTask
from stockbatch.services import tls
from stockbatch.services.endpoints import effective_kafka_settings, recorded_endpoints
from stockbatch.services.kafka import KafkaCluster, probe_kafka
from stockbatch.services.system import ServiceError, process_cmdline
from stockbatch.settings import Settings
from stockbatch.sources.kaggle import KaggleSource

pytestmark = pytest.mark.integration

runner = CliRunner()
AS_OF = "2023-06-30"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three nodes for this module (a fresh home), always stopped at the end."""
    home = tmp_path_factory.mktemp("kafka-cluster-home")
    service = KafkaCluster(home, brokers=3)
    try:
        error = None
        t0 = time.monotonic()
        try:
            service.up()
        except ServiceError as exc:
            error = str(exc)
        if error is not None:  # outside the except: no chained traceback around the message
            pytest.fail(f"could not start the local Kafka cluster: {error}", pytrace=False)
        print(f"3-node Kafka cluster up in {time.monotonic() - t0:.1f} s")
        yield service
    finally:
        t0 = time.monotonic()
        service.down()  # never leave a node behind, even when start-up or a test failed
        print(f"3-node Kafka cluster down in {time.monotonic() - t0:.1f} s")


def ensure_all_up(cluster: KafkaCluster) -> None:
    """Bring back any node a test killed (same ports, same data)."""
    if not cluster.status().running:
        cluster.up()


def wait_fully_replicated(cluster: KafkaCluster, topics: list[str], timeout: float = 60) -> None:
    """Wait until every partition of ``topics`` (those that exist) has all its replicas
    in sync again."""
    admin = AdminClient(cluster.client_config())
    deadline = time.monotonic() + timeout
    while True:
        md = admin.list_topics(timeout=10)
        lagging = [
            (t, p.id)
            for t in topics
            if t in md.topics
            for p in md.topics[t].partitions.values()
            if len(p.isrs) < len(p.replicas)
        ]
        if not lagging:
            return
        assert time.monotonic() < deadline, f"replicas still out of sync: {lagging}"
        time.sleep(0.5)


def lake_env(cluster: KafkaCluster, home: Path, **kafka: Any) -> tuple[Settings, dict[str, str]]:
    """A home with only the cluster's services.json (no broker in the environment) and
    a topic, dead-letter topic and group of its own: what a user's run would find."""
    home.mkdir(parents=True)
    shutil.copy(cluster.home / "services.json", home / "services.json")
    # bootstrap_servers unset: the cluster (and its replication) comes from the record.
    s = kafka_settings(cluster, home, bootstrap_servers=None, **kafka)
    env = {k: v for k, v in env_of(s).items() if k != "STOCKBATCH_KAFKA__BOOTSTRAP_SERVERS"}
    return s, env


def gold_digest(settings: Settings) -> dict[str, str]:
    layout = lake.layout(settings)
    return {layout.relative(p): lake.file_sha256(p) for p in lake.parquet_files(layout.gold)}


@pytest.fixture(scope="module")
def kafka_run(
    cluster: KafkaCluster, demo_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """``stockbatch run --transport kafka`` on the demo data through the cluster, found
    from services.json alone; its settings (with the topic it used)."""
    s, env = lake_env(cluster, tmp_path_factory.mktemp("cluster-run") / "home")
    args = ["run", "--transport", "kafka", "--path", str(demo_data), "--as-of", AS_OF, "-q"]
    t0 = time.monotonic()
    res = runner.invoke(app, args, env=env, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    print(f"run --transport kafka through 3 nodes: {time.monotonic() - t0:.1f} s")
    return s


# ----------------------------------------------------------------------------- the cluster


def test_three_brokers_form_one_cluster(cluster: KafkaCluster) -> None:
    md = AdminClient(cluster.client_config()).list_topics(timeout=10)
    assert sorted(md.brokers) == [1, 2, 3]
    assert md.controller_id in (1, 2, 3)
    assert {f"{b.host}:{b.port}" for b in md.brokers.values()} == set(
        cluster.bootstrap_servers.split(",")
    )
    # Each node is its own JVM with its own folder and ports.
    pids = [node.status().pid for node in cluster.nodes]
    assert len(set(pids)) == 3 and None not in pids
    for node, pid in zip(cluster.nodes, pids, strict=True):
        assert str(node.properties_file) in process_cmdline(pid)  # type: ignore[arg-type]
        assert node.dir == cluster.home / "services" / "kafka" / f"node-{node.node_id}"
        assert (node.data_dir / "meta.properties").exists()
        props = node.properties_file.read_text()
        assert f"node.id={node.node_id}\n" in props
        assert props.count("@127.0.0.1:") == 3  # the quorum: all three controllers
        # Every link over TLS: clients and brokers on SASL_SSL, controllers on mutual TLS.
        assert "listener.security.protocol.map=CONTROLLER:SSL,SASL_SSL:SASL_SSL\n" in props
        assert "inter.broker.listener.name=SASL_SSL\n" in props
        assert "listener.name.controller.ssl.client.auth=required\n" in props
        controller = f"127.0.0.1:{node._stored_state()['controller_port']}"
        assert not probe_kafka(controller, 2)  # plain TCP: no answer
        assert probe_kafka(node.address, 2, ssl_context=node.probe_context())


def test_services_json_records_every_node_and_the_topic_settings(cluster: KafkaCluster) -> None:
    record = recorded_endpoints(cluster.home)["kafka"]
    servers = record["bootstrap_servers"].split(",")
    assert servers == [node.address for node in cluster.nodes] and len(set(servers)) == 3
    assert record["brokers"] == 3
    assert record["replication_factor"] == 3 and record["min_insync_replicas"] == 2
    assert record["security_protocol"] == "SASL_SSL" and record["sasl_username"] == "stockbatch"
    assert record["ssl_cafile"] == str(tls.ca_file(cluster.home))
    assert [n["node_id"] for n in record["nodes"]] == [1, 2, 3]
    assert record["pid"] == record["nodes"][0]["pid"]
    # Settings left at their defaults take the cluster's; explicit ones win.
    found = effective_kafka_settings(Settings(home=cluster.home))
    assert found.bootstrap_servers == record["bootstrap_servers"]
    assert found.security_protocol == "SASL_SSL" and found.ssl_cafile == tls.ca_file(cluster.home)
    assert (found.replication_factor, found.min_insync_replicas) == (3, 2)
    explicit = Settings.model_validate(
        {"home": cluster.home, "kafka": {"replication_factor": 2, "min_insync_replicas": 1}}
    )
    assert effective_kafka_settings(explicit).replication_factor == 2
    assert effective_kafka_settings(explicit).min_insync_replicas == 1


def test_cli_status_shows_the_cluster(cluster: KafkaCluster) -> None:
    home = str(cluster.home)
    result = runner.invoke(services_app, ["status", "kafka", "--home", home, "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)["kafka"]
    assert status["state"] == "running"
    assert status["endpoint"]["bootstrap_servers"] == cluster.bootstrap_servers
    assert "sasl_password" not in status["endpoint"]
    assert status["endpoint"]["security_protocol"] == "SASL_SSL"
    # `up kafka` again (no --brokers: as last time) keeps the running cluster.
    result = runner.invoke(services_app, ["up", "kafka", "--home", home])
    assert result.exit_code == 0, result.output
    assert f"kafka: running at {cluster.bootstrap_servers}" in result.stdout
    # A single broker cannot start next to it (services.json holds one Kafka).
    result = runner.invoke(services_app, ["up", "kafka", "--brokers", "1", "--home", home])
    assert result.exit_code == 1 and "cluster runs under" in result.output
    result = runner.invoke(services_app, ["up", "kafka", "--brokers", "2", "--home", home])
    assert result.exit_code == 1 and "at least 3" in result.output


def test_pipeline_topic_has_three_in_sync_replicas(
    cluster: KafkaCluster, kafka_run: Settings
) -> None:
    topic = kafka_run.kafka.topic
    admin = AdminClient(cluster.client_config())
    description = admin.describe_topics(TopicCollection([topic]))[topic].result(timeout=10)
    assert len(description.partitions) == kafka_run.kafka.partitions
    for p in description.partitions:
        assert sorted(r.id for r in p.replicas) == [1, 2, 3]
        assert sorted(r.id for r in p.isr) == [1, 2, 3]
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["min.insync.replicas"].value == "2"
    assert not configs["min.insync.replicas"].is_default  # set on the topic at creation
    # The dead-letter topic the collector created is replicated the same way.
    dlq = kafka_run.kafka.dead_letter_topic
    md = admin.list_topics(timeout=10)
    assert all(len(p.replicas) == 3 for p in md.topics[dlq].partitions.values())
    # So is the consumer groups' offsets topic (the broker's setting).
    offsets = md.topics["__consumer_offsets"].partitions.values()
    assert all(len(p.replicas) == 3 for p in offsets)


def test_run_through_the_cluster_equals_direct(
    kafka_run: Settings, demo_data: Path, tmp_path: Path
) -> None:
    direct_home = tmp_path / "direct"
    args = ["run", "--path", str(demo_data), "--as-of", AS_OF, "-q"]
    res = runner.invoke(app, args, env={"STOCKBATCH_HOME": str(direct_home)})
    assert res.exit_code == 0, res.output
    direct = Settings(home=direct_home)
    assert gold_digest(kafka_run) == gold_digest(direct)
    assert len(gold_digest(kafka_run)) > 0
    bronze = active_bronze(kafka_run)
    assert len(bronze) == len(active_bronze(direct)) == count_data_lines(demo_data) == 50_284
    assert key_digest(bronze) == key_digest(source_keys(demo_data))
    physical = pl.concat([pl.read_parquet(p) for p in kafka_bronze_files(kafka_run)])
    assert key_digest(physical) == key_digest(bronze)  # not even a file holds a duplicate
    doc = runs.last_manifests(kafka_run, 1)[0]
    assert doc["status"] == "succeeded"
    produced = doc["ingest"]["kafka"]
    assert produced["delivered"] == produced["messages"] > 0
    assert len(produced["bootstrap_servers"].split(",")) == 3


# ----------------------------------------------------------------------------- faults


class _KillNodeAt(ProgressTask):
    """Ingest progress task that SIGKILLs node ``node_id`` when unit ``at`` is reached."""

    def __init__(self, cluster: KafkaCluster, node_id: int, at: int) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.at = at
        self.seen = 0
        self.killed = False

    def advance(self, n: int = 1) -> None:
        self.seen += n
        if self.seen == self.at:
            self.killed = self.cluster.kill(self.node_id)


def _kill_when_bronze_appears(
    cluster: KafkaCluster, node_id: int, s: Settings, killed_at: list[float]
) -> threading.Thread:
    """A thread that SIGKILLs node ``node_id`` once the collector wrote its first flush
    (the time of the kill goes to ``killed_at``)."""

    def watch() -> None:
        deadline = time.monotonic() + 120
        while not kafka_bronze_files(s) and time.monotonic() < deadline:
            time.sleep(0.05)
        if cluster.kill(node_id):
            killed_at.append(time.monotonic())

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_node_killed_mid_ingest_and_another_mid_collect_lose_and_double_nothing(
    cluster: KafkaCluster, huge_sample: Path, tmp_path: Path
) -> None:
    subset = tmp_path / "huge-subset"
    (subset / "Stocks").mkdir(parents=True)
    for p in sorted((huge_sample / "Stocks").iterdir())[:120]:  # about 290,000 rows
        (subset / "Stocks" / p.name).symlink_to(p)
    expected = key_digest(source_keys(subset))
    assert expected[0] == count_data_lines(subset)
    s, _ = lake_env(cluster, tmp_path / "home", timeout_s=60.0, batch_rows=2000)
    s.lake.flush_rows = 40_000  # several flushes: the kill lands between two of them
    topic = s.kafka.topic
    try:
        # Node 2 dies a quarter into the produce: partitions it led move to the others,
        # the idempotent acks=all producer resends what was in flight, the run completes.
        killer = _KillNodeAt(cluster, node_id=2, at=30)
        t0 = time.monotonic()
        ing = pipeline.ingest(s, KaggleSource(subset), progress=lambda d, t: killer)
        print(f"ingest with node 2 killed at unit 30: {time.monotonic() - t0:.1f} s")
        assert killer.killed
        assert ing.rows == expected[0]
        assert ing.kafka is not None and ing.kafka["delivered"] == ing.kafka["messages"]
        assert cluster.status().state == "unhealthy"  # two of three answer

        # Node 2 back (a crash restart on its data) and in sync before the next fault:
        # with two nodes down the quorum and min.insync.replicas=2 would be gone.
        cluster.up()
        wait_fully_replicated(cluster, [topic, "__consumer_offsets"])

        # Node 3 dies once the collector has committed its first flush.
        killed_at: list[float] = []
        watcher = _kill_when_bronze_appears(cluster, 3, s, killed_at)
        t0 = time.monotonic()
        col = pipeline.collect(s)
        ended = time.monotonic()
        watcher.join(5)
        assert killed_at and t0 < killed_at[0] < ended  # it really died during the collect
        print(
            f"collect with node 3 killed {killed_at[0] - t0:.1f} s in: {ended - t0:.1f} s, "
            f"{col.stats.messages} records"
        )
        assert col.stats.dead_lettered == 0
    finally:
        ensure_all_up(cluster)

    # Every input row exactly once, in what process reads and in the files themselves.
    bronze = active_bronze(s)
    assert key_digest(bronze) == expected
    physical = pl.concat([pl.read_parquet(p) for p in kafka_bronze_files(s)])
    assert key_digest(physical) == expected
    ledger = pl.read_parquet(lake.layout(s).kafka_ledger)
    assert len(ledger) == ing.kafka["messages"]
    assert ledger.select("partition", "offset").is_unique().all()
    # The same rows as the direct transport lands from the same files.
    direct = Settings(home=tmp_path / "direct", progress=False)
    pipeline.ingest(direct, KaggleSource(subset))
    assert key_digest(active_bronze(direct)) == key_digest(bronze)


def test_cli_down_stops_every_node_and_up_brings_the_cluster_back(cluster: KafkaCluster) -> None:
    home = str(cluster.home)
    pids = [node.status().pid for node in cluster.nodes]
    t0 = time.monotonic()
    result = runner.invoke(services_app, ["down", "kafka", "--home", home])
    took = time.monotonic() - t0
    assert result.exit_code == 0, result.output
    assert "kafka: stopped" in result.stdout
    # Bounded well below stop_timeout (30 s) even if a node outlives the quorum.
    assert took < 20, took
    assert all(pid and not is_kafka_process(pid) for pid in pids)
    assert "kafka" not in recorded_endpoints(cluster.home)
    result = runner.invoke(services_app, ["status", "kafka", "--home", home])
    assert result.exit_code == 0 and "kafka: stopped" in result.stdout
    # `up kafka` without --brokers starts what was there: the 3 nodes, same ports and data.
    result = runner.invoke(services_app, ["up", "kafka", "--home", home])
    assert result.exit_code == 0, result.output
    assert f"kafka: running at {cluster.bootstrap_servers}" in result.stdout
    md = AdminClient(cluster.client_config()).list_topics(timeout=10)
    assert sorted(md.brokers) == [1, 2, 3]
    print(f"services down kafka (3 nodes): {took:.1f} s")


def is_kafka_process(pid: int) -> bool:
    """True if ``pid`` is still a Kafka JVM (a reused pid is not)."""
    return "kafka.Kafka" in process_cmdline(pid)
