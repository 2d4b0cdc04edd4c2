"""The run record: one status rule, a manifest for every run (failed ones too)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from stockbatch import runs
from stockbatch.results import CollectResult, IngestResult, LoadResult, ProcessResult, RunResult
from stockbatch.settings import Settings


class _Stats:
    """The two fields of bus CollectStats the status rule reads."""

    def __init__(self, dead: int) -> None:
        self.messages = 1
        self.dead_lettered = dead

    def to_dict(self) -> dict[str, int]:
        return {"messages": self.messages, "dead_lettered": self.dead_lettered}


def _run(**stages: object) -> RunResult:
    return RunResult(run_id="r", **stages)  # type: ignore[arg-type]


def test_a_clean_run_succeeds() -> None:
    ok = _run(ingest=IngestResult("r", "kaggle"), load=LoadResult("r"))
    assert runs.status_of(ok) == runs.SUCCEEDED
    assert runs.EXIT_CODES[runs.SUCCEEDED] == 0


@pytest.mark.parametrize(
    "stages",
    [
        {"ingest": IngestResult("r", "kaggle", rejected=[{"ref": "x", "error": "bad"}])},
        {"collect": CollectResult("r", _Stats(dead=2))},
        {"load": LoadResult("r", search={"stale": True, "reason": "down"})},
    ],
    ids=["rejected input", "dead-lettered record", "stale search index"],
)
def test_what_needs_attention_is_partial(stages: dict[str, object]) -> None:
    # One word for every such case (the search case used to be "degraded" for `load`
    # and "partial" for `run`).
    assert runs.status_of(_run(**stages)) == runs.PARTIAL
    assert runs.EXIT_CODES[runs.PARTIAL] == 3


def test_an_error_fails_whatever_else_happened() -> None:
    run = _run(ingest=IngestResult("r", "kaggle", rejected=[{"ref": "x", "error": "bad"}]))
    run.error = "boom"
    assert runs.status_of(run) == runs.FAILED
    assert runs.EXIT_CODES[runs.FAILED] == 1


def test_a_failing_stage_still_leaves_a_manifest(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    recording = runs.recording(settings, "process", params={"as_of": "2020-01-01"})
    with pytest.raises(RuntimeError, match="disk on fire"), recording as rec:
        raise RuntimeError("disk on fire")
    doc = runs.read_manifest(settings, rec.run_id)
    assert (doc["status"], doc["command"], doc["error"]) == ("failed", "process", "disk on fire")
    assert doc["params"] == {"as_of": "2020-01-01"}
    assert rec.status == runs.FAILED and rec.manifest_path is not None


def test_a_recorded_run_carries_its_stages(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    counts = {"rows_in": 3, "rows_clean": 2, "rows_quarantined": 1, "rows_deduplicated": 0}
    with runs.recording(settings, "process") as rec:
        rec.process = ProcessResult(
            run_id=rec.run_id,
            skipped=False,
            fingerprint="f",
            counts=counts,
            as_of=dt.date(2020, 1, 1),
        )
    [doc] = runs.last_manifests(settings, 5)
    assert doc["status"] == "succeeded" and doc["counts"] == counts
    summary = runs.run_summary(doc)
    assert (summary["rows_in"], summary["rows_clean"], summary["rows_quarantined"]) == (3, 2, 1)


@pytest.mark.parametrize(
    "stages",
    [
        {},
        {"ingest": IngestResult("r", "kaggle", rejected=[{"ref": "x", "error": "bad"}])},
        {"collect": CollectResult("r", _Stats(dead=2))},
        {"load": LoadResult("r", search={"stale": True, "reason": "down"})},
        {"load": LoadResult("r", search={"stale": False})},
    ],
)
def test_the_manifest_rule_is_the_same_rule(tmp_path: Path, stages: dict[str, object]) -> None:
    # A run recorded by several processes is judged from its manifest: same answer.
    settings = Settings(home=tmp_path)
    run = _run(**stages)
    doc = runs.manifest_of(settings, run)
    assert runs.status_of_manifest(doc) == runs.status_of(run)
    run.error = "boom"
    assert runs.status_of_manifest(runs.manifest_of(settings, run)) == runs.FAILED


def test_stages_of_separate_processes_make_one_manifest(tmp_path: Path) -> None:
    from stockbatch.warehouse import db, queries

    settings = Settings(home=tmp_path)
    db.migrate(db.resolve_urls(settings).owner)
    rid = "20260101T000000000Z-abcdef"
    with runs.stage_recording(settings, rid, "dag:x", params={"airflow_run_id": "a"}) as rec:
        rec.ingest = IngestResult(rid, "kaggle", rows=5)
    assert runs.read_manifest(settings, rid)["status"] == runs.PENDING
    # Another run in between does not call a pending run interrupted.
    with runs.recording(settings, "process"):
        pass
    assert runs.read_manifest(settings, rid)["status"] == runs.PENDING
    with runs.stage_recording(settings, rid, "dag:x") as rec:
        rec.load = LoadResult(rid, tables={"daily_bars": {"inserted": 5}})
    with runs.stage_recording(settings, rid, "dag:x") as rec:
        rec.load = LoadResult(rid, warehouse_skipped=True, search={"stale": True})
    with (
        pytest.raises(RuntimeError, match="gate says no"),
        runs.stage_recording(settings, rid, "dag:x", final=True),
    ):
        raise RuntimeError("gate says no")
    doc = runs.read_manifest(settings, rid)
    assert (doc["status"], doc["error"]) == (runs.FAILED, "gate says no")
    # A retry of the last stage starts it again, and the one rule decides.
    with runs.stage_recording(settings, rid, "dag:x", final=True) as rec:
        pass
    doc = runs.read_manifest(settings, rid)
    assert "error" not in doc and doc["status"] == runs.PARTIAL == rec.status  # stale index
    assert doc["ingest"]["rows"] == 5 and doc["params"] == {"airflow_run_id": "a"}
    # The search-only stage kept what the warehouse stage loaded.
    assert doc["load"]["tables"] == {"daily_bars": {"inserted": 5}}
    assert doc["load"]["search"] == {"stale": True}
    # And the warehouse's run row, as for a CLI run that loaded.
    engine = db.engine_for(db.resolve_urls(settings).reader)
    try:
        assert queries.run(engine, rid)["status"] == runs.PARTIAL  # type: ignore[index]
    finally:
        engine.dispose()
