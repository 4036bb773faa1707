"""Log in and out; who am I."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from api import access, queries
from api.deps import Caller, Conn, client_address

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=200)


class LoginResponse(BaseModel):
    token: str
    expires_at: datetime | None
    role: str


class Me(BaseModel):
    kind: str
    id: int
    name: str
    role: str
    scopes: list[str]
    doctor_id: int | None


@router.post("/login", response_model=LoginResponse, responses={401: {}, 429: {}})
def login(body: LoginRequest, conn: Conn, request: Request) -> LoginResponse:
    """Password login for doctors and staff; returns a bearer token valid for 12 hours."""
    token, expires, role = access.login(
        conn, username=body.username, password=body.password, address=client_address(request) or "?"
    )
    return LoginResponse(token=token, expires_at=expires, role=role)


@router.post("/logout", status_code=204, responses={401: {}})
def logout(caller: Caller, conn: Conn) -> None:
    """Revoke the token used for this request."""
    conn.execute(queries.REVOKE_TOKEN, (caller.token_id,))


@router.get("/me", response_model=Me, responses={401: {}})
def me(caller: Caller) -> Me:
    return Me(
        kind=caller.kind,
        id=caller.id,
        name=caller.name,
        role=caller.role,
        scopes=list(caller.scopes),
        doctor_id=caller.doctor_id,
    )
