"""Platforms' credentials: API keys with scopes (shown once, stored hashed), rotation, disabling,
and short-lived OAuth2 access tokens from the client-credentials grant.

A platform reads the residents of the institutions it is authorised for, within its key's scopes; it
never writes. Rotating a key or disabling a platform revokes every token it holds at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from api import queries
from api.access import (
    PLATFORM_SCOPES,
    AccessError,
    new_token,
    release_attempt,
    reserve_attempt,
    token_hash,
)

ACCESS_TOKEN_LIFETIME = timedelta(hours=1)


def _check_scopes(scopes: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [s for s in scopes if s not in PLATFORM_SCOPES]
    if unknown or not scopes:
        raise AccessError(
            422, f"scopes are some of {', '.join(PLATFORM_SCOPES)}; not {', '.join(unknown)}"
        )
    return tuple(s for s in PLATFORM_SCOPES if s in scopes)  # canonical order, no duplicates


def _check_expiry(expires_at: datetime | None) -> datetime | None:
    if expires_at is None:
        return None
    aware = expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)
    if aware <= datetime.now(UTC):
        raise AccessError(409, "the expiry must lie in the future")
    return aware


def add(
    conn: psycopg.Connection,
    *,
    name: str,
    institution_ids: list[int],
    scopes: tuple[str, ...] = PLATFORM_SCOPES,
    expires_at: datetime | None = None,
) -> tuple[int, str]:
    """A platform client and its read-only API key, which is returned here only."""
    scopes = _check_scopes(scopes)
    expires_at = _check_expiry(expires_at)
    wanted = sorted(set(institution_ids))
    row = conn.execute(queries.EXISTING_INSTITUTIONS, (wanted,)).fetchone()
    missing = sorted(set(wanted) - set(row[0] or [])) if row else wanted
    if missing:
        raise AccessError(404, f"no institution {', '.join(map(str, missing))}")
    with conn.transaction():
        try:
            created = conn.execute(queries.INSERT_PLATFORM, (name, wanted)).fetchone()
        except psycopg.errors.UniqueViolation:
            raise AccessError(409, f"platform {name!r} exists already") from None
        assert created is not None
        key, _ = new_token(
            conn, kind="api_key", client_id=created[0], scopes=scopes, expires_at=expires_at
        )
    return created[0], key


def id_by_name(conn: psycopg.Connection, name: str) -> int:
    row = conn.execute(queries.PLATFORM_BY_NAME, (name,)).fetchone()
    if row is None:
        raise AccessError(404, f"no platform {name!r}: see `eldercare platforms list`")
    platform_id: int = row[0]
    return platform_id


def listing(conn: psycopg.Connection, platform_id: int | None = None) -> list[dict[str, Any]]:
    """Platforms with their keys (never the secrets): scopes, expiry, revocation, last use."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(queries.LIST_PLATFORMS, {"platform_id": platform_id}).fetchall()


def get(conn: psycopg.Connection, platform_id: int) -> dict[str, Any]:
    found = listing(conn, platform_id)
    if not found:
        raise AccessError(404, f"no platform {platform_id}")
    return found[0]


def rotate(
    conn: psycopg.Connection,
    platform_id: int,
    *,
    scopes: tuple[str, ...] | None = None,
    expires_at: datetime | None = None,
) -> str:
    """A new API key (returned here only); every earlier key and token of the platform is revoked.

    Scopes stay those of the newest earlier key unless given."""
    platform = get(conn, platform_id)
    if platform["disabled_at"] is not None:
        raise AccessError(409, f"platform {platform['name']!r} is disabled; add a new one instead")
    if scopes is None:
        keys = platform["keys"] or []
        scopes = tuple(keys[0]["scopes"]) if keys else PLATFORM_SCOPES
    scopes = _check_scopes(scopes)
    expires_at = _check_expiry(expires_at)
    with conn.transaction():
        conn.execute(queries.REVOKE_PLATFORM_TOKENS, (platform_id,))
        key, _ = new_token(
            conn, kind="api_key", client_id=platform_id, scopes=scopes, expires_at=expires_at
        )
    return key


def disable(conn: psycopg.Connection, platform_id: int) -> dict[str, Any]:
    """The platform can no longer call the API with any key or token (kept for the audit trail)."""
    platform = get(conn, platform_id)
    if platform["disabled_at"] is not None:
        raise AccessError(409, f"platform {platform['name']!r} is disabled already")
    with conn.transaction():
        conn.execute(queries.DISABLE_PLATFORM, (platform_id,))
        conn.execute(queries.REVOKE_PLATFORM_TOKENS, (platform_id,))
    return get(conn, platform_id)


@dataclass(frozen=True)
class Grant:
    access_token: str
    expires_in: int
    scopes: tuple[str, ...]
    platform_id: int
    platform_name: str


def client_credentials(
    conn: psycopg.Connection,
    *,
    client_id: str,
    client_secret: str,
    scope: str | None,
    address: str,
) -> Grant:
    """OAuth2 client-credentials grant: a bearer token valid for an hour (never longer than the key).

    The client is the platform's id, its secret an API key of it; the token's scopes are the
    requested subset of the key's. Failures count towards the login rate limit (429)."""
    who = f"platform:{client_id}"[:100]
    attempt = reserve_attempt(conn, username=who, address=address)
    row = None
    if client_id.isdigit() and len(client_id) < 16:
        row = conn.execute(
            queries.SELECT_CLIENT_KEY, (token_hash(client_secret), int(client_id))
        ).fetchone()
    if row is None:
        raise AccessError(401, "invalid_client")
    release_attempt(conn, attempt)  # the key was right: not a guess
    token_id, key_scopes, key_expires, platform_id, platform_name = row
    granted = tuple(key_scopes)
    if scope:
        requested = set(scope.split())
        if not requested <= set(granted):
            raise AccessError(400, "invalid_scope")
        granted = tuple(s for s in PLATFORM_SCOPES if s in requested)
    lifetime = ACCESS_TOKEN_LIFETIME
    if key_expires is not None:  # a token never outlives the key it came from
        lifetime = min(lifetime, key_expires - datetime.now(UTC))
    token, _ = new_token(
        conn, kind="access_token", client_id=platform_id, scopes=granted, lifetime=lifetime
    )
    conn.execute(queries.TOUCH_TOKEN, (token_id,))
    return Grant(token, int(lifetime.total_seconds()), granted, platform_id, platform_name)
