"""Errors of the API: one JSON shape for every 4xx/5xx (``ErrorOut``) that says what to
fix, and the handlers that make it. A database or search failure becomes a 503 with
the reason, never a 500 with a traceback."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from stockbatch.api.accounts import mask_tokens
from stockbatch.errors import PipelineError
from stockbatch.settings import mask_secrets

log = logging.getLogger("stockbatch.api")


class ErrorItem(BaseModel):
    """One invalid parameter."""

    loc: list[str | int] = Field(description="Where: e.g. ['query', 'start'].")
    msg: str = Field(description="What is wrong with it.")


class ErrorOut(BaseModel):
    """Every error answer of the API."""

    error: str = Field(description="What went wrong and what to do about it.")
    detail: list[ErrorItem] = Field(default_factory=list, description="Invalid parameters.")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in (
        (400, "Bad parameters (the error says which and how to fix them)."),
        (401, "No or invalid credentials: send `Authorization: Bearer <token>`."),
        (403, "The caller's role is too low for this request."),
        (404, "No such symbol, run or page."),
        (422, "A parameter has the wrong type or format."),
        (503, "The warehouse or search node cannot be reached."),
    )
}
"""Declared on every API route, so the OpenAPI schema documents every answer."""


class ApiError(Exception):
    """An error answer: ``status`` and a message that says what to fix."""

    def __init__(self, status: int, error: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.headers = headers


class NotAuthenticated(ApiError):
    """No valid credentials (401); a dashboard page redirects to the login instead."""

    def __init__(self, error: str, page: bool = False) -> None:
        super().__init__(401, error, {"WWW-Authenticate": "Bearer"})
        self.page = page


class Forbidden(ApiError):
    """The role is too low (403)."""

    def __init__(self, error: str, page: bool = False) -> None:
        super().__init__(403, error)
        self.page = page


def _masked(text: str) -> str:
    # Errors echo what was asked (a symbol, a run id), which may be a misplaced secret.
    return mask_tokens(mask_secrets(text))


def error_response(status: int, error: str, headers: dict[str, str] | None = None) -> Response:
    body = ErrorOut(error=_masked(error)).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    page_hook = getattr(request.app.state, "page_error", None)
    if getattr(exc, "page", False) and page_hook is not None:
        return page_hook(request, exc)
    return error_response(exc.status, exc.error, exc.headers)


async def on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    items = [
        ErrorItem(
            loc=[str(x) if not isinstance(x, int) else x for x in e.get("loc", ())],
            msg=_masked(str(e.get("msg", "invalid"))),
        )
        for e in exc.errors()
    ]
    names = ", ".join(str(i.loc[-1]) for i in items if i.loc) or "the request"
    body = ErrorOut(error=f"invalid {names}: see detail", detail=items).model_dump()
    return JSONResponse(body, status_code=422)


async def on_backend_error(request: Request, exc: Exception) -> Response:
    """Warehouse / search unreachable or empty: 503 with the one-line reason."""
    log.warning("backend error on %s: %s", _masked(request.url.path), _masked(str(exc)))
    return error_response(503, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    """A bug: logged with its traceback on the server, a short 500 to the client."""
    log.exception("unexpected error on %s", _masked(request.url.path))
    return error_response(500, "internal error: the server log has the details")


BACKEND_ERRORS: tuple[type[Exception], ...] = (PipelineError,)
