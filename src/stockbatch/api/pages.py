"""The dashboard: server-rendered pages (Jinja2) that draw their charts with plotly.js,
served from the installed ``plotly`` package (no CDN: works offline).

Routing only: what a page shows comes from :mod:`stockbatch.api.page_data` (the same
query functions as the API); charts fetch their data from the API with the session
cookie, in ``stockbatch/web/static/*.js`` (no inline script, so a Content-Security-Policy can forbid
them). Every form carries the session's CSRF token; filters are GET forms.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from stockbatch import __version__
from stockbatch.api import accounts, page_data, status
from stockbatch.api.accounts import LoginRefused, Principal
from stockbatch.api.errors import ApiError
from stockbatch.api.formats import check_symbol
from stockbatch.api.observe import audit_event
from stockbatch.api.security import Access, check_csrf, csrf_token, ctx_of
from stockbatch.schema import REASON_CODES
from stockbatch.web import STATIC_DIR, TEMPLATES_DIR

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
templates.env.filters["ticks"] = page_data.ticks
templates.env.filters["num"] = lambda v, digits=2: _num(v, digits)
router = APIRouter(include_in_schema=False)

Public = Annotated[Principal | None, Depends(Access(None))]
Viewer = Annotated[Principal, Depends(Access("viewer", page=True))]
Analyst = Annotated[Principal, Depends(Access("analyst", page=True))]
Admin = Annotated[Principal, Depends(Access("admin", page=True))]
Text = Annotated[str | None, Query(max_length=256)]
_QUARTER = re.compile(r"^[0-9]{4}Q[1-4]$")
_RUN_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class PageError(ApiError):
    """An error shown as a dashboard page (404 unknown symbol or run, 400 bad input)."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(status, error)
        self.page = True


def _num(value: Any, digits: int = 2) -> str:
    """A number for a table cell: thousands separators, ``digits`` decimals for
    fractions (none from 100,000 on, as the browser's tables), blank for null."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return "" if value is None else str(value)
    if isinstance(value, float) and value != value:
        return ""
    if (
        isinstance(value, int)
        or abs(value) >= 100_000
        or (value.is_integer() and abs(value) >= 1000)
    ):
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}" if abs(value) >= 1 else f"{value:.4g}"


def plotly_js() -> Path:
    """plotly.min.js of the installed plotly package."""
    import plotly

    return Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"


def mount_static(app: FastAPI) -> None:
    """The dashboard's own CSS/JS under /static."""
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")


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
    client = request.client.host if request.client else ""
    if not check_csrf(request, csrf):
        # Refused before the password is checked, but still a login attempt: recorded.
        await run_in_threadpool(
            audit_event, ctx, username[:128] or "anonymous", "login",
            {"ok": False, "reason": "form expired", "client": client},
        )  # fmt: skip
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


@router.get("/search", response_class=HTMLResponse)
def search(request: Request, who: Viewer, q: Text = None) -> Response:
    """Instrument search: the results list follows the typing (static/search.js)."""
    return render(request, "search.html", who, q=q or "")


@router.get("/symbols/{symbol}", response_class=HTMLResponse)
def symbol(request: Request, who: Viewer, symbol: str) -> Response:
    """One instrument: candlestick, volume, overlays, RSI and MACD (static/symbol.js),
    its quarterly features and downloads. 404 for a symbol the warehouse lacks."""
    try:
        sym = check_symbol(symbol)
    except ApiError as exc:
        raise PageError(400, exc.error) from None
    found = page_data.symbol_page(ctx_of(request), sym)
    if found is None:
        raise PageError(404, f"unknown symbol {sym}: search for it on the search page")
    return render(request, "symbol.html", who, symbol=sym, **found)


@router.get("/quarterly", response_class=HTMLResponse)
def quarterly(request: Request, who: Analyst, quarter: Text = None) -> Response:
    """The quarterly ML table of one quarter across symbols (a bulk read: analyst)."""
    asked = quarter.strip().upper() if quarter else None
    if asked is not None and not _QUARTER.match(asked):
        raise PageError(400, "a quarter is written like 2017Q4")
    found = page_data.quarterly_page(ctx_of(request), asked)
    return render(request, "quarterly.html", who, **found)


@router.get("/quality", response_class=HTMLResponse)
def quality(request: Request, who: Viewer) -> Response:
    """Quarantine counts per reason over runs, health flags of the latest run."""
    return render(request, "quality.html", who, **page_data.quality_page(ctx_of(request)))


@router.get("/quality/quarantine", response_class=HTMLResponse)
def quarantine(
    request: Request,
    who: Admin,
    reason: Text = None,
    symbol: Text = None,
    run_id: Text = None,
    after: Text = None,
) -> Response:
    """Quarantined rows with reason and source file/line (admin), filtered by GET."""
    problems = []
    reason = (reason or "").strip() or None
    if reason is not None and reason not in REASON_CODES:
        problems.append(f"unknown reason {reason[:40]!r}")
        reason = None
    sym = (symbol or "").strip() or None
    if sym is not None:
        try:
            sym = check_symbol(sym)
        except ApiError as exc:
            problems.append(exc.error)
            sym = None
    rid = (run_id or "").strip() or None
    if rid is not None and not _RUN_ID.match(rid):
        problems.append("a run id is letters, digits and _ . : - (see the runs page)")
        rid = None
    cursor = int(after) if after and after.isdigit() and len(after) < 19 else None
    found = page_data.quarantine_page(
        ctx_of(request), reason=reason, symbol=sym, run_id=rid, after=cursor
    )
    return render(request, "quarantine.html", who, problems=problems, after=cursor, **found)


@router.get("/runs", response_class=HTMLResponse)
def runs(request: Request, who: Viewer, before: Text = None) -> Response:
    """Pipeline runs, newest first (``before``: older than that run id)."""
    cursor = before if before and _RUN_ID.match(before) else None
    return render(request, "runs.html", who, **page_data.runs_page(ctx_of(request), cursor))


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run(request: Request, who: Viewer, run_id: str) -> Response:
    """One run with its manifest, structured, and the whole document."""
    found = page_data.run_page(ctx_of(request), run_id) if _RUN_ID.match(run_id) else None
    if found is None:
        raise PageError(404, "unknown run id: the runs page lists them")
    return render(request, "run.html", who, **found)


@router.get("/admin", response_class=HTMLResponse)
def admin(request: Request, who: Admin) -> Response:
    """Users, tokens (never a secret) and the last audit entries (admin)."""
    return render(request, "admin.html", who, **page_data.admin_page(ctx_of(request)))
