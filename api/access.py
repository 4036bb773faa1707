"""Who is calling and what they may see: passwords (argon2), tokens, roles, scopes and the audit log.

A resident outside the caller's scope does not exist for them (404, never 403): the API does not
even confirm that such a resident is registered.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from psycopg.types.json import Jsonb

from api import queries

SESSION_LIFETIME = timedelta(hours=12)
LOGIN_WINDOW = "5 minutes"
# Per account (guessing one password), and per address (trying many accounts from one place;
# higher, because a clinic's staff may share one address).
LOGIN_MAX_FAILURES = 5
ADDRESS_MAX_FAILURES = 30
ROLES = ("doctor", "duty_desk", "institution_admin", "system_admin")

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


class AccessError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Principal:
    kind: str  # 'user' or 'platform'
    id: int
    name: str
    role: str  # a user role, or 'platform'
    token_id: int
    scopes: tuple[str, ...] = ("read",)
    doctor_id: int | None = None
    doctor_institution: int | None = None
    institutions: tuple[int, ...] = field(default_factory=tuple)

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.id}:{self.name}"

    @property
    def can_write(self) -> bool:
        return self.kind == "user" and "write" in self.scopes

    def visibility(self) -> dict[str, Any]:
        """Parameters of api/queries.py: VISIBLE (the may_see_resident rule)."""
        return {
            "doctor_id": self.doctor_id,
            "doctor_institution": self.doctor_institution,
            "institutions": list(self.institutions),
            "everyone": self.role == "system_admin",
        }


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _token_hash(token: str) -> bytes:
    # Tokens are 256-bit random: a fast hash is enough, and lookups stay one index probe.
    return hashlib.sha256(token.encode()).digest()


def new_token(
    conn: psycopg.Connection,
    *,
    kind: str,
    user_id: int | None = None,
    client_id: int | None = None,
    scopes: tuple[str, ...] = ("read",),
    lifetime: timedelta | None = None,
) -> tuple[str, datetime | None]:
    token = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + lifetime if lifetime else None
    conn.execute(
        queries.INSERT_TOKEN, (_token_hash(token), kind, user_id, client_id, list(scopes), expires)
    )
    return token, expires


def login(
    conn: psycopg.Connection, *, username: str, password: str, address: str
) -> tuple[str, datetime | None, str]:
    """A session token for a correct password; refuses after repeated failures (429)."""
    row = conn.execute(
        queries.RECENT_FAILURES, {"username": username, "address": address, "window": LOGIN_WINDOW}
    ).fetchone()
    if row and (row[0] >= LOGIN_MAX_FAILURES or row[1] >= ADDRESS_MAX_FAILURES):
        raise AccessError(429, "too many failed logins; wait five minutes and try again")
    user = conn.execute(queries.SELECT_USER, (username,)).fetchone()
    ok = False
    if user is not None:
        try:
            ok = _hasher.verify(user[2], password)
        except (VerificationError, InvalidHashError):
            ok = False
    else:
        _hasher.hash(password)  # same work either way: timing does not reveal unknown usernames
    if not ok or user is None:
        conn.execute(queries.RECORD_FAILURE, (username, address))
        raise AccessError(401, "wrong username or password")
    token, expires = new_token(
        conn, kind="session", user_id=user[0], scopes=("read", "write"), lifetime=SESSION_LIFETIME
    )
    return token, expires, user[3]


def authenticate(conn: psycopg.Connection, token: str | None) -> Principal:
    if not token:
        raise AccessError(401, "missing credentials: send 'Authorization: Bearer <token>'")
    row = conn.execute(queries.SELECT_TOKEN, (_token_hash(token),)).fetchone()
    if row is None:
        raise AccessError(401, "unknown or revoked token; log in again")
    (
        token_id,
        kind,
        scopes,
        expires_at,
        uid,
        username,
        role,
        doctor_id,
        institution_id,
        doctor_institution,
        pid,
        pname,
        pinstitutions,
    ) = row
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise AccessError(401, "the token has expired; log in again")
    conn.execute(queries.TOUCH_TOKEN, (token_id,))
    if kind == "api_key" and pid is not None:
        return Principal(
            "platform",
            pid,
            pname,
            "platform",
            token_id,
            tuple(scopes),
            institutions=tuple(pinstitutions or ()),
        )
    if uid is None:
        raise AccessError(401, "the account behind this token is disabled")
    institutions = tuple(i for i in (institution_id,) if i is not None)
    return Principal(
        "user",
        uid,
        username,
        role,
        token_id,
        tuple(scopes),
        doctor_id,
        doctor_institution,
        institutions,
    )


def audit(
    conn: psycopg.Connection,
    who: Principal,
    action: str,
    resource: str,
    *,
    address: str | None,
    resident_id: int | None = None,
    outcome: str = "ok",
    detail: dict[str, Any] | None = None,
) -> None:
    conn.execute(
        queries.INSERT_AUDIT,
        (who.actor, action, resident_id, resource, address, outcome, Jsonb(detail or {})),
    )


def add_user(
    conn: psycopg.Connection,
    *,
    username: str,
    password: str,
    role: str,
    doctor_id: int | None = None,
    institution_id: int | None = None,
) -> int:
    if role not in ROLES:
        raise AccessError(422, f"role must be one of {', '.join(ROLES)}")
    try:
        row = conn.execute(
            queries.INSERT_USER,
            (username, hash_password(password), role, doctor_id, institution_id),
        ).fetchone()
    except psycopg.errors.UniqueViolation:
        raise AccessError(409, f"user {username!r} exists already") from None
    except psycopg.errors.CheckViolation:
        raise AccessError(
            422,
            "a doctor user needs --doctor; a duty desk or institution admin needs --institution",
        ) from None
    assert row is not None
    user_id: int = row[0]
    return user_id


def add_platform(
    conn: psycopg.Connection, *, name: str, institution_ids: list[int]
) -> tuple[int, str]:
    """A platform client and its read-only API key (shown once)."""
    try:
        row = conn.execute(queries.INSERT_PLATFORM, (name, institution_ids)).fetchone()
    except psycopg.errors.UniqueViolation:
        raise AccessError(409, f"platform {name!r} exists already") from None
    assert row is not None
    key, _ = new_token(conn, kind="api_key", client_id=row[0], scopes=("read",))
    return row[0], key
