"""``stockbatch serve`` (the API and dashboard), ``stockbatch users`` and ``stockbatch tokens``.

``serve --tls`` (or ``api.tls``) speaks HTTPS with ``api.cert_file``/``api.key_file``,
else with a certificate the home's CA issues (``$STOCKBATCH_HOME/services/tls/api.pem``;
clients verify with ``ca.pem`` there). Passwords never come from an option: ``users
add``/``passwd`` read a hidden prompt or ``--password-stdin``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stockbatch.cli.common import HomeOpt, WarehouseOpt, app, cli_settings, fail, guard, out
from stockbatch.settings import Settings

if TYPE_CHECKING:
    import sqlalchemy as sa

users_app = typer.Typer(help="Dashboard and API users (roles: viewer, analyst, admin).")
tokens_app = typer.Typer(help="Bearer tokens of the API (shown once, stored hashed).")
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option("--host", help="Address (env STOCKBATCH_API__HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="Port (env STOCKBATCH_API__PORT).")
    ] = None,
    home: HomeOpt = None,
    warehouse: WarehouseOpt = None,
    search: Annotated[
        str | None,
        typer.Option(
            "--search", help="none | opensearch | elasticsearch (env STOCKBATCH_SEARCH__KIND)."
        ),
    ] = None,
    tls: Annotated[
        bool | None,
        typer.Option(
            "--tls/--no-tls",
            help="HTTPS with api.cert_file/key_file, else a certificate from the home's CA "
            "(env STOCKBATCH_API__TLS).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the REST API (/api/v1) and the dashboard (/) until Ctrl-C.

    Reads the configured warehouse (the reader role on PostgreSQL) and search node.
    Log in with a user from `stockbatch users add`; API clients send a token from
    `stockbatch tokens create`.
    """
    import uvicorn

    s = cli_settings(home, warehouse=warehouse, search=search, quiet=True)
    if host is not None:
        s.api.host = host
    if port is not None:
        s.api.port = port
    if tls is not None:
        s.api.tls = tls  # before the app is built: its session cookies get Secure
    cert, key = _tls_files(s) if s.api.tls else (None, None)

    def build() -> object:
        from stockbatch.api.app import create_app

        return create_app(s)

    application = guard(build)
    scheme = "https" if s.api.tls else "http"
    out.print(
        f"serving the dashboard at {scheme}://{s.api.host}:{s.api.port}/ and the API at "
        f"/api/v1 (OpenAPI: /api/v1/openapi.json); Ctrl-C stops"
    )
    uvicorn.run(
        application,
        host=s.api.host,
        port=s.api.port,
        log_level="warning",
        ssl_certfile=cert,
        ssl_keyfile=key,
    )


def _tls_files(s: Settings) -> tuple[str, str]:
    """uvicorn's ``ssl_certfile`` and ``ssl_keyfile``: the configured pair, else one issued by
    the home's CA for loopback (and ``api.host`` when it names one address)."""
    api = s.api
    if (api.cert_file is None) != (api.key_file is None):
        fail(
            "api.cert_file and api.key_file go together (STOCKBATCH_API__CERT_FILE, "
            "STOCKBATCH_API__KEY_FILE): set both, or neither for a certificate from the "
            "home's CA",
            code=2,
        )
    if api.cert_file is not None and api.key_file is not None:
        return str(api.cert_file), str(api.key_file)
    from stockbatch.services import tls

    hosts = list(tls.DEFAULT_HOSTS)
    if api.host not in ("0.0.0.0", "::", "", *hosts):  # a wildcard is no name to certify
        hosts.append(api.host)
    issued = guard(lambda: tls.issue(s.home, "api", hosts))
    out.print(f"TLS: certificate {issued.cert_file}; clients verify it with {issued.ca_file}")
    return str(issued.cert_file), str(issued.key_file)


def _auth(s: Settings) -> sa.Engine:
    from stockbatch.api.context import auth_engine

    engine: sa.Engine = guard(lambda: auth_engine(s))
    return engine


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="User name (letters, digits, _ . @ -).")],
    role: Annotated[str, typer.Option("--role", help="viewer | analyst | admin.")] = "viewer",
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password from standard input."),
    ] = False,
    home: HomeOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Add a user. The password comes from stdin (--password-stdin) or a prompt;
    without either (not a terminal) the user can only use tokens."""
    from stockbatch.api import accounts

    s = cli_settings(home, warehouse=warehouse, quiet=True)
    password = _read_password(password_stdin)
    engine = _auth(s)
    guard(lambda: accounts.create_user(engine, name, role, password))
    how = "a password" if password else "no password (tokens only)"
    out.print(f"added user {name} ({role}) with {how}")


def _read_password(password_stdin: bool) -> str | None:
    """From stdin (--password-stdin), a hidden prompt on a terminal, else None."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            fail("--password-stdin: standard input was empty", code=2)
        return password
    if sys.stdin.isatty():
        return str(typer.prompt("password", hide_input=True, confirmation_prompt=True))
    return None


@users_app.command("passwd")
def users_passwd(
    name: Annotated[str, typer.Argument(help="User name.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    home: HomeOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Set a user's password (also lifts a lock after failed logins)."""
    from stockbatch.api import accounts

    s = cli_settings(home, warehouse=warehouse, quiet=True)
    password = _read_password(password_stdin)
    if password is None:
        fail("give the password with --password-stdin (or run on a terminal)", code=2)
    new = str(password)
    engine = _auth(s)
    guard(lambda: accounts.set_password(engine, name, new))
    out.print(f"set the password of {name}")


@users_app.command("list")
def users_list(home: HomeOpt = None, warehouse: WarehouseOpt = None) -> None:
    """List users (never their password hashes)."""
    from rich.table import Table

    from stockbatch.warehouse import access

    s = cli_settings(home, warehouse=warehouse, quiet=True)
    engine = _auth(s)
    rows = guard(lambda: access.users(engine))
    if not rows:
        out.print("no users: add one with `stockbatch users add NAME --role viewer`")
        return
    t = Table("name", "role", "enabled", "created", "failed logins", "locked until", "tokens")
    for r in rows:
        t.add_row(
            r["name"], r["role"], "yes" if r["enabled"] else "no",
            f"{r['created_at']:%Y-%m-%d %H:%M}", str(r["failed_logins"]),
            "" if r["locked_until"] is None else f"{r['locked_until']:%Y-%m-%d %H:%M}",
            str(r["tokens"]),
        )  # fmt: skip
    out.print(t)


def _set_enabled(name: str, enabled: bool, home: Path | None, warehouse: str | None) -> None:
    from stockbatch.warehouse import access

    s = cli_settings(home, warehouse=warehouse, quiet=True)
    engine = _auth(s)
    if not guard(lambda: access.set_enabled(engine, name, enabled)):
        fail(f"no user {name!r} (see `stockbatch users list`)")
    out.print(f"{'enabled' if enabled else 'disabled'} user {name}")


@users_app.command("disable")
def users_disable(
    name: Annotated[str, typer.Argument(help="User name.")],
    home: HomeOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Disable a user: its sessions and tokens stop working at the next request."""
    _set_enabled(name, False, home, warehouse)


@users_app.command("enable")
def users_enable(
    name: Annotated[str, typer.Argument(help="User name.")],
    home: HomeOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Enable a disabled user again."""
    _set_enabled(name, True, home, warehouse)


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(help="The user the token acts as.")],
    expires_days: Annotated[
        float | None, typer.Option("--expires-days", help="Valid for N days (default: no end).")
    ] = None,
    home: HomeOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Create a bearer token and print it once (only its hash is kept)."""
    from stockbatch.api import accounts

    s = cli_settings(home, warehouse=warehouse, quiet=True)
    engine = _auth(s)
    token_id, token = guard(lambda: accounts.create_token(engine, name, expires_days))
    # The token alone on stdout (scripts capture it); the explanation on stderr.
    from stockbatch.cli.common import console

    when = f"expires in {expires_days:g} days" if expires_days else "no expiry"
    console.print(f"token {token_id} for {name} ({when}); shown once, store it now:")
    print(token)


@tokens_app.command("list")
def tokens_list(home: HomeOpt = None, warehouse: WarehouseOpt = None) -> None:
    """List tokens (ids, users, dates; never the tokens)."""
    from rich.table import Table

    from stockbatch.warehouse import access

    s = cli_settings(home, warehouse=warehouse, quiet=True)
    engine = _auth(s)
    rows = guard(lambda: access.tokens(engine))
    if not rows:
        out.print("no tokens: create one with `stockbatch tokens create USER`")
        return
    t = Table("id", "user", "role", "created", "expires", "revoked", "last used")

    def when(v: object) -> str:
        return "" if v is None else f"{v:%Y-%m-%d %H:%M}"

    for r in rows:
        t.add_row(
            str(r["id"]), r["user"], r["role"], when(r["created_at"]), when(r["expires_at"]),
            when(r["revoked_at"]), when(r["last_used_at"]),
        )  # fmt: skip
    out.print(t)


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[int, typer.Argument(help="Token id (stockbatch tokens list).")],
    home: HomeOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Revoke a token: it stops working at the next request."""
    from stockbatch.warehouse import access

    s = cli_settings(home, warehouse=warehouse, quiet=True)
    engine = _auth(s)
    if not guard(lambda: access.revoke_token(engine, token_id)):
        fail(f"no live token {token_id} (see `stockbatch tokens list`)")
    out.print(f"revoked token {token_id}")
