"""Data endpoints: instruments, daily bars + features, the quarterly ML table.

Handlers parse and check parameters, then call ``warehouse.queries`` / ``search.queries``
(no SQL here). Downloads (``format=csv|parquet``) hold the same rows and values as
``stockbatch export``; JSON is paged with a cursor.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import pyarrow as pa
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from stockbatch import export, schema
from stockbatch.api import schemas
from stockbatch.api.accounts import Principal
from stockbatch.api.context import ApiContext
from stockbatch.api.errors import ERROR_RESPONSES, ApiError
from stockbatch.api.formats import (
    check_symbol,
    cursor_date,
    decode_cursor,
    download,
    encode_cursor,
    json_page,
    parse_columns,
    parse_symbols,
)
from stockbatch.api.security import Access, ctx_of, require
from stockbatch.lake.layout import layout
from stockbatch.settings import Settings
from stockbatch.warehouse import queries

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

Viewer = Annotated[Principal, Depends(Access("viewer"))]
Format = Annotated[
    Literal["json", "csv", "parquet"],
    Query(description="`json` (paged), or a streamed `csv` / `parquet` file (every row)."),
]
Limit = Annotated[
    int | None,
    Query(ge=1, le=1_000_000, description="Rows per JSON page (default and cap: settings)."),
]
Cursor = Annotated[
    str | None, Query(max_length=512, description="`next_cursor` of the previous page.")
]
Symbols = Annotated[
    str | None,
    Query(
        max_length=20_000,
        description="Comma-separated symbols (at most `api.max_symbols`); omitted: every "
        "symbol (analyst role).",
    ),
]
QUARTER = r"^[0-9]{4}Q[1-4]$"
FILES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A JSON page, or with `format=csv|parquet` the whole file.",
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
"""The download formats, documented beside the JSON page (their content types)."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _page_size(request: Request, limit: int | None) -> int:
    api = ctx_of(request).settings.api
    if limit is None:
        return api.page_rows
    if limit > api.max_page_rows:
        raise ApiError(
            400, f"limit {limit:,} is over {api.max_page_rows:,}: page with cursor, or use "
            "format=parquet for every row in one file",
        )  # fmt: skip
    return limit


def _known(request: Request, symbols: list[str]) -> None:
    missing = sorted(set(symbols) - queries.known_symbols(ctx_of(request).reader, symbols))
    if missing:
        shown = ", ".join(missing[:10]) + (
            f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        )
        raise ApiError(404, f"unknown symbols: {shown} (search with /api/v1/instruments?q=)")


_LINEAGE: dict[tuple[Any, ...], dict[str, str]] = {}
_LINEAGE_LOCK = threading.Lock()


def _lineage(settings: Settings, *, labels: bool) -> dict[str, str]:
    """``export.lineage``, read again only when the process stage's record changed.

    That record (``gold/_state.json``) is large (0.5 MB on the Huge sample): parsing it
    for every download took a sixth of the server's CPU under load. The process stage
    replaces it atomically, so its inode, size and mtime tell a new one.
    """
    path = layout(settings).process_state
    try:
        st = path.stat()
        stamp: tuple[int, ...] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
    except FileNotFoundError:
        stamp = None
    key = (str(path), labels, stamp)
    with _LINEAGE_LOCK:
        found = _LINEAGE.get(key)
    if found is None:
        found = export.lineage(settings, labels=labels)
        with _LINEAGE_LOCK:
            if len(_LINEAGE) > 16:
                _LINEAGE.clear()
            _LINEAGE[key] = found
    return dict(found)


def _rows(request: Request, n: int) -> None:
    request.state.rows = getattr(request.state, "rows", 0) + n


def _bulk(who: Principal, symbols: list[str] | None, what: str) -> None:
    """Many symbols or all of them is a bulk download: the analyst role."""
    if symbols is None or len(symbols) > 1:
        require(who, "analyst", why=f"{what} of several or all symbols")


def _search_instruments(ctx: ApiContext, text: str, limit: int) -> tuple[pa.Table, str]:
    """Instruments matching ``text`` and what answered: the search engine when
    configured and reachable, else the warehouse's SQL search (same columns, same
    ranking rules)."""
    if ctx.search_kind != "sql":
        from stockbatch.search import SearchError
        from stockbatch.search import queries as search_queries

        try:
            hits = search_queries.search_instruments(
                ctx.search_client(), text, limit, prefix=ctx.settings.search.index_prefix
            )
        except SearchError as exc:
            # A search node down (or not loaded yet) makes search plainer, not broken:
            # /readyz and the overview say why.
            log.warning("instrument search answered from SQL: %s", exc)
        else:
            table = pa.Table.from_pylist(
                [{k: h.get(k) for k in schema.INSTRUMENTS.names} for h in hits],
                schema=schema.INSTRUMENTS,
            )
            return table, ctx.search_kind
    return queries.instruments(ctx.reader, search=text, limit=limit), "sql"


@router.get("/instruments", response_model=schemas.InstrumentsPage, tags=["data"])
def instruments(
    request: Request,
    who: Viewer,
    q: Annotated[
        str | None,
        Query(
            max_length=256,
            description="Search: symbol prefix (exact symbol first), words of the name, "
            "fuzzy name (a typo or two).",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1_000, description="Most instruments returned.")] = 20,
    cursor: Cursor = None,
) -> Response:
    """Search instruments (autocomplete), or list them by symbol (paged)."""
    ctx = ctx_of(request)
    text = _CONTROL.sub(" ", q or "").strip()
    if text:
        table, answered = _search_instruments(ctx, text, limit)
        _rows(request, table.num_rows)
        return json_page(table.select(_INSTRUMENT_COLS), None, search=answered)
    after = decode_cursor(cursor, 1)[0] if cursor else None
    table = queries.instruments(
        ctx.reader, limit=limit, after=None if after is None else str(after)
    )
    _rows(request, table.num_rows)
    nxt = encode_cursor(table["symbol"][-1].as_py()) if table.num_rows == limit else None
    return json_page(table.select(_INSTRUMENT_COLS), nxt, search="sql")


_INSTRUMENT_COLS = list(schemas.Instrument.model_fields)


@router.get("/instruments/{symbol}", response_model=schemas.InstrumentDetail, tags=["data"])
def instrument(
    request: Request,
    who: Viewer,
    symbol: Annotated[str, Path(max_length=64, description="Ticker, e.g. AAPL.")],
) -> Any:
    """One instrument and the span of its data."""
    sym = check_symbol(symbol)
    found = queries.instrument(ctx_of(request).reader, sym)
    if found is None:
        raise ApiError(404, f"unknown symbol {sym} (search with /api/v1/instruments?q=)")
    _rows(request, 1)
    return found


@router.get("/daily", response_model=schemas.DailyPage, responses=FILES, tags=["data"])
def daily(
    request: Request,
    who: Viewer,
    symbols: Symbols = None,
    start: Annotated[dt.date | None, Query(description="First trade date (YYYY-MM-DD).")] = None,
    end: Annotated[dt.date | None, Query(description="Last trade date (YYYY-MM-DD).")] = None,
    columns: Annotated[
        str | None,
        Query(max_length=2_000, description="Comma-separated columns (the key always comes)."),
    ] = None,
    format: Format = "json",
    limit: Limit = None,
    cursor: Cursor = None,
) -> Response:
    """Daily bars and daily features (FEATURES.md section 2), by symbol and date.

    One symbol: viewer; several or all: analyst. The file formats hold the same rows
    and values as `stockbatch export daily`.
    """
    ctx = ctx_of(request)
    syms = parse_symbols(symbols, ctx.settings.api.max_symbols)
    _bulk(who, syms, "daily rows")
    if start is not None and end is not None and start > end:
        raise ApiError(400, f"start {start} is after end {end}")
    cols = parse_columns(columns, schema.DAILY_FEATURES, ("symbol", "trade_date"))
    if syms is not None:
        _known(request, syms)
    if format != "json":

        def batches() -> Iterator[pa.Table]:
            if syms is not None and len(syms) == 1:
                # One symbol is at most ~15,000 rows (60 years): one plain query is cheaper
                # than a server-side cursor's DECLARE / FETCH / CLOSE round trips.
                one = queries.daily_page(ctx.reader, syms, start=start, end=end, limit=10**9)
                yield one.select(cols)
                return
            for t in queries.daily_table(ctx.reader, syms, start=start, end=end):
                yield t.select(cols)

        name = "daily" if syms is None else "daily-" + "-".join(syms[:3])
        return download(
            batches(),
            _select(schema.DAILY_FEATURES, cols),
            format,
            name,
            _lineage(ctx.settings, labels=False),
            lambda n: _rows(request, n),
        )
    size = _page_size(request, limit)
    after = None
    if cursor:
        sym, day = decode_cursor(cursor, 2)
        after = (str(sym), cursor_date(day))
    table = queries.daily_page(ctx.reader, syms, start=start, end=end, after=after, limit=size)
    _rows(request, table.num_rows)
    nxt = None
    if table.num_rows == size:
        nxt = encode_cursor(table["symbol"][-1].as_py(), table["trade_date"][-1].as_py())
    return json_page(table.select(cols), nxt)


def _select(arrow: pa.Schema, cols: list[str]) -> pa.Schema:
    return pa.schema([arrow.field(c) for c in cols], metadata=arrow.metadata)


@router.get("/quarterly", response_model=schemas.QuarterlyPage, responses=FILES, tags=["data"])
def quarterly(
    request: Request,
    who: Viewer,
    symbols: Symbols = None,
    from_: Annotated[
        str | None, Query(alias="from", pattern=QUARTER, description="First quarter, e.g. 2019Q1.")
    ] = None,
    to: Annotated[
        str | None, Query(pattern=QUARTER, description="Last quarter, e.g. 2024Q4.")
    ] = None,
    as_of: Annotated[
        dt.date | None,
        Query(
            description="Point in time: only rows with available_at <= as_of, and "
            "label_next_q_return null where the next quarter was not available yet."
        ),
    ] = None,
    format: Format = "json",
    limit: Limit = None,
    cursor: Cursor = None,
) -> Response:
    """The quarterly ML table (FEATURES.md section 3), by symbol and quarter.

    One symbol: viewer; several or all: analyst. The file formats hold the same rows
    and values as `stockbatch export quarterly` (`--as-of` for `as_of`).
    """
    ctx = ctx_of(request)
    syms = parse_symbols(symbols, ctx.settings.api.max_symbols)
    _bulk(who, syms, "the quarterly table")
    if from_ is not None and to is not None and from_ > to:
        raise ApiError(400, f"from {from_} is after to {to}")
    if syms is not None:
        _known(request, syms)
    if format != "json":
        table = queries.quarterly_table(ctx.reader, symbols=syms, first=from_, last=to, as_of=as_of)
        meta = _lineage(ctx.settings, labels=True)
        if as_of is not None:
            meta["stockbatch.point_in_time"] = as_of.isoformat()
        return download(
            [table],
            schema.QUARTERLY_FEATURES,
            format,
            "quarterly",
            meta,
            lambda n: _rows(request, n),
        )
    size = _page_size(request, limit)
    after = None
    if cursor:
        sym, q = decode_cursor(cursor, 2)
        if not re.match(QUARTER, str(q)):
            raise ApiError(400, "invalid cursor: pass the next_cursor unchanged")
        after = (str(sym), str(q))
    table = queries.quarterly_table(
        ctx.reader, symbols=syms, first=from_, last=to, as_of=as_of, after=after, limit=size
    )
    _rows(request, table.num_rows)
    nxt = None
    if table.num_rows == size:
        nxt = encode_cursor(table["symbol"][-1].as_py(), table["quarter"][-1].as_py())
    return json_page(table, nxt)


@router.get("/quarters", response_model=schemas.Quarters, tags=["data"])
def quarters(request: Request, who: Viewer) -> Any:
    """The quarters the quarterly table holds, newest first."""
    found = queries.quarters(ctx_of(request).reader)
    _rows(request, len(found))
    return {"quarters": found}
