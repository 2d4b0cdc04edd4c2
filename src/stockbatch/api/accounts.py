"""Users, passwords and bearer tokens of the API (the CLI's ``users`` / ``tokens`` and
the API's authentication both call these).

Passwords are hashed with argon2id (``argon2-cffi``); a token is ``sbk_`` + 32
random bytes, shown once, stored as its SHA-256 only. A disabled user, a revoked
or expired token stops working at the next request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from stockbatch.errors import PipelineError
from stockbatch.settings import MASK
from stockbatch.warehouse import access, models

ROLES = models.ROLES
ROLE_RANK = {role: i for i, role in enumerate(ROLES)}
TOKEN_PREFIX = "sbk_"
MIN_PASSWORD = 12
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
# Anything shaped like a token, in any case (a misplaced token may come back upper-cased,
# e.g. as a symbol in an error message).
_TOKEN_LIKE = re.compile(r"(?i)sbk_[A-Za-z0-9_-]{16,}")
_HASHER = PasswordHasher()
# Verified against when the user does not exist, so an unknown name takes as long as a
# wrong password (no user enumeration by timing).
_DUMMY_HASH = _HASHER.hash(secrets.token_hex(16))


class AccountError(PipelineError):
    """A user or token request that cannot be done (the message says why)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user, through a token or a dashboard session."""

    name: str
    role: str
    via: Literal["token", "session"]
    token_id: int | None = None

    def allows(self, role: str) -> bool:
        """Whether this principal has at least ``role``."""
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def hash_password(password: str) -> str:
    """An argon2id hash of ``password``."""
    return _HASHER.hash(password)


def token_digest(token: str) -> str:
    """What is stored of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def mask_tokens(text: str) -> str:
    """``text`` with everything shaped like a bearer token masked. A client may misplace
    its token in a URL (a query value, a path segment); the audit log and the error
    messages, which echo what was asked, must not keep it."""
    return _TOKEN_LIKE.sub(TOKEN_PREFIX + MASK, text)


def check_name(name: str) -> str:
    """A valid user name (letters, digits, ``_.@-``; at most 64) or :class:`AccountError`."""
    if not _NAME.match(name):
        raise AccountError(
            f"invalid user name {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-'"
        )
    return name


def create_user(engine: sa.Engine, name: str, role: str, password: str | None) -> int:
    """Add a user; ``password`` None makes a token-only account. Returns its id."""
    check_name(name)
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    if password is not None and len(password) < MIN_PASSWORD:
        raise AccountError(f"the password is too short: use at least {MIN_PASSWORD} characters")
    try:
        return access.add_user(
            engine, name, role, None if password is None else hash_password(password)
        )
    except access.DuplicateUser:
        raise AccountError(f"user {name!r} exists already (see `stockbatch users list`)") from None


def set_password(engine: sa.Engine, name: str, password: str) -> None:
    """Give user ``name`` a new password (and lift a login lock)."""
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password is too short: use at least {MIN_PASSWORD} characters")
    if not access.set_password(engine, name, hash_password(password)):
        raise AccountError(f"no user {name!r} (see `stockbatch users list`)")


def create_token(engine: sa.Engine, name: str, expires_days: float | None) -> tuple[int, str]:
    """A new bearer token for user ``name``: (token id, the token, to show once)."""
    user = access.user(engine, name)
    if user is None:
        raise AccountError(f"no user {name!r}: add it first with `stockbatch users add`")
    if expires_days is not None and expires_days <= 0:
        raise AccountError("--expires-days must be positive")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = None if expires_days is None else _now() + dt.timedelta(days=expires_days)
    return access.add_token(engine, int(user["id"]), token_digest(token), expires), token


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def from_token(engine: sa.Engine, token: str) -> Principal | str:
    """The principal of a bearer token, or why it is refused (one short phrase)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return "not a stockbatch token"
    row = access.token_owner(engine, token_digest(token))
    if row is None:
        return "unknown token"
    if row["revoked_at"] is not None:
        return "the token was revoked"
    if row["expires_at"] is not None and row["expires_at"] <= _now():
        return "the token expired"
    if not row["enabled"]:
        return "the account is disabled"
    last = row["last_used_at"]
    if last is None or _now() - last > dt.timedelta(minutes=1):  # one write a minute at most
        access.token_used(engine, int(row["token_id"]))
    return Principal(row["name"], row["role"], "token", int(row["token_id"]))


def from_session(engine: sa.Engine, name: str) -> Principal | str:
    """The principal of a dashboard session's user, or why it no longer counts."""
    row = access.user(engine, name)
    if row is None:
        return "unknown user"
    if not row["enabled"]:
        return "the account is disabled"
    return Principal(row["name"], row["role"], "session")


@dataclass(frozen=True)
class LoginRefused:
    """Why a login failed: ``reason`` is for the audit log; the user sees only that it
    failed (or that the account is locked, with ``retry_after`` seconds)."""

    reason: str
    failures: int = 0
    retry_after: float | None = None


def login(
    engine: sa.Engine, name: str, password: str, *, lock_after: int, lock_minutes: float
) -> Principal | LoginRefused:
    """Check a dashboard login; counts failures and locks after ``lock_after`` in a row."""
    row = access.user(engine, name) if _NAME.match(name) else None
    if row is None or row["password_hash"] is None:
        _verify(_DUMMY_HASH, password)
        return LoginRefused("unknown user" if row is None else "token-only account")
    locked = row["locked_until"]
    if locked is not None and locked > _now():
        return LoginRefused("locked", retry_after=(locked - _now()).total_seconds())
    if not _verify(row["password_hash"], password):
        n = access.login_failed(
            engine, int(row["id"]), lock_after, dt.timedelta(minutes=lock_minutes)
        )
        return LoginRefused("wrong password", failures=n)
    if not row["enabled"]:
        return LoginRefused("disabled")
    access.login_succeeded(engine, int(row["id"]))
    return Principal(row["name"], row["role"], "session")


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
