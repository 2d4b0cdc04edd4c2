"""The dashboard: server-rendered pages (Jinja2) that draw their charts with plotly.js,
served from the installed ``plotly`` package (no CDN: works offline).

Pages read through the same query functions as the API; charts fetch their data
from the API with the session cookie. Every form carries the session's CSRF token.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from stockbatch import __version__
from stockbatch.api import accounts, status
from stockbatch.api.accounts import LoginRefused, Principal
from stockbatch.api.errors import ApiError
from stockbatch.api.observe import audit_event
from stockbatch.api.security import Access, check_csrf, csrf_token, ctx_of

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False)

Public = Annotated[Principal | None, Depends(Access(None))]
Viewer = Annotated[Principal, Depends(Access("viewer", page=True))]
Admin = Annotated[Principal, Depends(Access("admin", page=True))]


def plotly_js() -> Path:
    """plotly.min.js of the installed plotly package."""
    import plotly

    return Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"


def mount_static(app: FastAPI) -> None:
    """The dashboard's own CSS/JS under /static."""
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")


@router.get("/vendor/plotly.min.js")
def plotly_asset(who: Public) -> Response:
    """plotly.js from the installed package (public: a static asset)."""
    return FileResponse(
        plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"}
    )


def render(request: Request, name: str, who: Principal | None, **context: Any) -> HTMLResponse:
    """A page of the dashboard, with the navigation and the session's CSRF token."""
    return templates.TemplateResponse(
        request,
        name,
        {"who": who, "csrf": csrf_token(request), "version": __version__, **context},
    )


def page_error(request: Request, exc: ApiError) -> Response:
    """401 on a page: to the login; 403: an explanation page."""
    if exc.status == 401:
        target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        return RedirectResponse(f"/login?next={target}", status_code=303)
    who = getattr(request.state, "principal", None)
    page = render(request, "error.html", who, status=exc.status, message=exc.error)
    page.status_code = exc.status
    return page


def _safe_next(target: str | None) -> str:
    # Only a path of this site: never an open redirect to another host.
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, who: Public, next: str | None = None) -> Response:
    """The login form."""
    return render(request, "login.html", who, next=_safe_next(next), error=None)


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    who: Public,
    username: Annotated[str, Form(max_length=128)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/",
) -> Response:
    """Check a password; failures are slowed down, then lock the account for a while."""
    ctx = ctx_of(request)
    api = ctx.settings.api
    request.state.audited = True  # audited here, with the outcome
    target = _safe_next(next)
    if not check_csrf(request, csrf):
        page = render(
            request, "login.html", None, next=target, error="The form expired: try again."
        )
        page.status_code = 400
        return page
    started = time.perf_counter()
    result = await run_in_threadpool(
        accounts.login,
        ctx.auth,
        username,
        password,
        lock_after=api.login_lock_after,
        lock_minutes=api.login_lock_minutes,
    )
    client = request.client.host if request.client else ""
    if isinstance(result, LoginRefused):
        # Slow every failure (and more after each one in a row): guessing gets expensive.
        await asyncio.sleep(min(0.5 * 2 ** min(result.failures, 4), 5.0))
        await run_in_threadpool(
            audit_event, ctx, username[:128] or "anonymous", "login",
            {"ok": False, "reason": result.reason, "client": client,
             "ms": round((time.perf_counter() - started) * 1000, 1)},
        )  # fmt: skip
        if result.reason == "locked":
            minutes = max(1, round((result.retry_after or 60) / 60))
            message = f"Too many failed logins: this account is locked for about {minutes} min."
        else:
            message = "Wrong user name or password."
        page = render(request, "login.html", None, next=target, error=message)
        page.status_code = 401
        return page
    request.session.clear()  # a fresh session (and CSRF token) at every login
    request.session["user"] = result.name
    csrf_token(request)
    await run_in_threadpool(
        audit_event, ctx, result.name, "login", {"ok": True, "client": client, "via": "password"}
    )
    return RedirectResponse(target, status_code=303)


@router.post("/logout")
def logout(
    request: Request, who: Viewer, csrf: Annotated[str, Form(max_length=128)] = ""
) -> Response:
    """End the session."""
    if not check_csrf(request, csrf):
        raise ApiError(400, "the form expired: reload the page and try again")
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, who: Viewer) -> Response:
    """Last runs, freshness per source, warnings."""
    return render(request, "overview.html", who, **status.overview(ctx_of(request)))
