"""What each task of the DAGs does: plain functions, no Airflow import (the DAG files
in ``dags/`` wrap them, and tests call them directly).

A DAG run is one stockbatch run: :func:`begin` gives it a run id and a ``pending``
manifest, then every stage task calls the same stage function as ``stockbatch run``
inside :func:`stockbatch.runs.stage_recording`, which merges its sections into that
one manifest; the quality gate is the final stage and decides the status with the
same rule as the CLI. Each task is idempotent for its data interval: the stages
skip what they already did (unchanged inputs, gold, warehouse rows), so a retry or
a rerun of the same interval changes nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from stockbatch import runs
from stockbatch.errors import PipelineError
from stockbatch.governance import quality
from stockbatch.results import new_run_id
from stockbatch.settings import Settings
from stockbatch.sources.base import Source

DAILY_DAG = "stockbatch_daily"
QUARTERLY_DAG = "stockbatch_quarterly"
DAILY_ASSET = "stockbatch://gold/daily"
QUARTERLY_ASSET = "stockbatch://gold/quarterly"


class GateFailed(PipelineError):
    """The quality gate refused a run (the counts are in the message)."""


@dataclass(frozen=True)
class DailyConf:
    """What one daily DAG run ingests: the schedule settings, overridden by the run's conf
    (``source``, ``path``, ``symbols``)."""

    source: str
    path: str | None
    symbols: tuple[str, ...]

    @classmethod
    def of(cls, settings: Settings, conf: dict[str, Any] | None) -> DailyConf:
        """The settings' schedule with ``conf``'s keys on top (unknown keys refused)."""
        conf = dict(conf or {})
        unknown = sorted(set(conf) - {"source", "path", "symbols"})
        if unknown:
            raise PipelineError(
                f"unknown conf keys {unknown}: a daily run takes source, path, symbols"
            )
        sched = settings.schedule
        symbols = conf.get("symbols", sched.symbols)
        if isinstance(symbols, str):
            symbols = [s for s in symbols.split(",") if s.strip()]
        path = conf.get("path", sched.path)
        return cls(
            source=str(conf.get("source", sched.source)),
            path=None if path is None else str(path),
            symbols=tuple(str(s).strip().upper() for s in symbols),
        )

    def open(self, settings: Settings, session: dt.date) -> Source:
        """The source, bounded by the run's session (no bar after it is requested)."""
        if self.source == "kaggle":
            from pathlib import Path

            from stockbatch.sources.kaggle import KaggleSource

            if not self.path or not Path(self.path).is_dir():
                raise PipelineError(
                    f"the daily DAG's kaggle source needs a folder: path={self.path!r} "
                    '(STOCKBATCH_SCHEDULE__PATH, or conf {"path": ...})'
                )
            return KaggleSource(Path(self.path))
        if self.source == "yahoo":
            from stockbatch.lake import bronze
            from stockbatch.sources.yahoo import YahooSource

            if not self.symbols:
                raise PipelineError("the daily DAG's yahoo source needs symbols")
            return YahooSource(
                list(self.symbols),
                start=None,
                end=session,
                last_dates=bronze.last_dates(settings),
                settings=settings.yahoo,
            )
        raise PipelineError(f"unknown source {self.source!r}: kaggle or yahoo")


def is_session(day: dt.date) -> bool:
    """True when ``day`` is an XNYS trading session (holidays and weekends are not)."""
    from stockbatch.calendar import SessionCalendar

    return bool(SessionCalendar.covering(day, day).is_session(day))


CLOSE_UTC_HOUR = 22
"""The daily runs start at 22:00 UTC: after the US close in summer (20:00) and winter (21:00)."""


def session_of(interval_end: dt.datetime | None, run_after: dt.datetime) -> dt.date:
    """The session a daily run covers: the date its data interval ends (UTC). A run
    triggered without a logical date has no interval: it covers the newest session
    closed when it was triggered."""
    if interval_end is not None:
        end = interval_end.astimezone(dt.UTC)
        return dt.date(end.year, end.month, end.day)
    at = run_after.astimezone(dt.UTC)
    day = dt.date(at.year, at.month, at.day)
    if at.hour < CLOSE_UTC_HOUR:
        day -= dt.timedelta(days=1)
    for _ in range(15):  # the longest XNYS closure is far shorter
        if is_session(day):
            return day
        day -= dt.timedelta(days=1)
    raise PipelineError(f"no XNYS session in the 15 days before {at:%Y-%m-%d}")


def begin(settings: Settings, dag_id: str, airflow_run_id: str, params: dict[str, Any]) -> str:
    """Open the DAG run's stockbatch run: a new run id and a ``pending`` manifest that
    names the Airflow run. Returns the run id (the next tasks get it by XCom)."""
    run_id = new_run_id()
    linked = {"dag_id": dag_id, "airflow_run_id": airflow_run_id, **params}
    with runs.stage_recording(settings, run_id, f"dag:{dag_id}", params=linked):
        pass
    return run_id


def ingest(
    settings: Settings, run_id: str, dag_id: str, conf: DailyConf, session: dt.date
) -> dict[str, Any]:
    """The ingest stage (to bronze, or to Kafka with ``transport=kafka``)."""
    from stockbatch.pipeline import ingest as ingest_stage

    source = conf.open(settings, session)
    with runs.stage_recording(settings, run_id, f"dag:{dag_id}") as rec:
        _drop_unfinished_landing(settings, run_id)
        rec.ingest = ingest_stage(settings, source, run_id=run_id)
    return {"summary": rec.ingest.summary(), "rows": rec.ingest.rows}


def _drop_unfinished_landing(settings: Settings, run_id: str) -> None:
    """A retried ingest lands under the same run id: what a killed attempt wrote (its
    catalog entries were never written) goes first, so no orphan part survives."""
    import shutil

    from stockbatch.lake import bronze
    from stockbatch.lake.layout import layout

    batch = layout(settings).bronze_batch(run_id)
    if batch.exists() and run_id not in set(bronze.read_catalog(settings)["batch"].to_list()):
        shutil.rmtree(batch)


def collect(settings: Settings, run_id: str, dag_id: str) -> dict[str, Any]:
    """The collect stage (Kafka to bronze); nothing to do with ``transport=direct``."""
    if settings.transport != "kafka":
        return {"summary": "transport is direct: nothing to collect"}
    from stockbatch.pipeline import collect as collect_stage

    with runs.stage_recording(settings, run_id, f"dag:{dag_id}") as rec:
        rec.collect = collect_stage(settings, run_id=run_id)
    return {"summary": rec.collect.summary()}


def process(settings: Settings, run_id: str, dag_id: str, as_of: dt.date) -> dict[str, Any]:
    """The process stage (incremental; the engine from the settings)."""
    from stockbatch.pipeline import process as process_stage

    with runs.stage_recording(settings, run_id, f"dag:{dag_id}") as rec:
        rec.process = process_stage(settings, run_id=run_id, as_of=as_of)
    return {"summary": rec.process.summary(), "counts": rec.process.counts}


def load_warehouse(settings: Settings, run_id: str, dag_id: str) -> dict[str, Any]:
    """The warehouse load (one transaction); the search index is the next task's."""
    from stockbatch.pipeline.load import load as load_stage

    no_search = settings.model_copy(
        update={"search": settings.search.model_copy(update={"kind": "none"})}
    )
    with runs.stage_recording(settings, run_id, f"dag:{dag_id}") as rec:
        rec.load = load_stage(no_search, run_id=run_id)
    return {"summary": rec.load.summary(), "rows_changed": rec.load.rows_changed}


def sync_search(settings: Settings, run_id: str, dag_id: str) -> dict[str, Any]:
    """The search index sync; an unreachable node leaves the index stale and the run
    partial (as the CLI would call it), caught up by the next run."""
    if settings.search.kind == "none":
        return {"summary": "no search index configured"}
    from stockbatch.pipeline.load import load as load_stage

    with runs.stage_recording(settings, run_id, f"dag:{dag_id}") as rec:
        rec.load = load_stage(settings, run_id=run_id, search_only=True)
    return {"summary": rec.load.summary(), "stale": rec.load.search_stale}


def missing_bars(settings: Settings, session: dt.date, lookback: int = 5) -> tuple[list[str], int]:
    """Symbols that traded in the ``lookback`` sessions before ``session`` but have no
    bar on it (a feed that stopped, a file that was cut), as ``SYMBOL@date``, and how
    many symbols traded in those sessions."""
    import polars as pl

    from stockbatch.calendar import SessionCalendar
    from stockbatch.lake import gold

    files = gold.daily_files(settings)
    if not files:
        return [], 0
    cal = SessionCalendar.covering(session - dt.timedelta(days=lookback * 3 + 10), session)
    earlier = [d for d in cal.sessions.to_list() if d < session][-lookback:]
    if not earlier:
        return [], 0
    window = (
        pl.scan_parquet([str(f) for f in files])
        .filter(pl.col("trade_date").is_between(earlier[0], session))
        .select("symbol", "trade_date")
        .collect()
    )
    active = set(window.filter(pl.col("trade_date") < session)["symbol"].to_list())
    present = set(window.filter(pl.col("trade_date") == session)["symbol"].to_list())
    return [f"{s}@{session.isoformat()}" for s in sorted(active - present)], len(active)


def quality_gate(settings: Settings, run_id: str, dag_id: str, session: dt.date) -> dict[str, Any]:
    """The last stage: fail the run when its quarantine rate or its missing bars pass
    their thresholds (quarantine: the quality history's limit,
    :func:`stockbatch.governance.quality.thresholds`, which is the schedule's unless
    ``quality.max_quarantine_rate`` is set; missing bars: above ``max_missing_rate`` of
    the active symbols and more than ``missing_allowed``), with the counts in the message;
    otherwise decide its status by the one rule (:func:`stockbatch.runs.status_of_manifest`).
    The history's other marks (per reason, per health flag) are recorded, not enforced."""
    doc = runs.read_manifest(settings, run_id)
    counts = doc.get("counts", {})
    rows_in = int(counts.get("rows_in", 0))
    quarantined = int(counts.get("rows_quarantined", 0))
    rate = quarantined / rows_in if rows_in else 0.0
    missing, active = missing_bars(settings, session)
    missing_rate = len(missing) / active if active else 0.0
    sched = settings.schedule
    limits = quality.thresholds(settings)
    run = quality.run_quality(doc)
    marks = [b.text() for b in quality.evaluate(run, limits)] if run is not None else []
    facts = {
        "rows_in": rows_in,
        "rows_quarantined": quarantined,
        "quarantine_rate": round(rate, 6),
        "missing_bars": len(missing),
        "active_symbols": active,
        "missing_rate": round(missing_rate, 6),
        "missing_examples": missing[:10],
        "max_quarantine_rate": limits.max_quarantine_rate,
        "max_missing_rate": sched.max_missing_rate,
        "missing_allowed": sched.missing_allowed,
        "quality_marks": marks,
    }
    with runs.stage_recording(
        settings, run_id, f"dag:{dag_id}", params={"gate": facts}, final=True
    ) as rec:
        problems = []
        if rate > limits.max_quarantine_rate:
            problems.append(
                f"quarantine rate {rate:.2%} ({quarantined:,} of {rows_in:,} rows) is above "
                f"{limits.max_quarantine_rate:.2%}"
            )
        if missing_rate > sched.max_missing_rate and len(missing) > sched.missing_allowed:
            problems.append(
                f"{len(missing)} of {active} active symbols have no bar on {session} "
                f"({missing_rate:.2%}, above {sched.max_missing_rate:.2%}): "
                + ", ".join(missing[:10])
            )
        if problems:
            raise GateFailed("quality gate: " + "; ".join(problems))
    return {**facts, "status": rec.status}


def pick_quarter(settings: Settings, asked: str | None = None) -> str | None:
    """The quarter the quarterly DAG snapshots: ``asked`` (a run's conf), else the newest
    quarter whose last XNYS session the daily gold covers. None (the run is skipped)
    when that quarter is not ready; the reason is logged by the caller."""
    from stockbatch import snapshots
    from stockbatch.lake import gold

    if asked:
        quarter = snapshots.parse_quarter(asked)[0]
    else:
        last = gold.process_state(settings).get("dataset_last_date")
        if not last:
            return None
        day = dt.date.fromisoformat(str(last))
        quarter = f"{day.year}Q{(day.month - 1) // 3 + 1}"
        if day < snapshots.last_session(quarter):  # not covered yet: the one before
            year, q = (day.year, (day.month - 1) // 3) if day.month > 3 else (day.year - 1, 4)
            quarter = f"{year}Q{q}"
    ready = snapshots.quarter_closed(settings, quarter)
    return quarter if ready.ready else None


def quarter_not_ready_reason(settings: Settings, asked: str | None = None) -> str:
    """Why :func:`pick_quarter` found nothing to do (for the task log)."""
    from stockbatch import snapshots
    from stockbatch.lake import gold

    if asked:
        return snapshots.quarter_closed(settings, snapshots.parse_quarter(asked)[0]).reason
    last = gold.process_state(settings).get("dataset_last_date")
    return f"the daily gold reaches {last or 'no date yet'}: no closed quarter is covered"


def snapshot(settings: Settings, dag_id: str, airflow_run_id: str, quarter: str) -> dict[str, Any]:
    """Write the closed quarter's snapshot for the ML application (a new version only
    when the data changed), recorded as one run of the quarterly DAG."""
    from stockbatch import snapshots

    run_id = new_run_id()
    params = {"dag_id": dag_id, "airflow_run_id": airflow_run_id, "quarter": quarter}
    dag = f"dag:{dag_id}"
    with runs.stage_recording(settings, run_id, dag, params=params, final=True, record=True) as rec:
        snap = snapshots.write_snapshot(settings, quarter, run_id=run_id)
        rec.params["snapshot"] = {
            "version": snap.version,
            "new": snap.new,
            "rows": snap.rows,
            "sha256": snap.sha256,
            "path": str(snap.path),
        }
    return {"run_id": run_id, **rec.params["snapshot"], "quarter": quarter}
