"""The Kafka transport end to end on a real local broker (started by the session fixture).

The session broker is the secured one (SASL_SSL, SCRAM-SHA-512, its home's CA).
What is checked against the direct transport and the input files themselves:
the same gold bytes, every row exactly once in bronze, per-symbol partitioning,
offsets in the manifest, reruns that do nothing, settings resolution (the broker,
its CA and credentials found from services.json alone), two collectors splitting
the partitions, and SCRAM authentication over TLS.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from integration.kafka_checks import (
    active_bronze,
    count_data_lines,
    env_of,
    kafka_bronze_files,
    kafka_settings,
    key_digest,
    read_topic,
    source_keys,
    stockbatch_proc,
)
from stockbatch import lake, pipeline, runs
from stockbatch.bus import TransportError, codec
from stockbatch.cli import app
from stockbatch.lake.bronze import read_catalog
from stockbatch.settings import Settings
from stockbatch.sources.kaggle import KaggleSource

pytestmark = pytest.mark.integration

runner = CliRunner()


def sb(env: dict[str, str], *args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args), env=env, catch_exceptions=False)
    return res.exit_code, res.output


def gold_digest(settings: Settings) -> dict[str, str]:
    layout = lake.layout(settings)
    return {layout.relative(p): lake.file_sha256(p) for p in lake.parquet_files(layout.gold)}


@pytest.fixture
def huge_subset(huge_sample: Path, tmp_path: Path) -> Path:
    """120 real files of the shared Huge sample (about 290,000 rows), linked into a folder."""
    root = tmp_path / "huge-subset"
    for p in sorted((huge_sample / "Stocks").iterdir())[:120]:
        (root / "Stocks").mkdir(parents=True, exist_ok=True)
        (root / "Stocks" / p.name).symlink_to(p)
    return root


def test_run_through_kafka_equals_direct_and_reruns_do_nothing(
    kafka_broker: Any, demo_data: Path, tmp_path: Path
) -> None:
    s = kafka_settings(kafka_broker, tmp_path / "kafka")
    env = env_of(s)
    code, output = sb(
        env, "run", "--transport", "kafka", "--path", str(demo_data), "--as-of", "2023-06-30", "-q"
    )
    assert code == 0, output
    assert "all confirmed" in output and "collect " in output
    direct_home = tmp_path / "direct"
    code, output = sb(
        {"STOCKBATCH_HOME": str(direct_home)},
        *("run", "--path", str(demo_data), "--as-of", "2023-06-30", "-q"),
    )
    assert code == 0, output
    # Same silver/gold bytes whichever way the rows travelled.
    assert gold_digest(s) == gold_digest(Settings(home=direct_home))
    assert len(gold_digest(s)) > 0

    # Every data line of the input is in bronze exactly once, as the direct path has it.
    bronze = active_bronze(s)
    assert len(bronze) == count_data_lines(demo_data) == 50_284
    assert key_digest(bronze) == key_digest(source_keys(demo_data))
    assert key_digest(pl.concat([pl.read_parquet(p) for p in kafka_bronze_files(s)])) == (
        key_digest(bronze)
    )

    # The manifest has the offsets; every symbol lives in exactly one partition.
    doc = runs.last_manifests(s, 1)[0]
    assert doc["status"] == "succeeded"
    assert doc["ingest"]["transport"] == "kafka"
    produced = doc["ingest"]["kafka"]
    assert produced["delivered"] == produced["messages"] > 0
    offsets = doc["collect"]["offsets"]
    assert sum(r["end"] - r["start"] for r in offsets.values()) == produced["messages"]
    for p, r in produced["partitions"].items():
        assert offsets[p]["start"] <= r["first_offset"] and r["last_offset"] < offsets[p]["end"]
    ledger = pl.read_parquet(lake.layout(s).kafka_ledger)
    assert ledger.group_by("ref").agg(pl.col("partition").n_unique())["partition"].max() == 1
    # The catalog lists the same unit versions as the direct path's (the empty
    # huge/sbt.us.txt included), only the batch ids differ.
    cols = ["source", "ref", "sha256", "rows"]
    direct = Settings(home=direct_home)
    assert (
        read_catalog(s)
        .select(cols)
        .sort("ref")
        .equals(read_catalog(direct).select(cols).sort("ref"))
    )
    assert "huge/sbt.us.txt" in set(read_catalog(s)["ref"])

    # Rerun: nothing published, nothing collected, nothing changed.
    code, output = sb(
        env, "run", "--transport", "kafka", "--path", str(demo_data), "--as-of", "2023-06-30", "-q"
    )
    assert code == 0, output
    assert "nothing changed" in output
    doc = runs.last_manifests(s, 1)[0]
    assert doc["ingest"]["kafka"]["messages"] == 0
    assert doc["collect"]["messages"] == 0


def test_ingest_and_collect_as_separate_services_find_the_recorded_broker(
    kafka_broker: Any, demo_data: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    # What `stockbatch services up kafka` recorded for this broker, and nothing else:
    # no bootstrap servers, protocol, credentials or CA file in the environment.
    shutil.copy(kafka_broker.home / "services.json", home / "services.json")
    s = kafka_settings(kafka_broker, home, bootstrap_servers=None)
    env = {k: v for k, v in env_of(s).items() if k != "STOCKBATCH_KAFKA__BOOTSTRAP_SERVERS"}
    assert not [k for k in env if k.startswith("STOCKBATCH_KAFKA__S")]  # no security
    nasdaq = demo_data / "nasdaq"
    ing = stockbatch_proc(env, "ingest", "--path", str(nasdaq), "-q")
    assert ing.returncode == 0, ing.stderr
    assert "units published to Kafka" in ing.stdout
    assert not lake.layout(s).catalog.exists()  # the producer lands nothing
    col = stockbatch_proc(env, "collect", "-q")
    assert col.returncode == 0, col.stderr
    assert "collect " in col.stdout
    bronze = active_bronze(s)
    assert len(bronze) == count_data_lines(nasdaq)
    assert key_digest(bronze) == key_digest(source_keys(nasdaq))
    # The instrument metadata travelled too.
    inst = pl.read_parquet(lake.layout(s).instruments)
    meta = KaggleSource(nasdaq).instruments()
    assert meta is not None and meta.num_rows > 0
    assert set(inst["symbol"]) == set(meta.column("symbol").to_pylist())
    doc = runs.last_manifests(s, 1)[0]
    assert doc["command"] == "collect" and doc["collect"]["instruments"] > 0

    # Explicit settings win over the recorded broker: a bogus address is used (and fails).
    bogus = {
        **env,
        "STOCKBATCH_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "STOCKBATCH_KAFKA__TIMEOUT_S": "2",
    }
    started = time.monotonic()
    res = stockbatch_proc(bogus, "collect", "-q")
    assert res.returncode == 1
    assert "cannot reach the Kafka broker at 127.0.0.1:9" in res.stderr
    assert time.monotonic() - started < 20


def test_no_broker_configured_says_what_to_do(tmp_path: Path, demo_data: Path) -> None:
    s = Settings(home=tmp_path, transport="kafka", progress=False)
    with pytest.raises(TransportError, match="stockbatch services up kafka"):
        pipeline.ingest(s, KaggleSource(demo_data / "huge"))
    with pytest.raises(TransportError, match="STOCKBATCH_KAFKA__BOOTSTRAP_SERVERS"):
        pipeline.collect(s)


def test_two_collectors_in_one_group_split_the_partitions(
    kafka_broker: Any, huge_subset: Path, tmp_path: Path
) -> None:
    s = kafka_settings(kafka_broker, tmp_path / "home", batch_rows=2000)
    ing = pipeline.ingest(s, KaggleSource(huge_subset))
    assert ing.kafka is not None and ing.kafka["delivered"] == ing.kafka["messages"]
    env = env_of(s)
    procs = [
        stockbatch_proc(env, "collect", "--join-grace", "4", "-q", wait=False) for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    docs = [d for d in runs.last_manifests(s, 5) if d["command"] == "collect"]
    assert len(docs) == 2
    mine = [set(d["collect"]["offsets"]) for d in docs]
    # Each collector got a share, no partition was collected twice, all were covered.
    assert all(mine), mine
    assert not (mine[0] & mine[1])
    assert mine[0] | mine[1] == {str(p) for p in range(s.kafka.partitions)}
    assert sum(d["collect"]["messages"] for d in docs) == ing.kafka["messages"]
    # The union in bronze is exactly the produced rows.
    bronze = active_bronze(s)
    assert len(bronze) == count_data_lines(huge_subset) == ing.rows
    assert key_digest(bronze) == key_digest(source_keys(huge_subset))


def test_scram_authentication(kafka_broker: Any, demo_data: Path, tmp_path: Path) -> None:
    creds = kafka_broker.credentials
    assert creds is not None
    s = kafka_settings(kafka_broker, tmp_path / "ok")
    assert s.kafka.security_protocol == "SASL_SSL" and s.kafka.sasl_username == creds.username
    ing = pipeline.ingest(s, KaggleSource(demo_data / "huge"))
    col = pipeline.collect(s)
    assert col.stats.rows == ing.rows == len(active_bronze(s)) > 0

    wrong = kafka_settings(
        kafka_broker, tmp_path / "wrong", sasl_password="not-the-password", timeout_s=10.0
    )
    for stage in (
        lambda: pipeline.ingest(wrong, KaggleSource(demo_data / "huge")),
        lambda: pipeline.collect(wrong),
    ):
        started = time.monotonic()
        with pytest.raises(TransportError, match="refused the credentials") as info:
            stage()
        assert time.monotonic() - started < 15
        assert "SASL_PASSWORD" in str(info.value)
        assert "not-the-password" not in str(info.value)


def test_records_on_the_topic_follow_the_documented_format(
    kafka_broker: Any, demo_data: Path, tmp_path: Path
) -> None:
    s = kafka_settings(kafka_broker, tmp_path, batch_rows=1000)
    ing = pipeline.ingest(s, KaggleSource(demo_data / "huge"))
    assert ing.kafka is not None
    records = read_topic(kafka_broker, s.kafka.topic, ing.kafka["messages"])
    assert len(records) == ing.kafka["messages"]
    adm = [r for r in records if r.key() == b"ADM"]
    # adm.us.txt: 8,726 rows -> 9 records of at most 1,000 rows, in order in one partition.
    assert len({r.partition() for r in adm}) == 1
    msgs = [codec.decode(r.key(), r.value(), r.headers()) for r in adm]
    assert [(m.part, m.parts) for m in msgs] == [(i, 9) for i in range(9)]  # type: ignore[union-attr]
    headers = dict(adm[0].headers())
    assert headers["stockbatch-schema"] == b"bars.v1"
    assert headers["ingest-run-id"] == ing.run_id.encode()
    assert headers["source-file"] == b"adm.us.txt"
    json.dumps(ing.kafka)  # the manifest section is plain JSON
