"""The incremental planner: what an update must recompute, or why it must rebuild in full.

Per symbol with new bronze rows, the planner decides *append* (every new row is
dated after everything seen for the symbol and comes from its winning source)
or *rebuild its bucket* (late history, a changed line, a new winning source,
a ``future_date`` row the new as-of date makes valid). Anything the state
cannot vouch for makes a full rebuild. The rules and why they are exact:
docs/design/process.md.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from stockbatch import lake, quality, schema
from stockbatch.process.state import (
    DATE,
    SYMBOL,
    config_fingerprint,
    read_symbols,
    snapshot,
    unit_key,
    units_record,
)
from stockbatch.settings import Settings


@dataclass
class Plan:
    """What an update must do, or why it cannot be incremental (``full_reason``)."""

    full_reason: str | None = None
    fresh: pl.DataFrame = field(default_factory=pl.DataFrame)
    """New bronze rows of the symbols that are appended to."""
    rebuild: set[int] = field(default_factory=set)
    """Buckets to validate and compute again in full."""

    @property
    def append_buckets(self) -> list[int]:
        """The buckets with rows to append, in order."""
        if not self.fresh.height:
            return []
        return sorted({int(b) for b in self.fresh["bucket"].unique().to_list()})


@dataclass
class UnitChanges:
    """How the active bronze units differ from the ones the last run processed."""

    new_lines: list[dict[str, Any]] = field(default_factory=list)
    """``{source_file, ingest_run_id, from}``: rows from line ``from`` on are new."""
    changed: list[tuple[str, str]] = field(default_factory=list)
    """``(ref, batch)`` of units whose new version is not an append (lines changed)."""

    def __bool__(self) -> bool:
        return bool(self.new_lines or self.changed)


def plan_update(
    settings: Settings,
    state: dict[str, Any],
    active: pl.DataFrame,
    parts: pl.DataFrame,
    as_of: dt.date,
    bronze_files: list[Path],
) -> Plan:
    """Decide what an update recomputes (``active``: the active bronze units, ``parts``:
    their landed parts; ``state``: the last run's record)."""
    reason = full_rebuild_reason(settings, state, active, as_of)
    if reason is not None:
        return Plan(full_reason=reason)
    changes = unit_changes(state["units"], active, parts)
    rows = read_new_rows(settings, state, bronze_files, changes)
    plan = decide(rows, {ref for ref, _ in changes.changed}, read_symbols(settings), as_of)
    # A changed file rebuilds the buckets its earlier versions fed too: its new version may
    # hold fewer symbols, or no row at all (cut to its header), and those must leave gold.
    before = _buckets_of_files(bronze_files, [ref for ref, _ in changes.changed])
    if before - plan.rebuild:
        rebuild = plan.rebuild | before
        return Plan(
            fresh=plan.fresh.filter(~pl.col("bucket").is_in(list(rebuild))), rebuild=rebuild
        )
    return plan


def _buckets_of_files(bronze_files: list[Path], refs: list[str]) -> set[int]:
    """Every bucket that any landed version of the source files ``refs`` has rows in."""
    if not refs or not bronze_files:
        return set()
    found = (
        pl.scan_parquet(bronze_files)
        .filter(pl.col("source_file").is_in(refs))
        .select("bucket")
        .unique()
        .collect()
    )
    return {int(b) for b in found["bucket"].to_list()}


def full_rebuild_reason(
    settings: Settings, state: dict[str, Any], active: pl.DataFrame, as_of: dt.date
) -> str | None:
    """Why the state cannot vouch for an update (None: it can)."""
    if not state.get("incremental"):
        return "no incremental state yet"
    if state.get("config") != config_fingerprint(settings):
        # States written before the key existed were all written under contract v1.
        before = state.get("feature_set_version", 1)
        if before != schema.FEATURE_SET_VERSION:
            return f"feature set version {before} -> {schema.FEATURE_SET_VERSION}"
        return "settings or code version changed"
    if as_of < dt.date.fromisoformat(state["as_of"]):
        return "the as-of date moved back"
    if snapshot(settings) != state.get("files"):
        return "lake files changed since the last process run"
    if not lake.layout(settings).symbols.exists():
        return "no symbol state"
    current = units_record(active)
    if any(k not in current for k in state["units"]):
        return "a processed unit is no longer in the catalog"
    return None


def unit_changes(
    done: dict[str, list[str]], active: pl.DataFrame, parts: pl.DataFrame
) -> UnitChanges:
    """Compare the active units with ``done`` (the state's ``units``: key -> [sha256, batch]).

    A unit never processed is new from its first line; a version that extends the
    processed one (directly, or through a chain of appended parts) is new from its
    first new line; the same content landed again is nothing new; anything else
    changed lines of the unit.
    """
    chains: dict[str, list[dict[str, Any]]] = {}
    for r in parts.iter_rows(named=True):
        chains.setdefault(unit_key(r["source"], r["ref"]), []).append(r)
    out = UnitChanges()
    for r in active.iter_rows(named=True):
        key = unit_key(r["source"], r["ref"])
        before = done.get(key)
        if before == [r["sha256"], r["batch"]]:
            continue
        chain = chains.get(key, [r])
        if before is None:
            start = 0  # a unit never processed: every part is new
        else:
            at = [i for i, e in enumerate(chain) if [e["sha256"], e["batch"]] == before]
            if at:
                start = at[0] + 1  # the versions appended since the processed one
            elif r["extends"] == before[0] and r["first_new_line"] is not None:
                chain, start = [r], 0  # landed whole, but known to extend the processed one
            elif before[0] == r["sha256"]:
                continue  # the same content landed again (e.g. --force): nothing new
            else:
                out.changed.append((r["ref"], r["batch"]))
                continue
        for e in chain[start:]:
            first = e["first_new_line"] if (before is not None and not e["delta"]) else None
            out.new_lines.append(
                {"source_file": e["ref"], "ingest_run_id": e["batch"], "from": first or 0}
            )
    return out


def read_new_rows(
    settings: Settings, state: dict[str, Any], bronze_files: list[Path], changes: UnitChanges
) -> pl.DataFrame:
    """The bronze rows ``changes`` names, read from the files the last run did not see
    (every row of a changed unit; the new lines of the others)."""
    known_files = set(state.get("bronze_files", []))
    layout = lake.layout(settings)
    new_files = [p for p in bronze_files if layout.relative(p) not in known_files]
    if not (changes and new_files):
        return pl.DataFrame(schema=lake.polars_schema(schema.BRONZE_BARS))
    keys = pl.DataFrame(
        changes.new_lines
        + [{"source_file": r, "ingest_run_id": b, "from": 0} for r, b in changes.changed],
        schema={"source_file": pl.String, "ingest_run_id": pl.String, "from": pl.Int64},
    )
    return (
        pl.scan_parquet(new_files)
        .join(keys.lazy(), on=["source_file", "ingest_run_id"], how="inner")
        .filter(pl.col("line_no") >= pl.col("from"))
        .drop("from")
        .collect()
    )


def decide(
    rows: pl.DataFrame, changed_refs: set[str], symbols: pl.DataFrame, as_of: dt.date
) -> Plan:
    """Which buckets to rebuild and which new rows to append.

    ``rows``: the new bronze rows (with ``bucket``); ``changed_refs``: source files
    whose lines changed; ``symbols``: the symbol state. A bucket is rebuilt when it
    holds a changed file's rows, a symbol whose oldest ``future_date`` row is no
    longer after ``as_of``, or a symbol with a new row that is not dated after
    everything seen for it or not from its winning source. The other buckets'
    new rows are appended.
    """
    is_changed = pl.col("source_file").is_in(list(changed_refs))
    rebuild: set[Any] = set(rows.filter(is_changed)["bucket"].unique().to_list())
    fresh = rows.filter(~is_changed)
    # A future_date row that the new as-of date makes valid: revalidate its bucket.
    rebuild.update(symbols.filter(pl.col("future_min") <= as_of)["bucket"].to_list())
    if fresh.height:
        rebuild.update(_not_appendable(fresh, symbols)["bucket"].to_list())
    buckets = {int(b) for b in rebuild}
    return Plan(fresh=fresh.filter(~pl.col("bucket").is_in(list(buckets))), rebuild=buckets)


def _not_appendable(fresh: pl.DataFrame, symbols: pl.DataFrame) -> pl.DataFrame:
    """(symbol, bucket) of the new rows that an append would not validate as a rebuild does."""
    per = (
        fresh.select(
            SYMBOL,
            "bucket",
            "source",
            pl.col(DATE).str.to_date(quality.DATE_FORMAT, strict=False).alias("__d"),
        )
        .join(symbols.select(SYMBOL, "winner", "last_seen"), on=SYMBOL, how="left")
        .group_by(SYMBOL, "bucket")
        .agg(
            # Dated after everything seen, and from the symbol's winning source.
            (pl.col("last_seen").is_null() | (pl.col("__d") > pl.col("last_seen")))
            .fill_null(True)  # an unparseable date is quarantined whatever came before
            .all()
            .alias("after"),
            (pl.col("winner").is_null() | (pl.col("source") == pl.col("winner")))
            .all()
            .alias("same_source"),
        )
    )
    return per.filter(~(pl.col("after") & pl.col("same_source")))
