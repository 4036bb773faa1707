"""Shared dependencies of the API: a pooled connection per request, and the authenticated caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import psycopg
from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.access import Principal, authenticate

_bearer = HTTPBearer(
    auto_error=False, description="A session token (POST /api/v1/auth/login) or an API key"
)


def _connection(request: Request) -> Iterator[psycopg.Connection]:
    with request.app.state.pool.connection() as conn:
        yield conn


Conn = Annotated[psycopg.Connection, Depends(_connection)]


def _caller(
    conn: Conn, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    return authenticate(conn, credentials.credentials if credentials else None)


Caller = Annotated[Principal, Depends(_caller)]


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


# Ids fit a bigint and a JavaScript number exactly (2^53 - 1); larger ones are invalid input (422),
# never a database error. (JSON Schema validators compare numbers as doubles too.)
MAX_ID = 2**53 - 1
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
IdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]
