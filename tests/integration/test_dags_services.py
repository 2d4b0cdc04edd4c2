"""The DAGs with every real backend: ``dag.test()`` of the daily DAG with Kafka as the
transport (the secured session broker: SASL_SSL, its CA file and SCRAM user passed as
STOCKBATCH_KAFKA__* settings), PostgreSQL as the warehouse and OpenSearch as the
search index, on files of the shared Huge sample, over two consecutive sessions with
the second one's rows appended in between; then the quarterly DAG's snapshot of a
closed quarter.

The lake equals one ``stockbatch run`` over the same files; the warehouse and the
index hold what gold holds; the snapshot equals ``stockbatch export quarterly``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

from integration.conftest import KafkaBroker, OpenSearchNode, Postgres
from stockbatch.lake import gold
from stockbatch.search.indices import INSTRUMENTS
from stockbatch.settings import Settings
from stockbatch.warehouse import db
from support.airflow_dags import airflow_env, dag_manifests, run_dag
from support.lake_compare import PROVENANCE_ONLY, assert_lakes_equal, read_layer

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.opensearch]

SESSION_1, SESSION_2 = "2017-11-09", "2017-11-10"
FILES = 24
"""Files of the Huge sample taken (those that reach SESSION_2): enough for every layout
quirk of the stock and ETF folders, small enough for a test."""


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory, huge_sample: Path) -> Path:
    """Huge-sample files that trade on both sessions, cut before SESSION_2; the cut lines
    are kept aside in ``<file>.next``."""
    root = tmp_path_factory.mktemp("huge-landing") / "huge"
    taken = 0
    for src in sorted(huge_sample.rglob("*.txt")):
        text = src.read_text()
        lines = text.splitlines(keepends=True)
        if len(lines) < 300 or not lines[-1].startswith(SESSION_2):
            continue
        if not lines[-2].startswith(SESSION_1):
            continue
        dest = root / src.relative_to(huge_sample)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text("".join(lines[:-1]))
        dest.with_name(dest.name + ".next").write_text(lines[-1])
        taken += 1
        if taken == FILES:
            break
    assert taken == FILES, f"only {taken} files of the Huge sample end on {SESSION_2}"
    return root


def _append_next_session(landing: Path) -> None:
    for nxt in landing.rglob("*.next"):
        target = nxt.with_name(nxt.name.removesuffix(".next"))
        target.write_text(target.read_text() + nxt.read_text())
        nxt.rename(nxt.with_name(nxt.name + ".done"))


def test_the_daily_and_quarterly_dags_on_kafka_postgresql_and_opensearch(
    tmp_path: Path,
    landing: Path,
    pg: Postgres,
    opensearch_node: OpenSearchNode,
    kafka_broker: KafkaBroker,
) -> None:
    pg.ensure_running()
    opensearch_node.ensure_running()
    urls = pg.service.create_database(f"dag_{uuid.uuid4().hex[:10]}")
    prefix = f"d{uuid.uuid4().hex[:8]}"
    topic = f"dagtest.{uuid.uuid4().hex[:8]}"
    home = tmp_path / "home"
    settings = {
        "STOCKBATCH_HOME": str(home),
        "STOCKBATCH_TRANSPORT": "kafka",
        **kafka_broker.env(),
        "STOCKBATCH_KAFKA__TOPIC": topic,
        "STOCKBATCH_KAFKA__DEAD_LETTER_TOPIC": topic + ".dlq",
        "STOCKBATCH_KAFKA__CONSUMER_GROUP": topic,
        "STOCKBATCH_WAREHOUSE__KIND": "postgresql",
        "STOCKBATCH_WAREHOUSE__URL": urls["loader"],
        "STOCKBATCH_WAREHOUSE__OWNER_URL": urls["owner"],
        "STOCKBATCH_WAREHOUSE__READER_URL": urls["reader"],
        # The secured node's URL, user and CA, with this test's index prefix.
        **opensearch_node.env(prefix),
        "STOCKBATCH_SCHEDULE__RETRY_DELAY_S": "1",
        "STOCKBATCH_PROGRESS": "false",
    }
    env = airflow_env(tmp_path / "airflow")
    conf = {"source": "kaggle", "path": str(landing)}

    first = run_dag(env, "stockbatch_daily", f"{SESSION_1}T22:00:00+00:00", conf, **settings)
    assert first["state"] == "success", first["log"][-4000:]
    _append_next_session(landing)
    second = run_dag(env, "stockbatch_daily", f"{SESSION_2}T22:00:00+00:00", conf, **settings)
    assert second["state"] == "success", second["log"][-4000:]

    docs = dag_manifests(home)
    assert [d["status"] for d in docs] == ["succeeded", "succeeded"], [d.get("error") for d in docs]
    assert all(d["collect"]["messages"] > 0 for d in docs)  # through Kafka
    assert docs[1]["ingest"]["units_ingested"] == FILES  # every file got a line
    assert docs[1]["load"]["search"]["stale"] is False

    # The same lake as one plain run over the whole files (embedded defaults).
    clean = tmp_path / "clean"
    plain = {k: v for k, v in os.environ.items() if not k.startswith("STOCKBATCH_")}
    one = subprocess.run(
        [
            sys.executable,
            "-m",
            "stockbatch.cli",
            "run",
            *("--source", "kaggle"),
            *("--path", str(landing), "--as-of", SESSION_2, "-q"),
        ],
        env={**plain, "STOCKBATCH_HOME": str(clean)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert one.returncode == 0, one.stdout + one.stderr
    assert_lakes_equal(home / "lake", clean / "lake", ignore=PROVENANCE_ONLY)

    # The warehouse (read as the reader role) and the index hold what gold holds.
    gold_daily = read_layer(home / "lake", "gold/daily_features")
    engine = db.engine_for(urls["reader"])
    try:
        with engine.connect() as conn:
            bars = conn.execute(sa.text("SELECT count(*) FROM daily_bars")).scalar_one()
            last = conn.execute(sa.text("SELECT max(trade_date) FROM daily_bars")).scalar_one()
    finally:
        engine.dispose()
    assert bars == gold_daily.height and str(last) == SESSION_2
    indexed = opensearch_node.backend().count(INSTRUMENTS.alias(prefix))
    assert indexed == gold.instruments_table(Settings(home=home)).num_rows

    # The quarterly DAG snapshots the newest quarter the gold covers: 2017Q3.
    quarterly = run_dag(env, "stockbatch_quarterly", f"{SESSION_2}T23:00:00+00:00", {}, **settings)
    assert quarterly["state"] == "success", quarterly["log"][-4000:]
    folder = home / "exports" / "quarterly" / "2017Q3"
    version = (folder / "latest.json").read_text()
    snap = next(p for p in folder.glob("*.parquet") if p.stem in version)
    out = tmp_path / "export.parquet"
    export = subprocess.run(
        [sys.executable, "-m", "stockbatch.cli", "export", "quarterly", "--out", str(out)],
        env={**os.environ, **settings},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert export.returncode == 0, export.stdout + export.stderr
    expected = pl.read_parquet(out).filter(pl.col("quarter") == "2017Q3").sort("symbol")
    assert pl.read_parquet(snap).sort("symbol").equals(expected)
