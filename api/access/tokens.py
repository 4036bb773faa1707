"""Bearer tokens (sessions, API keys, access tokens): made at random, stored only as their hash."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

import psycopg

from api import queries


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
