"""Who is calling and what they may see: passwords (argon2), tokens, roles, scopes and the audit log.

A resident outside the caller's scope does not exist for them (404, never 403): the API does not
even confirm that such a resident is registered. A role or a key that may not do something at all
gets 403.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
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
LOGIN_WINDOW_S = 5 * 60  # the same, for the Retry-After header
# Failed logins allowed within the window. Per account and address (guessing one password from one
# place): an attacker elsewhere uses up only their own address's tries, never the doctor's.
LOGIN_MAX_FAILURES = 5
# Per address, over all accounts (trying many accounts from one place; higher, because a clinic's
# staff may share one address).
ADDRESS_MAX_FAILURES = 30
# The slow-down for a guess spread over many addresses: once an account has this many failures
# from all addresses together, every address may fail on it only SLOWED_MAX_FAILURES times. No
# lockout: a first attempt from anywhere is always tried, so the doctor still gets in.
ACCOUNT_SLOWDOWN_AFTER = 20
SLOWED_MAX_FAILURES = 1
ROLES = ("doctor", "duty_desk", "institution_admin", "system_admin")
# What a platform's key may read; chosen when the key is made (`eldercare platforms add --scope`).
PLATFORM_SCOPES = ("read:residents", "read:readings", "read:alerts")
# Which scopes a platform needs for a route (first match wins; no match: platforms may not call it).
# Matched against path templates (/api/v1/residents/{resident_id}/…, api/deps.py: route_template),
# so new routes under a prefix inherit its rule.
_ROUTE_SCOPES: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = tuple(
    (re.compile(pattern), scopes)
    for pattern, scopes in (
        (r"^/api/v1/auth/", ()),
        (r"^/api/v1/residents/\{resident_id\}/(readings|latest|news2)", ("read:readings",)),
        (r"^/api/v1/residents(/|$)", ("read:residents",)),
        (r"^/api/v1/(alerts|stream)(/|$)", ("read:alerts",)),
        (r"^/api/v1/overview$", ("read:residents", "read:alerts")),
        (r"^/api/v1/institutions$", ("read:residents",)),
    )
)

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


class AccessError(Exception):
    def __init__(self, status: int, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        # For a 429: when trying again can succeed (the Retry-After header), so that apps and
        # platforms back off instead of hammering the limit and extending it.
        self.retry_after_s = retry_after_s


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
    token_kind: str = "session"  # session, api_key or access_token
    # Refusals already written to the audit log during this request (so they are written once).
    refusals: list[str] = field(default_factory=list, compare=False, repr=False)

    @property
    def actor(self) -> str:
        """Who, for the audit log (which stays on the server): with the login's name."""
        return f"{self.kind}:{self.id}:{self.name}"

    @property
    def ref(self) -> str:
        """Who, wherever others can read it (alert history, thresholds): an opaque id, never the
        username; people are shown the display name behind it (migration 0015: actor_name)."""
        return f"{self.kind}:{self.id}"

    @property
    def acts_for(self) -> list[int]:
        """The institutions this caller acts for, as recorded in the audit log."""
        ids = set(self.institutions)
        if self.doctor_institution is not None:
            ids.add(self.doctor_institution)
        return sorted(ids)

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
            # Duty desks also see alerts without a resident that were sent to them (queries._SEE_A).
            "desk": self.role == "duty_desk",
            # People see who acted by name, platforms by opaque id (actor_shown, migration 0015).
            "people": self.kind == "user",
        }


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def token_hash(token: str) -> bytes:
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
    expires_at: datetime | None = None,
) -> tuple[str, datetime | None]:
    token = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + lifetime if lifetime else expires_at
    conn.execute(
        queries.INSERT_TOKEN, (token_hash(token), kind, user_id, client_id, list(scopes), expires)
    )
    return token, expires


def reserve_attempt(conn: psycopg.Connection, *, username: str, address: str) -> int:
    """Count one login attempt as a failure before its password is checked, if the limits allow
    one more (429 otherwise); `release_attempt` takes it back when the password was right.

    Check and record are one step under the address's and the account's advisory locks, so
    concurrent attempts never get more tries than the limits, whichever API process they reach."""
    limits = {
        "username": username,
        "address": address,
        "window": LOGIN_WINDOW,
        "pair_max": LOGIN_MAX_FAILURES,
        "address_max": ADDRESS_MAX_FAILURES,
        "slowdown_after": ACCOUNT_SLOWDOWN_AFTER,
        "slowed_max": SLOWED_MAX_FAILURES,
    }
    with conn.transaction():
        conn.execute(queries.LOCK_LOGIN_ADDRESS, (address,))
        conn.execute(queries.LOCK_LOGIN_ACCOUNT, (username,))
        row = conn.execute(queries.RESERVE_LOGIN_ATTEMPT, limits).fetchone()
    if row is None:
        raise AccessError(
            429,
            "too many failed logins from this address; wait five minutes",
            retry_after_s=LOGIN_WINDOW_S,
        )
    # Rows older than the window count for nothing; the audit log keeps the history.
    conn.execute(queries.PRUNE_FAILURES, {"window": LOGIN_WINDOW})
    attempt: int = row[0]
    return attempt


def release_attempt(conn: psycopg.Connection, attempt: int) -> None:
    """The attempt succeeded: it does not count as a failure."""
    conn.execute(queries.RELEASE_LOGIN_ATTEMPT, (attempt,))


def _user_institutions(user: tuple[Any, ...]) -> tuple[int | None, int | None]:
    """A user row's own institution (not for doctors, see authenticate) and its doctor's."""
    return (None if user[3] == "doctor" else user[5], user[6])


def login(
    conn: psycopg.Connection, *, username: str, password: str, address: str
) -> tuple[str, datetime | None, str]:
    """A session token for a correct password; refuses after repeated failures (429, see
    reserve_attempt).

    Every attempt that is not rate-limited is audited (never the password)."""
    attempt = reserve_attempt(conn, username=username, address=address)
    user = conn.execute(queries.SELECT_USER, (username,)).fetchone()
    ok = False
    if user is not None:
        try:
            ok = _hasher.verify(user[2], password)
        except (VerificationError, InvalidHashError):
            ok = False
    else:
        _hasher.hash(password)  # same work either way: timing does not reveal unknown usernames
    actor = f"user:{user[0]}:{user[1]}" if user is not None else f"anonymous:{username}"
    acts_for = (
        [] if user is None else sorted({i for i in _user_institutions(user) if i is not None})
    )
    if not ok or user is None:
        record(
            conn,
            actor,
            "auth.login",
            "/api/v1/auth/login",
            address=address,
            outcome="failed",
            acts_for=acts_for,
            detail={"reason": "wrong password" if user is not None else "unknown username"},
        )
        raise AccessError(401, "wrong username or password")
    release_attempt(conn, attempt)
    token, expires = new_token(
        conn, kind="session", user_id=user[0], scopes=("read", "write"), lifetime=SESSION_LIFETIME
    )
    record(conn, actor, "auth.login", "/api/v1/auth/login", address=address, acts_for=acts_for)
    return token, expires, user[3]


def authenticate(conn: psycopg.Connection, token: str | None) -> Principal:
    if not token:
        raise AccessError(401, "missing credentials: send 'Authorization: Bearer <token>'")
    row = conn.execute(queries.SELECT_TOKEN, (token_hash(token),)).fetchone()
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
    if kind in ("api_key", "access_token") and pid is not None:
        return Principal(
            "platform",
            pid,
            pname,
            "platform",
            token_id,
            tuple(scopes),
            institutions=tuple(pinstitutions or ()),
            token_kind=kind,
        )
    if uid is None:
        raise AccessError(401, "the account or platform behind this token is disabled")
    # A doctor sees the doctor's residents: an institution on a doctor's login (refused since
    # migration 0009, possible before) must not widen that to the whole institution.
    institutions = tuple(i for i in (institution_id,) if i is not None and role != "doctor")
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


def required_scopes(path: str) -> tuple[str, ...] | None:
    """The scopes a platform needs for a route's path template; None: platforms may not call it."""
    for pattern, scopes in _ROUTE_SCOPES:
        if pattern.search(path):
            return scopes
    return None


def check_scopes(who: Principal, path: str, method: str = "GET") -> None:
    """403 unless a platform's key has the scopes this route needs (people are judged by role).

    Platforms only read: any other method is refused here, for every route, present or future."""
    if who.kind != "platform":
        return
    if method not in ("GET", "HEAD") and not path.startswith("/api/v1/auth/"):
        raise AccessError(403, "this credential may read but not act or change anything")
    needed = required_scopes(path)
    if needed is None:
        raise AccessError(403, "API keys may not call this; it is for people who log in")
    missing = [s for s in needed if s not in who.scopes]
    if missing:
        raise AccessError(403, f"this key lacks the scope {', '.join(missing)}")


def audit(
    conn: psycopg.Connection,
    who: Principal,
    action: str,
    resource: str,
    *,
    address: str | None,
    resident_id: int | None = None,
    resident_ids: Iterable[int] | None = None,
    outcome: str = "ok",
    detail: dict[str, Any] | None = None,
) -> None:
    """One audit row for what `who` did; `resident_ids`: the residents a list returned."""
    if outcome != "ok":
        who.refusals.append(action)
    record(
        conn,
        who.actor,
        action,
        resource,
        address=address,
        resident_id=resident_id,
        resident_ids=resident_ids,
        outcome=outcome,
        detail=detail,
        acts_for=who.acts_for,
    )


def record(
    conn: psycopg.Connection,
    actor: str,
    action: str,
    resource: str,
    *,
    address: str | None,
    resident_id: int | None = None,
    resident_ids: Iterable[int] | None = None,
    outcome: str = "ok",
    detail: dict[str, Any] | None = None,
    acts_for: list[int] | None = None,
) -> None:
    conn.execute(
        queries.INSERT_AUDIT,
        (
            actor,
            action,
            resident_id,
            None if resident_ids is None else sorted(set(resident_ids)),
            resource,
            address,
            outcome,
            Jsonb(detail or {}),
            acts_for or None,
        ),
    )


def add_user(
    conn: psycopg.Connection,
    *,
    username: str,
    password: str,
    role: str,
    doctor_id: int | None = None,
    institution_id: int | None = None,
    display_name: str | None = None,
) -> int:
    """A login. `display_name` is what people are shown when it acts (else its doctor's name, else
    `user:<id>`): the username is never shown to anyone."""
    if role not in ROLES:
        raise AccessError(422, f"role must be one of {', '.join(ROLES)}")
    if role == "doctor" and institution_id is not None:
        # It would let the doctor see every resident of the institution, not only their own.
        raise AccessError(
            422,
            "a doctor's login has --doctor only; the doctor's institution comes from the doctor",
        )
    try:
        row = conn.execute(
            queries.INSERT_USER,
            (username, hash_password(password), role, doctor_id, institution_id, display_name),
        ).fetchone()
    except psycopg.errors.UniqueViolation:
        raise AccessError(409, f"user {username!r} exists already") from None
    except psycopg.errors.CheckViolation:
        raise AccessError(
            422,
            "a doctor user needs --doctor; a duty desk or institution admin needs --institution; "
            "a display name has 1 to 100 characters",
        ) from None
    assert row is not None
    user_id: int = row[0]
    return user_id


def add_platform(
    conn: psycopg.Connection,
    *,
    name: str,
    institution_ids: list[int],
    scopes: tuple[str, ...] = PLATFORM_SCOPES,
    expires_at: datetime | None = None,
) -> tuple[int, str]:
    """A platform client and its read-only API key (shown once); see api/platforms.py."""
    from api import platforms

    return platforms.add(
        conn, name=name, institution_ids=institution_ids, scopes=scopes, expires_at=expires_at
    )
