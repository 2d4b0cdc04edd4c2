"""Response models of the API: what ``/api/v1/openapi.json`` documents.

The data rows (daily, quarterly) are built from the canonical Arrow schemas with
the data dictionary's one-line descriptions, so the API documents exactly the
columns the pipeline produces (docs/data.md).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, Field, create_model

from stockbatch import schema
from stockbatch.dictionary import describe_columns


def _py_type(t: pa.DataType) -> Any:
    if pa.types.is_date(t):
        return dt.date
    if pa.types.is_floating(t):
        return float
    if pa.types.is_integer(t):
        return int
    if pa.types.is_boolean(t):
        return bool
    return str


def _row_model(name: str, doc: str, arrow: pa.Schema, table: str) -> type[BaseModel]:
    text = describe_columns(table)
    fields: dict[str, Any] = {
        f.name: (_py_type(f.type) | None, Field(None, description=text.get(f.name, f.name)))
        for f in arrow
    }
    return create_model(name, __doc__=doc, **fields)


DailyRow = _row_model(
    "DailyRow",
    "One session of one symbol: the bar and its daily features (FEATURES.md section 2). "
    "With `columns=`, only those columns (and the key) are present.",
    schema.DAILY_FEATURES,
    "daily",
)
QuarterlyRow = _row_model(
    "QuarterlyRow",
    "One quarter of one symbol: the ML table's row (FEATURES.md section 3).",
    schema.QUARTERLY_FEATURES,
    "quarterly",
)

NEXT = Field(None, description="Pass as `cursor=` to get the next page; null on the last page.")


class DailyPage(BaseModel):
    """Daily rows ordered by symbol then trade_date."""

    items: list[DailyRow]  # type: ignore[valid-type]
    next_cursor: str | None = NEXT


class QuarterlyPage(BaseModel):
    """Quarterly rows ordered by symbol then quarter."""

    items: list[QuarterlyRow]  # type: ignore[valid-type]
    next_cursor: str | None = NEXT


class Instrument(BaseModel):
    """An instrument the warehouse holds."""

    symbol: str = Field(description="Ticker, Yahoo spelling (BRK-B).")
    name: str | None = Field(None, description="Company or fund name, where a source gave it.")
    exchange: str | None = Field(None, description="Listing exchange, where known.")
    is_etf: bool | None = Field(None, description="An exchange-traded fund, where known.")
    source: str | None = Field(None, description="The source its daily bars come from.")


class InstrumentsPage(BaseModel):
    """Instruments: best match first with `q`, else by symbol."""

    items: list[Instrument]
    next_cursor: str | None = NEXT
    search: str = Field(
        description="What answered: `opensearch`, `elasticsearch`, or `sql` (the warehouse: "
        "no node configured, "
        "or the node unreachable / not loaded)."
    )


class InstrumentDetail(Instrument):
    """An instrument with the span of its data."""

    first_date: dt.date | None = Field(None, description="First stored trade date.")
    last_date: dt.date | None = Field(None, description="Last stored trade date.")
    bars: int = Field(description="Daily bars stored.")
    quarters: int = Field(description="Quarterly rows stored.")


class Quarters(BaseModel):
    """The quarters of the quarterly table."""

    quarters: list[str] = Field(description="Newest first, e.g. 2017Q4.")


class RunSummary(BaseModel):
    """One pipeline run as recorded in the warehouse."""

    run_id: str = Field(description="UTC timestamp + random suffix; sorts by time.")
    command: str | None = Field(None, description="run, ingest, collect, process or load.")
    status: str | None = Field(None, description="succeeded, partial or failed.")
    started_at: dt.datetime | None = Field(None, description="UTC.")
    finished_at: dt.datetime | None = Field(None, description="UTC.")
    duration_s: float | None = Field(None, description="Seconds.")
    rows_in: int | None = Field(None, description="Rows the process stage read.")
    rows_clean: int | None = Field(None, description="Rows in silver.")
    rows_quarantined: int | None = Field(None, description="Rows refused with a reason.")
    rows_deduplicated: int | None = Field(None, description="Identical repeats collapsed.")
    params: dict[str, Any] | None = Field(None, description="The run's parameters.")
    counts: dict[str, Any] | None = Field(None, description="Counts per reason and flag.")
    quality: dict[str, float] = Field(
        default_factory=dict, description="Quality metrics recorded for the run."
    )


class RunsPage(BaseModel):
    """Runs, newest first."""

    items: list[RunSummary]
    next_cursor: str | None = NEXT


class RunDetail(RunSummary):
    """One run with its whole manifest."""

    manifest: dict[str, Any] | None = Field(
        None, description="Inputs, counts per reason, checksums, versions, settings (masked)."
    )


class Quality(BaseModel):
    """Quality counts of one run."""

    run_id: str | None = Field(None, description="The run (default: the newest with counts).")
    rows_in: int | None = Field(None, description="Rows the process stage read.")
    rows_clean: int | None = Field(None, description="Rows kept.")
    rows_quarantined: int | None = Field(None, description="Rows refused.")
    reasons: dict[str, int] = Field(description="Refused rows per reason code.")
    health: dict[str, int] = Field(description="Kept rows per health flag.")
    metrics: dict[str, float] = Field(description="Every recorded metric of the run.")


class QualityRun(BaseModel):
    """Reason counts of one run."""

    run_id: str
    started_at: dt.datetime | None = None
    status: str | None = None
    reasons: dict[str, int]
    health: dict[str, int]
    quarantine_rate: float | None = Field(
        None, description="Quarantined / input rows of the run (None: no row counts)."
    )
    marked: bool = Field(
        False, description="True when the run passed a threshold of the quality settings."
    )
    breaches: list[str] = Field(
        default_factory=list, description="The thresholds it passed, one sentence each."
    )


class QualityHistory(BaseModel):
    """Reason counts over the last runs, oldest first (the dashboard's chart)."""

    runs: list[QualityRun]


class QuarantineRow(BaseModel):
    """A refused row, exactly as it arrived, with why and where from."""

    id: int = Field(description="Storage id (the cursor).")
    symbol: str | None = None
    trade_date: str | None = Field(None, description="As arrived (text).")
    open: str | None = None
    high: str | None = None
    low: str | None = None
    close: str | None = None
    adj_close: str | None = None
    volume: str | None = None
    reasons: str = Field(description="Comma-joined reason codes (docs/data.md).")
    source: str | None = None
    source_file: str | None = Field(None, description="File (or Yahoo request) it came from.")
    line_no: int | None = Field(None, description="1-based line in that file.")
    raw_line: str | None = Field(None, description="The line verbatim when its arity was wrong.")
    run_id: str = Field(description="The process run that refused it.")
    ingest_run_id: str | None = Field(None, description="The landing that brought it.")


class QuarantinePage(BaseModel):
    """Refused rows in storage order."""

    items: list[QuarantineRow]
    counts: dict[str, int] = Field(description="Rows per reason under the same filter.")
    next_cursor: str | None = NEXT


class AuditEntry(BaseModel):
    """One audit log entry."""

    id: int
    at: dt.datetime = Field(description="UTC.")
    actor: str = Field(description="User, or `anonymous`.")
    action: str = Field(description="`GET /api/v1/daily`, `login`, a pipeline command...")
    detail: dict[str, Any] | None = Field(
        None, description="Parameters, rows returned, status, duration, client."
    )


class AuditPage(BaseModel):
    """Audit entries, newest first."""

    items: list[AuditEntry]
    next_cursor: str | None = NEXT


class UserOut(BaseModel):
    """A user (never its password hash)."""

    name: str
    role: str
    enabled: bool
    created_at: dt.datetime
    failed_logins: int
    locked_until: dt.datetime | None = None
    tokens: int = Field(description="Tokens not revoked.")


class TokenOut(BaseModel):
    """A bearer token (never the token itself)."""

    id: int
    user: str
    role: str
    created_at: dt.datetime
    expires_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    last_used_at: dt.datetime | None = None


class Me(BaseModel):
    """The caller."""

    name: str
    role: str
    via: str = Field(description="`token` or `session`.")


class Health(BaseModel):
    """Liveness: the process answers."""

    status: str = Field(description="Always `ok`.")


class Ready(BaseModel):
    """Readiness: can the service answer with data, and how fresh is it."""

    ready: bool = Field(description="The warehouse answers and holds loaded data.")
    warehouse: dict[str, Any] = Field(description="`ok`, `error`, row counts.")
    search: dict[str, Any] = Field(
        description="`kind` (opensearch, elasticsearch or sql), `state` (ok, stale, "
        "unavailable), reason."
    )
    last_success: dict[str, Any] | None = Field(
        None, description="The newest succeeded run: `run_id`, `finished_at`, `age_hours`."
    )
