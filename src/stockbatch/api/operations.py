"""Operator endpoints: runs, quality, quarantine, audit log, users and tokens, the
caller, health, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from stockbatch.api import page_data, schemas
from stockbatch.api.accounts import Principal
from stockbatch.api.errors import ERROR_RESPONSES, ApiError
from stockbatch.api.formats import check_symbol, decode_cursor, encode_cursor
from stockbatch.api.security import Access, ctx_of
from stockbatch.api.status import readiness
from stockbatch.schema import REASON_CODES
from stockbatch.warehouse import access, queries

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)
probes = APIRouter()

Viewer = Annotated[Principal, Depends(Access("viewer"))]
Admin = Annotated[Principal, Depends(Access("admin"))]
RunId = Annotated[
    str | None,
    Query(max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$", description="A run id."),
]
Cursor = Annotated[
    str | None, Query(max_length=512, description="`next_cursor` of the previous page.")
]


def _rows(request: Request, n: int) -> None:
    request.state.rows = n


@router.get("/runs", response_model=schemas.RunsPage, tags=["operations"])
def runs(
    request: Request,
    who: Viewer,
    limit: Annotated[int, Query(ge=1, le=500, description="Runs per page.")] = 20,
    cursor: Cursor = None,
) -> Any:
    """Pipeline runs, newest first, with their counts and quality metrics."""
    before = str(decode_cursor(cursor, 1)[0]) if cursor else None
    found = queries.runs(ctx_of(request).reader, last=limit, before=before)
    _rows(request, len(found))
    nxt = encode_cursor(found[-1]["run_id"]) if len(found) == limit else None
    return {"items": found, "next_cursor": nxt}


@router.get("/runs/{run_id}", response_model=schemas.RunDetail, tags=["operations"])
def run(
    request: Request,
    who: Viewer,
    run_id: Annotated[str, Path(max_length=64, description="A run id (GET /api/v1/runs).")],
) -> Any:
    """One run with its manifest: inputs, counts per reason, checksums, versions."""
    found = queries.run(ctx_of(request).reader, run_id)
    if found is None:
        raise ApiError(404, "unknown run id: list the runs with GET /api/v1/runs")
    _rows(request, 1)
    return found


def _count(value: float | None) -> int | None:
    # The metrics table stores every metric as a float; row counts are whole numbers.
    return None if value is None else round(value)


def _split(metrics: dict[str, float], kind: str) -> dict[str, int]:
    """Counts of one kind (``reasons.duplicate`` -> ``{"duplicate": n}``)."""
    return {k.split(".", 1)[1]: round(v) for k, v in metrics.items() if k.startswith(kind + ".")}


@router.get("/quality", response_model=schemas.Quality, tags=["operations"])
def quality(request: Request, who: Viewer, run_id: RunId = None) -> Any:
    """Counts per reason code and health flag of a run (default: the newest with counts)."""
    engine = ctx_of(request).reader
    rid = run_id or queries.last_run_id(engine, with_quality=True)
    found = queries.run(engine, rid) if rid else None
    if run_id is not None and found is None:
        raise ApiError(404, "unknown run id: list the runs with GET /api/v1/runs")
    metrics: dict[str, float] = found["quality"] if found else {}
    _rows(request, len(metrics))
    return {
        "run_id": rid,
        "rows_in": _count(metrics.get("rows_in")),
        "rows_clean": _count(metrics.get("rows_clean")),
        "rows_quarantined": _count(metrics.get("rows_quarantined")),
        "reasons": _split(metrics, "reasons"),
        "health": _split(metrics, "health"),
        "metrics": metrics,
    }


@router.get("/quality/history", response_model=schemas.QualityHistory, tags=["operations"])
def quality_history(
    request: Request,
    who: Viewer,
    limit: Annotated[int, Query(ge=1, le=500, description="Most recent runs.")] = 30,
) -> Any:
    """Reason and health counts of the last runs that recorded them, oldest first, each
    with its quarantine rate and the thresholds (``Settings.quality``) it passed."""
    rows = queries.runs(ctx_of(request).reader, last=limit)
    found = [r for r in rows if r["quality"]]
    _rows(request, len(found))
    marks = {m.run_id: m for m in page_data.quality_history_of(ctx_of(request), rows)["history"]}
    out = []
    for r in reversed(found):
        mark = marks.get(r["run_id"])
        out.append(
            {
                "run_id": r["run_id"],
                "started_at": r["started_at"],
                "status": r["status"],
                "reasons": _split(r["quality"], "reasons"),
                "health": _split(r["quality"], "health"),
                "quarantine_rate": mark.quarantine_rate if mark else None,
                "marked": bool(mark and mark.marked),
                "breaches": [b.text() for b in mark.breaches] if mark else [],
            }
        )
    return {"runs": out}


@router.get("/quarantine", response_model=schemas.QuarantinePage, tags=["operations"])
def quarantine(
    request: Request,
    who: Admin,
    run_id: RunId = None,
    reason: Annotated[
        str | None, Query(max_length=64, description="A reason code (docs/data.md).")
    ] = None,
    symbol: Annotated[str | None, Query(max_length=64, description="One symbol.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Rows per page.")] = 100,
    cursor: Cursor = None,
) -> Any:
    """Refused rows with their reasons and source file/line (admin)."""
    if reason is not None and reason not in REASON_CODES:
        raise ApiError(400, f"unknown reason {reason[:40]!r}: use one of {', '.join(REASON_CODES)}")
    sym = check_symbol(symbol) if symbol is not None else None
    after = decode_cursor(cursor, 1)[0] if cursor else None
    if after is not None and not isinstance(after, int):
        raise ApiError(400, "invalid cursor: pass the next_cursor unchanged")
    engine = ctx_of(request).reader
    flt = {"run_id": run_id, "reason": reason, "symbol": sym}
    found = queries.quarantine_rows(engine, **flt, limit=limit, after_id=after)
    counts = dict(queries.quarantine_counts(engine, "reason", **flt))
    _rows(request, len(found))
    nxt = encode_cursor(found[-1]["id"]) if len(found) == limit else None
    return {"items": found, "counts": counts, "next_cursor": nxt}


@router.get("/audit", response_model=schemas.AuditPage, tags=["admin"])
def audit(
    request: Request,
    who: Admin,
    actor: Annotated[str | None, Query(max_length=128, description="Only this user.")] = None,
    limit: Annotated[int, Query(ge=1, le=5_000, description="Entries per page.")] = 100,
    cursor: Cursor = None,
) -> Any:
    """The audit log, newest first (admin)."""
    before = decode_cursor(cursor, 1)[0] if cursor else None
    if before is not None and not isinstance(before, int):
        raise ApiError(400, "invalid cursor: pass the next_cursor unchanged")
    found = access.audit_rows(ctx_of(request).auth, limit=limit, before_id=before, actor=actor)
    _rows(request, len(found))
    nxt = encode_cursor(found[-1]["id"]) if len(found) == limit else None
    return {"items": found, "next_cursor": nxt}


@router.get("/users", response_model=list[schemas.UserOut], tags=["admin"])
def users(request: Request, who: Admin) -> Any:
    """Every user, without password hashes (admin; change them with `stockbatch users`)."""
    found = access.users(ctx_of(request).auth)
    _rows(request, len(found))
    return found


@router.get("/tokens", response_model=list[schemas.TokenOut], tags=["admin"])
def tokens(request: Request, who: Admin) -> Any:
    """Every token, never the token itself (admin; `stockbatch tokens`)."""
    found = access.tokens(ctx_of(request).auth)
    _rows(request, len(found))
    return found


@router.get("/me", response_model=schemas.Me, tags=["operations"])
def me(who: Viewer) -> Any:
    """Who the credentials belong to."""
    return {"name": who.name, "role": who.role, "via": who.via}


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request, who: Viewer) -> Any:
    """This API's OpenAPI document."""
    return JSONResponse(request.app.openapi())


@probes.get("/healthz", response_model=schemas.Health, tags=["probes"])
def healthz(who: Annotated[Principal | None, Depends(Access(None))]) -> Any:
    """Liveness: the process answers (public)."""
    return {"status": "ok"}


@probes.get(
    "/readyz",
    response_model=schemas.Ready,
    responses={503: {"model": schemas.Ready, "description": "Not ready."}},
    tags=["probes"],
)
def readyz(request: Request, who: Annotated[Principal | None, Depends(Access(None))]) -> Any:
    """Readiness: warehouse reachable, search state, age of the last successful run
    (public). 503 when the warehouse cannot answer."""
    state = readiness(ctx_of(request))
    body = schemas.Ready.model_validate(state).model_dump(mode="json")
    return JSONResponse(body, status_code=200 if state["ready"] else 503)


class MetricsAccess(Access):
    """Admin, unless ``api.metrics_public``."""

    def __init__(self) -> None:
        super().__init__("admin")

    def __call__(self, request: Request) -> Principal | None:
        if ctx_of(request).settings.api.metrics_public:
            return Access(None)(request)
        return super().__call__(request)


@probes.get(
    "/metrics",
    tags=["probes"],
    response_class=PlainTextResponse,
    responses={
        **ERROR_RESPONSES,
        200: {
            "description": "Prometheus text exposition format.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
    },
)
def metrics(
    request: Request, who: Annotated[Principal | None, Depends(MetricsAccess())]
) -> Response:
    """Prometheus metrics: requests and latency per route, last run, rows per reason
    (admin, or public with STOCKBATCH_API__METRICS_PUBLIC=true)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
