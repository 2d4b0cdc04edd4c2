"""The data catalog over HTTP: ``GET /api/v1/catalog`` (JSON, the content of
``stockbatch catalog --json``) and the dashboard page ``/catalog``.

Both read :func:`stockbatch.governance.catalog.build_catalog` with the app's own reader
engine and search backend (no new connection per request); viewers and above may read
it, as the other read endpoints. The audit middleware records each call.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel

from stockbatch.api import pages
from stockbatch.api.accounts import Principal
from stockbatch.api.context import ApiContext
from stockbatch.api.errors import ERROR_RESPONSES, ApiError
from stockbatch.api.security import Access, ctx_of
from stockbatch.governance.catalog import KINDS, Catalog, build_catalog

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)
page_router = APIRouter(include_in_schema=False)

Viewer = Annotated[Principal, Depends(Access("viewer"))]
ViewerPage = Annotated[Principal, Depends(Access("viewer", page=True))]
DatasetName = Annotated[
    str | None,
    Query(max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$", description="Only this dataset."),
]


class ColumnOut(BaseModel):
    """One column of a dataset."""

    name: str
    type: str
    description: str


class ChecksumOut(BaseModel):
    """A checksum the pipeline recorded, and what it covers."""

    value: str
    covers: str


class DatasetOut(BaseModel):
    """One dataset of the catalog."""

    name: str
    kind: str
    description: str
    location: str
    owner: str
    team: str
    upstream: list[str]
    columns: list[ColumnOut]
    status: str
    rows: int | None
    files: int | None
    newest_date: str | None
    written_at: str | None
    last_run: str | None
    checksum: ChecksumOut | None
    note: str | None


class CatalogOut(BaseModel):
    """Every dataset of the home the server serves."""

    generated_at: str
    home: str
    seconds: float
    count: int
    datasets: list[DatasetOut]


def read_catalog(ctx: ApiContext) -> Catalog:
    """The catalog, reusing the app's reader engine and search backend."""
    connect = ctx.search_client if ctx.search_kind != "sql" else None
    return build_catalog(ctx.settings, engine=ctx.reader, search_connect=connect)


@router.get("/catalog", response_model=CatalogOut, tags=["operations"])
def catalog(request: Request, who: Viewer, dataset: DatasetName = None) -> Any:
    """Every dataset (lake, warehouse, search, snapshots): columns with descriptions,
    owner, upstream, last run, freshness, rows and checksum (``stockbatch catalog --json``)."""
    cat = read_catalog(ctx_of(request))
    if dataset is not None:
        found = cat.get(dataset)
        if found is None:
            raise ApiError(404, f"unknown dataset {dataset!r}: GET /api/v1/catalog lists them")
        cat.datasets = [found]
    request.state.rows = len(cat.datasets)
    return cat.to_dict()


@page_router.get("/catalog", response_class=HTMLResponse)
def catalog_page(request: Request, who: ViewerPage) -> Response:
    """The data catalog: one row per dataset, its columns and lineage on demand."""
    cat = read_catalog(ctx_of(request))
    groups = [(kind, [d for d in cat.datasets if d.kind == kind]) for kind in KINDS]
    return pages.render(
        request,
        "catalog.html",
        who,
        catalog=cat,
        groups=[(k, ds) for k, ds in groups if ds],
        names={d.name for d in cat.datasets},
    )
