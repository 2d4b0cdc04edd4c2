"""Ingest reads only what changed (issue 15): an appended file lands its new lines
from its new bytes alone; a changed middle is re-landed whole; a same-size edit that
sampling misses is caught by ``--verify``; the lake always equals a fresh ingest.

Real files: the largest files of the shared Huge sample (and two short ones, one
with CRLF line ends), cut back and grown the way a re-downloaded dataset grows.
Bytes read are counted by wrapping ``os.pread`` (the only call the Kaggle reader
reads price files with), and checked against the reader's own count.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from stockbatch import lake, pipeline, runs
from stockbatch.cli import app
from stockbatch.lake import bronze
from stockbatch.results import IngestResult
from stockbatch.services import KafkaService
from stockbatch.settings import KafkaSettings, Settings
from stockbatch.sources.kaggle import KaggleSource
from stockbatch.sources.versions import SAMPLE_BYTES, sample_ranges
from support.services import RunningService, session_service

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sources" / "kaggle"
HOLD = 3  # lines held back per file, appended one by one


def ingest(home: Path, data: Path, **kw: bool) -> IngestResult:
    return pipeline.ingest(Settings(home=home, progress=False), KaggleSource(data), **kw)


def active_rows(home: Path) -> pl.DataFrame:
    """Every active bronze row (all parts of each unit's active version), sorted."""
    settings = Settings(home=home, progress=False)
    keys = bronze.active_parts(settings).select(
        pl.col("ref").alias("source_file"), pl.col("batch").alias("ingest_run_id")
    )
    files = lake.parquet_files(lake.layout(settings).bronze_bars)
    return (
        pl.scan_parquet(files)
        .join(keys.lazy(), on=["source_file", "ingest_run_id"], how="semi")
        .drop("ingest_run_id")
        .collect()
        .sort("source_file", "line_no")
    )


def assert_equals_fresh_ingest(home: Path, data: Path, tmp: Path) -> None:
    """The lake's active bronze rows are those of a fresh, whole ingest of ``data``."""
    fresh = tmp / f"fresh-{len(list(tmp.iterdir()))}"
    ingest(fresh, data)
    got, want = active_rows(home), active_rows(fresh)
    assert got.height == want.height
    assert got.equals(want, null_equal=True)


class Grown:
    """A working copy of real files, each cut back by HOLD lines."""

    def __init__(self, tmp: Path, huge_sample: Path) -> None:
        self.tmp = tmp
        self.data = tmp / "data"
        self.home = tmp / "home"
        self.data.mkdir()
        biggest = sorted(huge_sample.rglob("*.us.txt"), key=lambda p: -p.stat().st_size)[:6]
        sources = [*biggest, FIXTURES / "huge" / "btu_.us.txt", FIXTURES / "huge" / "dcng.us.txt"]
        self.held: dict[Path, list[bytes]] = {}
        for src in sources:
            lines = src.read_bytes().splitlines(keepends=True)
            dst = self.data / src.name
            dst.write_bytes(b"".join(lines[:-HOLD]))
            self.held[dst] = lines[-HOLD:]
        self.sizes = {p: p.stat().st_size for p in self.held}

    def append(self, day: int) -> int:
        """Append held-back line ``day`` to every file; returns the bytes appended."""
        added = 0
        for path, lines in self.held.items():
            with path.open("ab") as fh:
                fh.write(lines[day])
            added += len(lines[day])
        return added


@pytest.fixture
def grown(tmp_path: Path, huge_sample: Path) -> Grown:
    g = Grown(tmp_path, huge_sample)
    first = ingest(g.home, g.data)
    assert first.units_ingested == len(g.held)
    assert {u["read"] for u in first.units} == {"whole"}
    return g


def count_preads(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Wrap ``os.pread``; returns a function giving the bytes read so far."""
    real = os.pread
    total = [0]
    guard = threading.Lock()  # the reader runs on a thread pool

    def counting(fd: int, length: int, offset: int) -> bytes:
        data = real(fd, length, offset)
        with guard:
            total[0] += len(data)
        return data

    monkeypatch.setattr(os, "pread", counting)
    return lambda: total[0]


def test_appended_lines_land_from_the_new_bytes_alone(
    grown: Grown, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = sum(p.stat().st_size for p in grown.held)
    added = grown.append(0)
    read = count_preads(monkeypatch)
    res = ingest(grown.home, grown.data)
    monkeypatch.undo()
    assert res.rows == len(grown.held), "exactly the appended lines"
    assert {u["read"] for u in res.units} == {"tail"}
    assert read() == sum(u["bytes_read"] for u in res.units)
    # Per file: the old region's sample and the new bytes (the new sample is made of
    # bytes already read: its blocks sit on the same grid).
    assert read() <= len(grown.held) * SAMPLE_BYTES + added
    assert read() < history / 4, (read(), history)
    entries = bronze.read_catalog(Settings(home=grown.home)).filter(pl.col("delta"))
    assert entries.height == len(grown.held)
    assert_equals_fresh_ingest(grown.home, grown.data, grown.tmp)

    # Unchanged files: skipped after reading their sample only.
    read = count_preads(monkeypatch)
    again = ingest(grown.home, grown.data)
    monkeypatch.undo()
    assert again.units_skipped == len(grown.held) and again.rows == 0
    assert read() <= len(grown.held) * SAMPLE_BYTES


def test_appends_of_every_shape_equal_a_fresh_ingest(grown: Grown) -> None:
    """Two appends (a chain), an old last line without its newline, blank lines, a
    lost fingerprint store: the active rows always equal a fresh ingest's."""
    grown.append(0)
    assert ingest(grown.home, grown.data).rows == len(grown.held)
    # The next line arrives in two writes: first without its newline...
    target = next(iter(grown.held))
    line = grown.held[target][1]
    with target.open("ab") as fh:
        fh.write(line.rstrip(b"\r\n"))
    partial = ingest(grown.home, grown.data)
    assert [u["read"] for u in partial.units] == ["tail"] and partial.rows == 1
    # ...then its line end and a blank line: the unterminated line was already landed,
    # so it is the same line and nothing new lands but the blank (no row).
    with target.open("ab") as fh:
        fh.write(line[len(line.rstrip(b"\r\n")) :] + b"\n")
    ended = ingest(grown.home, grown.data)
    assert [u["read"] for u in ended.units] == ["tail"] and ended.rows == 0
    assert_equals_fresh_ingest(grown.home, grown.data, grown.tmp)
    # A lost fingerprint store: files are read whole once, and still recognised.
    (lake.layout(Settings(home=grown.home)).catalog.with_name("_fingerprints.parquet")).unlink()
    for path, lines in grown.held.items():
        if path != target:
            with path.open("ab") as fh:
                fh.write(lines[1])
    res = ingest(grown.home, grown.data)
    assert res.units_skipped == 1 and res.rows == len(grown.held) - 1
    assert {u["read"] for u in res.units} == {"tail"}
    assert_equals_fresh_ingest(grown.home, grown.data, grown.tmp)
    assert ingest(grown.home, grown.data).units_skipped == len(grown.held)  # rerun: nothing


def test_a_changed_middle_of_another_size_is_landed_whole(grown: Grown) -> None:
    path = max(grown.held, key=lambda p: p.stat().st_size)
    data = path.read_bytes()
    mid = data.index(b"\n", len(data) // 2) + 1
    end = data.index(b"\n", mid)
    fields = data[mid:end].split(b",")
    fields[4] = fields[4] + b"1"  # the close gets one more digit: the file is a byte longer
    path.write_bytes(data[:mid] + b",".join(fields) + data[end:])
    grown.append(0)
    res = ingest(grown.home, grown.data)
    whole = [u for u in res.units if u["read"] == "whole"]
    assert [u["ref"] for u in whole] == [path.name]
    assert whole[0]["changed_history"] is True
    assert whole[0]["rows"] == len(path.read_bytes().splitlines()) - 1  # every line but the header
    entry = bronze.active_units(Settings(home=grown.home)).filter(pl.col("ref") == path.name)
    assert entry["delta"].to_list() == [False] and entry["extends"].to_list() == [None]
    assert res.rows == whole[0]["rows"] + len(grown.held) - 1
    assert_equals_fresh_ingest(grown.home, grown.data, grown.tmp)


def test_a_same_size_edit_missed_by_sampling_is_caught_by_verify(grown: Grown) -> None:
    path = max(grown.held, key=lambda p: p.stat().st_size)
    data = path.read_bytes()
    st = path.stat()
    covered = {i for o, n in sample_ranges(len(data)) for i in range(o, o + n)}
    mid = data.index(b"\n", len(data) // 2) + 1
    at = next(i for i in range(data.index(b",", mid) + 1, len(data)) if i not in covered
              and data[i : i + 1].isdigit() and data[i - 1 : i] == b".")  # fmt: skip
    digit = b"7" if data[at : at + 1] != b"7" else b"3"
    path.write_bytes(data[:at] + digit + data[at + 1 :])
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime
    # Sampling cannot see it: the documented limit.
    missed = ingest(grown.home, grown.data)
    assert missed.units_skipped == len(grown.held) and missed.rows == 0
    # --verify hashes every file in full and re-lands the changed one whole.
    env = {"STOCKBATCH_HOME": str(grown.home), "STOCKBATCH_PROGRESS": "false"}
    res = CliRunner().invoke(
        app,
        ["ingest", "--source", "kaggle", "--path", str(grown.data), "--verify", "--quiet"],
        env=env,
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    (manifest,) = runs.last_manifests(Settings(home=grown.home), 1, [])
    units = manifest["ingest"]["units"]
    assert [(u["ref"], u["read"], u.get("changed_history")) for u in units] == [
        (path.name, "whole", True)
    ]
    assert_equals_fresh_ingest(grown.home, grown.data, grown.tmp)
    again = ingest(grown.home, grown.data, verify=True)
    assert again.units_skipped == len(grown.held), "verify twice: nothing more"


def test_a_shrunk_file_is_landed_whole(grown: Grown) -> None:
    path = next(iter(grown.held))
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))
    res = ingest(grown.home, grown.data)
    assert [(u["ref"], u["read"], u["rows"]) for u in res.units] == [
        (path.name, "whole", len(lines) - 2)
    ]
    assert_equals_fresh_ingest(grown.home, grown.data, grown.tmp)


def test_force_relands_whole_and_process_sees_nothing_new(grown: Grown) -> None:
    """--force lands whole files whose id (plain SHA-256) differs from the chained id
    of the appended version; ``extends`` still tells ``process`` nothing is new."""
    settings = Settings(home=grown.home, progress=False)
    grown.append(0)
    ingest(grown.home, grown.data)
    pipeline.process(settings)
    res = ingest(grown.home, grown.data, force=True)
    assert res.units_ingested == len(grown.held)
    assert {u["read"] for u in res.units} == {"whole"}
    assert_equals_fresh_ingest(grown.home, grown.data, grown.tmp)
    again = pipeline.process(settings)
    assert again.recomputed["mode"] == "incremental", again.recomputed
    assert again.recomputed.get("new_rows", 0) == 0, again.recomputed
    assert again.recomputed.get("rebuilt_buckets") == [], again.recomputed


# ----------------------------------------------------------------------------- Kafka


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaService]:
    """A real local Kafka broker (provisioned by the project, SASL_SSL as `services up`
    makes it) for this module."""
    home = tmp_path_factory.mktemp("kafka-home")
    with session_service(RunningService(KafkaService(home), home), "Kafka") as b:
        yield b.service


@pytest.mark.integration
def test_kafka_publishes_grown_files_whole_and_reconciles(
    grown: Grown, broker: KafkaService
) -> None:
    """Through Kafka a grown file is published whole (the collector lands whole
    versions); unchanged files are still skipped by their fingerprint, and what is
    collected equals a direct ingest of the same files."""
    tag = uuid.uuid4().hex[:8]
    creds = broker.credentials
    assert creds is not None, "the default broker authenticates"
    settings = Settings(
        home=grown.tmp / "kafka",
        transport="kafka",
        progress=False,
        kafka=KafkaSettings(
            bootstrap_servers=broker.bootstrap_servers,
            security_protocol=broker.security_protocol,
            sasl_mechanism=creds.mechanism,
            sasl_username=creds.username,
            sasl_password=creds.password,
            ssl_cafile=broker.ca_file,
            topic=f"test.bars.{tag}",
            dead_letter_topic=f"test.dlq.{tag}",
            consumer_group=f"test-collector-{tag}",
            timeout_s=20.0,
        ),
    )
    first = pipeline.ingest(settings, KaggleSource(grown.data))
    assert first.kafka is not None and first.kafka["rows"] == first.rows
    pipeline.collect(settings)
    grown.append(0)
    res = pipeline.ingest(settings, KaggleSource(grown.data))
    assert {u["read"] for u in res.units} == {"whole"}
    assert res.units_ingested == len(grown.held)
    assert res.kafka is not None and res.kafka["rows"] == res.rows
    lines = sum(len(p.read_bytes().splitlines()) - 1 for p in grown.held)
    assert res.rows == lines, "every line of every grown file, published whole"
    got = pipeline.collect(settings)
    assert got.stats.rows == res.rows
    assert_equals_fresh_ingest(settings.home, grown.data, grown.tmp)
    again = pipeline.ingest(settings, KaggleSource(grown.data))
    assert again.units_skipped == len(grown.held) and again.kafka is not None
    assert again.kafka["messages"] == 0
