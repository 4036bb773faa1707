"""Shared dependencies of the API: a pooled connection per request, and the authenticated caller.

The caller dependency also enforces platform keys' scopes (and that they never write) for every
route, and writes the audit row
of every refusal (403, or 404 for something outside the caller's scope) that the route did not
record itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import psycopg
from fastapi import Depends, HTTPException, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.access import AccessError, Principal, audit, authenticate, check_scopes

_bearer = HTTPBearer(
    auto_error=False, description="A session token (POST /api/v1/auth/login) or an API key"
)


def _connection(request: Request) -> Iterator[psycopg.Connection]:
    with request.app.state.pool.connection() as conn:
        yield conn


Conn = Annotated[psycopg.Connection, Depends(_connection)]


def _caller(
    request: Request,
    conn: Conn,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Iterator[Principal]:
    caller = authenticate(conn, credentials.credentials if credentials else None)
    try:
        check_scopes(caller, route_template(request), request.method)
    except AccessError as exc:
        _refused(conn, caller, request, exc.status, exc.message)
        raise
    try:
        yield caller
    except (HTTPException, AccessError) as exc:
        status = exc.status_code if isinstance(exc, HTTPException) else exc.status
        if status in (403, 404) and not caller.refusals:
            reason = exc.detail if isinstance(exc, HTTPException) else exc.message
            _refused(conn, caller, request, status, str(reason))
        raise


def route_template(request: Request) -> str:
    """The request's path with its path parameters as {name}, e.g. /api/v1/residents/{resident_id}
    (taken from the URL: a route included through nested routers knows only its own part)."""
    names = {str(v): k for k, v in request.path_params.items()}
    return "/".join(f"{{{names[s]}}}" if s in names else s for s in request.url.path.split("/"))


def _refused(conn: Conn, caller: Principal, request: Request, status: int, reason: str) -> None:
    """Audit a refusal with only what the caller asked for (the path's ids). Never the resident
    behind an alert id: the audit log's readers would learn whose alert it is, and that it exists."""
    params = {k: str(v) for k, v in request.path_params.items()}
    resident_id: int | None = None
    if params.get("resident_id", "").isdigit():
        resident_id = int(params["resident_id"])
    audit(
        conn,
        caller,
        "access.refused",
        request.url.path,
        address=client_address(request),
        resident_id=resident_id if resident_id is not None and resident_id <= MAX_ID else None,
        outcome="refused",
        detail={
            "status": status,
            "method": request.method,
            "operation": getattr(request.scope.get("route"), "name", None),
            "reason": reason,
            **params,
        },
    )


Caller = Annotated[Principal, Depends(_caller)]


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


# Ids fit a bigint and a JavaScript number exactly (2^53 - 1); larger ones are invalid input (422),
# never a database error. (JSON Schema validators compare numbers as doubles too.)
MAX_ID = 2**53 - 1
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
IdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]
# Free text that PostgreSQL can store: no NUL characters (the schema says so, so fuzzers know).
NO_NUL = r"^[^\x00]*$"
