"""What a platform's key may read: its scopes, and the scopes each route needs (people are judged
by role elsewhere)."""

from __future__ import annotations

import re

from api.access.errors import AccessError
from api.access.principals import Principal

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
