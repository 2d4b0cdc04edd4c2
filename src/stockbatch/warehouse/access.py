"""The API's users, bearer tokens and audit log: every SQL statement of access control.

Only hashes are stored (argon2id for passwords, SHA-256 for tokens: a token is
32 random bytes, so a fast hash is enough); hashing and verifying live in
``stockbatch.api.accounts``. Timestamps are UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from stockbatch.warehouse import models
from stockbatch.warehouse.bulk import utcnow
from stockbatch.warehouse.records import audit_in

NUL = "\x00"
"""PostgreSQL text cannot hold it: a name with one matches no row."""


class DuplicateUser(ValueError):
    """A user of that name exists already."""


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite keeps no zone: what the API wrote is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)


def _user(row: Any) -> dict[str, Any]:
    out = dict(row._mapping)
    for key in ("created_at", "locked_until"):
        if key in out:
            out[key] = _utc(out[key])
    return out


def add_user(engine: sa.Engine, name: str, role: str, password_hash: str | None) -> int:
    """Create an enabled user; returns its id. Raises :class:`DuplicateUser`."""
    t = models.api_users
    try:
        with engine.begin() as conn:
            result = conn.execute(
                t.insert().values(
                    name=name,
                    role=role,
                    password_hash=password_hash,
                    enabled=True,
                    created_at=utcnow(),
                    failed_logins=0,
                )
            )
    except sa.exc.IntegrityError as exc:
        raise DuplicateUser(name) from exc
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def user(engine: sa.Engine, name: str) -> dict[str, Any] | None:
    """One user by name, with its password hash (for the login check), or None."""
    t = models.api_users
    if NUL in name:
        return None
    with engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.name == name)).first()
    return None if row is None else _user(row)


def users(engine: sa.Engine) -> list[dict[str, Any]]:
    """Every user without its hash, with the number of live tokens, by name."""
    t, tok = models.api_users, models.api_tokens
    live = (
        sa.select(sa.func.count())
        .where(tok.c.user_id == t.c.id, tok.c.revoked_at.is_(None))
        .scalar_subquery()
    )
    cols = [c for c in t.c if c.key != "password_hash"]
    stmt = sa.select(*cols, live.label("tokens")).order_by(t.c.name)
    with engine.connect() as conn:
        return [_user(r) for r in conn.execute(stmt)]


def set_enabled(engine: sa.Engine, name: str, enabled: bool) -> bool:
    """Enable or disable a user (a disabled user's sessions and tokens stop working at
    once); False when there is no such user."""
    t = models.api_users
    with engine.begin() as conn:
        n = conn.execute(t.update().where(t.c.name == name).values(enabled=enabled)).rowcount
    return bool(n)


def set_password(engine: sa.Engine, name: str, password_hash: str) -> bool:
    """Replace a user's password hash and clear its lock; False when there is no such user."""
    t = models.api_users
    with engine.begin() as conn:
        n = conn.execute(
            t.update()
            .where(t.c.name == name)
            .values(password_hash=password_hash, failed_logins=0, locked_until=None)
        ).rowcount
    return bool(n)


def login_failed(engine: sa.Engine, user_id: int, lock_after: int, lock_for: dt.timedelta) -> int:
    """Count a failed login; the ``lock_after``-th in a row locks the account for
    ``lock_for``. Returns the failures in a row."""
    t = models.api_users
    with engine.begin() as conn:
        n = conn.execute(
            t.update()
            .where(t.c.id == user_id)
            .values(failed_logins=t.c.failed_logins + 1)
            .returning(t.c.failed_logins)
        ).scalar_one()
        if n >= lock_after:
            conn.execute(
                t.update()
                .where(t.c.id == user_id)
                .values(locked_until=utcnow() + lock_for, failed_logins=0)
            )
    return int(n)


def login_succeeded(engine: sa.Engine, user_id: int) -> None:
    """Reset the failure count and any lock."""
    t = models.api_users
    with engine.begin() as conn:
        conn.execute(t.update().where(t.c.id == user_id).values(failed_logins=0, locked_until=None))


def add_token(
    engine: sa.Engine, user_id: int, token_hash: str, expires_at: dt.datetime | None
) -> int:
    """Store a token's hash for a user; returns the token id."""
    t = models.api_tokens
    with engine.begin() as conn:
        result = conn.execute(
            t.insert().values(
                user_id=user_id, token_hash=token_hash, created_at=utcnow(), expires_at=expires_at
            )
        )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def tokens(engine: sa.Engine) -> list[dict[str, Any]]:
    """Every token (no hash) with its user, newest first."""
    t, u = models.api_tokens, models.api_users
    stmt = (
        sa.select(
            t.c.id,
            u.c.name.label("user"),
            u.c.role,
            t.c.created_at,
            t.c.expires_at,
            t.c.revoked_at,
            t.c.last_used_at,
        )
        .select_from(t.join(u, t.c.user_id == u.c.id))
        .order_by(t.c.id.desc())
    )
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    for r in rows:
        for key in ("created_at", "expires_at", "revoked_at", "last_used_at"):
            r[key] = _utc(r[key])
    return rows


def token_owner(engine: sa.Engine, token_hash: str) -> dict[str, Any] | None:
    """The token of that hash joined with its user (``token_id``, ``expires_at``,
    ``revoked_at``, ``last_used_at``, then the user's columns), or None."""
    t, u = models.api_tokens, models.api_users
    stmt = (
        sa.select(
            t.c.id.label("token_id"),
            t.c.expires_at,
            t.c.revoked_at,
            t.c.last_used_at,
            u.c.id,
            u.c.name,
            u.c.role,
            u.c.enabled,
        )
        .select_from(t.join(u, t.c.user_id == u.c.id))
        .where(t.c.token_hash == token_hash)
    )
    with engine.connect() as conn:
        row = conn.execute(stmt).first()
    if row is None:
        return None
    out = dict(row._mapping)
    for key in ("expires_at", "revoked_at", "last_used_at"):
        out[key] = _utc(out[key])
    return out


def token_used(engine: sa.Engine, token_id: int) -> None:
    """Stamp ``last_used_at``."""
    t = models.api_tokens
    with engine.begin() as conn:
        conn.execute(t.update().where(t.c.id == token_id).values(last_used_at=utcnow()))


def revoke_token(engine: sa.Engine, token_id: int) -> bool:
    """Revoke a token (kept for the record); False when there is no live token of that id."""
    t = models.api_tokens
    with engine.begin() as conn:
        n = conn.execute(
            t.update()
            .where(t.c.id == token_id, t.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        ).rowcount
    return bool(n)


def _no_nul(value: Any) -> Any:
    """``value`` with every NUL of its text written ``\\x00`` (PostgreSQL text and JSON
    cannot hold a NUL; the log still shows one was sent)."""
    if isinstance(value, str):
        return value.replace(NUL, "\\x00")
    if isinstance(value, dict):
        return {_no_nul(k): _no_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nul(v) for v in value]
    return value


def audit(engine: sa.Engine, actor: str, action: str, detail: dict[str, Any]) -> None:
    """Append one entry to the audit log."""
    with engine.begin() as conn:
        audit_in(conn, _no_nul(actor), _no_nul(action), _no_nul(detail))


def audit_rows(
    engine: sa.Engine, limit: int = 100, before_id: int | None = None, actor: str | None = None
) -> list[dict[str, Any]]:
    """Audit entries newest first; ``before_id`` is the cursor of the next page."""
    t = models.audit_log
    stmt = sa.select(t).order_by(t.c.id.desc()).limit(limit)
    if before_id is not None:
        stmt = stmt.where(t.c.id < before_id)
    if actor is not None:
        stmt = stmt.where(t.c.actor == actor if NUL not in actor else sa.false())
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    for r in rows:
        r["at"] = _utc(r["at"])
    return rows
