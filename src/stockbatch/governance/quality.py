"""The quality history: the counts per reason and health flag of every run, its rates,
and the thresholds (``Settings.quality``) it breached.

Built from run documents: the lake's manifests (``runs/<run_id>.json``, every run ever
made, for ``stockbatch quality``) or the warehouse's ``pipeline_runs`` rows (what the
dashboard reads). Both carry the same ``counts`` mapping, so one function reads both.
A run without counts (a no-op rerun, an ingest-only run: no check ran) has no entry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from stockbatch import runs, schema
from stockbatch.settings import Settings


@dataclass(frozen=True)
class Thresholds:
    """The limits in force: ``Settings.quality``, the quarantine rate falling back to the
    schedule's (the Airflow quality gate's) so both name one limit."""

    max_quarantine_rate: float
    max_reason_rate: Mapping[str, float] = field(default_factory=dict)
    max_health_rate: Mapping[str, float] = field(default_factory=dict)


def thresholds(settings: Settings) -> Thresholds:
    """The effective thresholds of ``settings``. Raises ValueError for a reason code or
    health flag the contract does not know (a typo would otherwise never mark a run)."""
    q = settings.quality
    for what, names, known in (
        ("quality.max_reason_rate", q.max_reason_rate, schema.REASON_CODES),
        ("quality.max_health_rate", q.max_health_rate, schema.HEALTH_FLAGS),
    ):
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise ValueError(f"{what}: unknown {unknown}; known: {', '.join(known)}")
    rate = q.max_quarantine_rate
    return Thresholds(
        max_quarantine_rate=settings.schedule.max_quarantine_rate if rate is None else rate,
        max_reason_rate=dict(q.max_reason_rate),
        max_health_rate=dict(q.max_health_rate),
    )


@dataclass(frozen=True)
class Breach:
    """One threshold a run passed: which (``quarantine_rate``, ``reason:<code>``,
    ``health:<flag>``), the run's value and the limit (both shares of rows in)."""

    threshold: str
    value: float
    limit: float

    def text(self) -> str:
        """``reason:unparseable 2.10% > 1.00%``."""
        return f"{self.threshold} {self.value:.2%} > {self.limit:.2%}"


@dataclass
class RunQuality:
    """One run's line of the history."""

    run_id: str
    started_at: str | None
    command: str | None
    status: str | None
    rows_in: int
    rows_clean: int
    rows_quarantined: int
    reasons: dict[str, int]
    health: dict[str, int]
    breaches: list[Breach] = field(default_factory=list)

    @property
    def quarantine_rate(self) -> float:
        """Quarantined / rows in (0 for an empty run)."""
        return self.rows_quarantined / self.rows_in if self.rows_in else 0.0

    def rate(self, count: int) -> float:
        """``count`` as a share of rows in."""
        return count / self.rows_in if self.rows_in else 0.0

    @property
    def marked(self) -> bool:
        """True when the run passed a threshold."""
        return bool(self.breaches)

    def top_reasons(self, n: int = 3) -> list[tuple[str, int]]:
        """The ``n`` reasons with the most rows (none of zero), most first."""
        found = sorted(((k, v) for k, v in self.reasons.items() if v), key=lambda kv: -kv[1])
        return found[:n]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the rates and the marks."""
        doc = asdict(self)
        doc["quarantine_rate"] = round(self.quarantine_rate, 6)
        doc["reason_rates"] = {k: round(self.rate(v), 6) for k, v in self.reasons.items() if v}
        doc["health_rates"] = {k: round(self.rate(v), 6) for k, v in self.health.items() if v}
        doc["marked"] = self.marked
        doc["breaches"] = [{**asdict(b), "text": b.text()} for b in self.breaches]
        return doc


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _counts(value: Any) -> dict[str, int]:
    return {str(k): _int(v) for k, v in value.items()} if isinstance(value, Mapping) else {}


def _iso(value: Any) -> str | None:
    if isinstance(value, dt.datetime):
        ts = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return ts.astimezone(dt.UTC).isoformat()
    return None if value is None else str(value)


def run_quality(doc: Mapping[str, Any]) -> RunQuality | None:
    """A manifest or ``pipeline_runs`` row as a history line; None without counts."""
    counts = doc.get("counts")
    if not isinstance(counts, Mapping) or "rows_in" not in counts:
        return None
    return RunQuality(
        run_id=str(doc["run_id"]),
        started_at=_iso(doc.get("started_at")),
        command=doc.get("command"),
        status=doc.get("status"),
        rows_in=_int(counts.get("rows_in")),
        rows_clean=_int(counts.get("rows_clean")),
        rows_quarantined=_int(counts.get("rows_quarantined")),
        reasons=_counts(counts.get("reasons")),
        health=_counts(counts.get("health")),
    )


def evaluate(run: RunQuality, limits: Thresholds) -> list[Breach]:
    """The thresholds ``run`` passed (strictly above the limit), quarantine rate first."""
    found = []
    if run.quarantine_rate > limits.max_quarantine_rate:
        found.append(Breach("quarantine_rate", run.quarantine_rate, limits.max_quarantine_rate))
    for kind, counts, limit_of in (
        ("reason", run.reasons, limits.max_reason_rate),
        ("health", run.health, limits.max_health_rate),
    ):
        for name, limit in sorted(limit_of.items()):
            value = run.rate(counts.get(name, 0))
            if value > limit:
                found.append(Breach(f"{kind}:{name}", value, limit))
    return found


def _day(value: str | None) -> dt.date | None:
    try:
        return dt.datetime.fromisoformat(value).date() if value else None
    except ValueError:
        return None


def history(
    docs: Iterable[Mapping[str, Any]], limits: Thresholds, since: dt.date | None = None
) -> list[RunQuality]:
    """Every run of ``docs`` that counted rows (oldest first, as given), started on or
    after ``since`` (UTC day), each with the thresholds it breached."""
    out = []
    for doc in docs:
        run = run_quality(doc)
        if run is None:
            continue
        day = _day(run.started_at)
        if since is not None and day is not None and day < since:
            continue
        run.breaches = evaluate(run, limits)
        out.append(run)
    return out


def lake_history(settings: Settings, since: dt.date | None = None) -> list[RunQuality]:
    """The history of every run manifest of the lake (every run is kept there)."""
    return history(runs.iter_manifests(settings), thresholds(settings), since)


def trend(found: list[RunQuality]) -> dict[str, Any]:
    """What changed over ``found``: the quarantine rate of the first and last run, the
    highest, and how many runs were marked."""
    if not found:
        return {"runs": 0, "marked": 0}
    worst = max(found, key=lambda r: r.quarantine_rate)
    first, last = found[0], found[-1]
    return {
        "runs": len(found),
        "marked": sum(r.marked for r in found),
        "first": {"run_id": first.run_id, "quarantine_rate": round(first.quarantine_rate, 6)},
        "last": {"run_id": last.run_id, "quarantine_rate": round(last.quarantine_rate, 6)},
        "worst": {"run_id": worst.run_id, "quarantine_rate": round(worst.quarantine_rate, 6)},
        "direction": _direction(first.quarantine_rate, last.quarantine_rate),
    }


def _direction(first: float, last: float) -> str:
    # Half a point of relative change either way is noise, not a trend.
    if abs(last - first) <= 0.005 * max(first, last, 1e-12) or first == last:
        return "flat"
    return "worse" if last > first else "better"


def trend_line(found: list[RunQuality]) -> str:
    """The trend in one line: ``3 runs: quarantine rate 0.05% -> 14.29% (worse), 1 marked``."""
    t = trend(found)
    if not t["runs"]:
        return "no run counted rows in this period"
    first, last = t["first"]["quarantine_rate"], t["last"]["quarantine_rate"]
    runs_word = "run" if t["runs"] == 1 else "runs"
    return (
        f"{t['runs']} {runs_word}: quarantine rate {first:.2%} -> {last:.2%} ({t['direction']}), "
        f"worst {t['worst']['quarantine_rate']:.2%} ({t['worst']['run_id']}); "
        f"{t['marked']} marked"
    )
