"""The FastAPI application of ``stockbatch serve``: the REST API under ``/api/v1``,
the dashboard under ``/``, probes and metrics at the root."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Mount

from stockbatch import __version__
from stockbatch.api import catalog, data, errors, operations, pages
from stockbatch.api.context import ApiContext, session_secret
from stockbatch.api.observe import AuditAndMetrics, Metrics
from stockbatch.api.security import access_of
from stockbatch.errors import PipelineError
from stockbatch.settings import Settings

SESSION_COOKIE = "stockbatch_session"

DESCRIPTION = """\
Daily bars, daily features and the quarterly ML table of stockbatch, with the
runs, quality counts and quarantine behind them.

Authenticate with `Authorization: Bearer <token>` (`stockbatch tokens create NAME`).
Roles: **viewer** (instruments, one symbol's series, runs, quality), **analyst**
(+ several or all symbols: bulk downloads), **admin** (+ quarantine, audit log,
users and tokens). Lists are paged: pass `next_cursor` back as `cursor`.
`format=csv|parquet` streams every row as a file, the same as `stockbatch export`.
"""


def create_app(settings: Settings, ctx: ApiContext | None = None) -> FastAPI:
    """The application; ``ctx`` defaults to :meth:`ApiContext.open` on ``settings``."""
    ctx = ctx or ApiContext.open(settings)
    app = FastAPI(
        title="stockbatch API",
        version=__version__,
        description=DESCRIPTION,
        openapi_url=None,  # served by operations.openapi, behind authentication
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = ctx
    app.state.metrics = Metrics(ctx)
    app.include_router(operations.probes)
    app.include_router(data.router)
    app.include_router(operations.router)
    app.include_router(pages.router)
    app.include_router(catalog.router)
    app.include_router(catalog.page_router)
    pages.mount_static(app)
    app.state.page_error = pages.page_error
    app.add_exception_handler(errors.ApiError, errors.on_api_error)
    app.add_exception_handler(RequestValidationError, errors.on_validation_error)
    for exc in (PipelineError, sa.exc.OperationalError, sa.exc.InterfaceError, _search_error()):
        app.add_exception_handler(exc, errors.on_backend_error)
    app.add_exception_handler(Exception, errors.on_unexpected)
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret(settings),
        session_cookie=SESSION_COOKIE,
        max_age=int(settings.api.session_hours * 3600),
        same_site="strict",
        https_only=settings.api.tls,
    )
    app.add_middleware(AuditAndMetrics, ctx=ctx, metrics=app.state.metrics)
    check_routes(app)
    app.openapi_schema = None
    _quiet_access_log()
    return app


def _search_error() -> type[Exception]:
    from stockbatch.search.client import SearchError

    return SearchError


def check_routes(app: FastAPI) -> None:
    """Refuse to build an app with a route that did not declare who may call it."""
    for route in app.routes:
        if isinstance(route, APIRoute) and access_of(route) is None:
            raise RuntimeError(f"route {route.path} has no Access(...) dependency")
        if isinstance(route, Mount) and route.path != "/static":
            raise RuntimeError(f"mount {route.path} is not the static assets")


def _quiet_access_log() -> None:
    # uvicorn's access log prints full URLs; the audit log is the record of requests.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
