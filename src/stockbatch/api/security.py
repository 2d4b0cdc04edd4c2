"""Who may call what: the ``Access`` dependency every route declares.

A request authenticates with ``Authorization: Bearer <token>`` (API clients) or
the signed dashboard session cookie (the browser; the same cookie also serves the
dashboard's own ``fetch`` calls). ``Access(None)`` marks the few public routes;
``create_app`` refuses a route without an ``Access``, so no route is public by
omission. Forms carry a CSRF token bound to the session.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import Request
from fastapi.routing import APIRoute

from stockbatch.api import accounts
from stockbatch.api.accounts import Principal
from stockbatch.api.context import ApiContext
from stockbatch.api.errors import Forbidden, NotAuthenticated


def ctx_of(request: Request) -> ApiContext:
    """The app's shared context."""
    ctx: ApiContext = request.app.state.ctx
    return ctx


def authenticate(request: Request) -> Principal | None:
    """The caller, or None without credentials; bad credentials raise 401."""
    ctx = ctx_of(request)
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthenticated("use `Authorization: Bearer <token>` (stockbatch tokens create)")
        found = accounts.from_token(ctx.auth, token.strip())
        if isinstance(found, str):
            raise NotAuthenticated(f"invalid token: {found}")
        return found
    name = request.session.get("user") if "session" in request.scope else None
    if not name:
        return None
    found = accounts.from_session(ctx.auth, str(name))
    if isinstance(found, str):
        request.session.clear()
        return None
    return found


class Access:
    """Route dependency: the lowest role that may call the route (None: public).

    ``page``: a dashboard page, which redirects to the login instead of a JSON 401.
    """

    def __init__(self, role: str | None, *, page: bool = False) -> None:
        if role is not None and role not in accounts.ROLES:
            raise ValueError(f"unknown role {role!r}")
        self.role = role
        self.page = page

    def __call__(self, request: Request) -> Principal | None:
        if self.role is None:
            # Public routes still know a logged-in caller (the audit log names them).
            try:
                request.state.principal = authenticate(request)
            except NotAuthenticated:
                request.state.principal = None
            return request.state.principal
        who = authenticate(request)
        request.state.principal = who
        if who is None:
            raise NotAuthenticated(
                "authentication required: send `Authorization: Bearer <token>` "
                "(stockbatch tokens create NAME) or log in on the dashboard",
                page=self.page,
            )
        require(who, self.role, page=self.page)
        return who


def require(who: Principal, role: str, *, page: bool = False, why: str = "") -> None:
    """403 unless ``who`` has at least ``role``."""
    if not who.allows(role):
        raise Forbidden(
            f"{who.name} is a {who.role}; {why or 'this'} needs the {role} role", page=page
        )


def access_of(route: APIRoute) -> Access | None:
    """The ``Access`` a route declared, or None."""
    for dep in route.dependant.dependencies:
        if isinstance(dep.call, Access):
            return dep.call
    return None


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use), for a hidden form field."""
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return str(token)


def check_csrf(request: Request, sent: str | None) -> bool:
    """Whether a form's CSRF field matches its session's token."""
    expected = request.session.get("csrf")
    return bool(expected and sent and hmac.compare_digest(str(expected), str(sent)))
