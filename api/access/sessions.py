"""Logging in: a password checked within the rate limits becomes a session token, audited."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg

from api import queries
from api.access.audit_log import record
from api.access.errors import AccessError
from api.access.login_limits import release_attempt, reserve_attempt
from api.access.passwords import hash_password, verify_password
from api.access.tokens import new_token

SESSION_LIFETIME = timedelta(hours=12)


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
        ok = verify_password(user[2], password)
    else:
        hash_password(password)  # same work either way: timing does not reveal unknown usernames
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
