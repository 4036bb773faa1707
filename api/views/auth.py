"""Log in and out; who am I; OAuth2 client credentials for platforms."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl, unquote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api import access, platforms, queries
from api.access import PLATFORM_SCOPES, AccessError
from api.deps import NO_NUL, Caller, Conn, client_address

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=100, pattern=NO_NUL)
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
    institutions: list[int] = []


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    scope: str


class OAuthError(BaseModel):
    error: str
    error_description: str | None = None


@router.post("/login", response_model=LoginResponse, responses={401: {}, 429: {}})
def login(body: LoginRequest, conn: Conn, request: Request) -> LoginResponse:
    """Password login for doctors and staff; returns a bearer token valid for 12 hours."""
    token, expires, role = access.login(
        conn, username=body.username, password=body.password, address=client_address(request) or "?"
    )
    return LoginResponse(token=token, expires_at=expires, role=role)


@router.post("/logout", status_code=204, responses={401: {}, 403: {}})
def logout(caller: Caller, conn: Conn) -> None:
    """Revoke the token used for this request (not an API key: an administrator rotates those)."""
    if caller.token_kind == "api_key":
        raise HTTPException(403, "an API key is rotated or revoked by an administrator")
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
        institutions=list(caller.institutions),
    )


async def _form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (RFC 6749 requires it for the token endpoint)."""
    body = await request.body()
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)[:20])


_TOKEN_FORM = {
    "type": "object",
    "required": ["grant_type"],
    "properties": {
        "grant_type": {"type": "string", "enum": ["client_credentials"]},
        "client_id": {"type": "string", "description": "the platform's id"},
        "client_secret": {"type": "string", "description": "an API key of the platform"},
        "scope": {
            "type": "string",
            "description": f"space-separated, of {' '.join(PLATFORM_SCOPES)}",
        },
    },
}


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="eldercare"'
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=headers
    )


def _basic(request: Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return unquote(user), unquote(password)


@router.post(
    "/token",
    response_model=TokenResponse,
    responses={400: {"model": OAuthError}, 401: {"model": OAuthError}, 429: {}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": _TOKEN_FORM}},
        }
    },
)
def token(request: Request, conn: Conn, form: Annotated[dict[str, str], Depends(_form)]) -> Any:
    """OAuth2 client-credentials grant (RFC 6749 §4.4) for platforms: client_id and client_secret
    (an API key) in the form or as HTTP Basic; a bearer token for an hour with the key's scopes (or
    the requested subset)."""
    if form.get("grant_type") != "client_credentials":
        return _oauth_error(400, "unsupported_grant_type", "only client_credentials is supported")
    client_id, secret = _basic(request) or (
        form.get("client_id", ""),
        form.get("client_secret", ""),
    )
    if "\x00" in client_id + secret + form.get("scope", "") or len(client_id) > 100:
        return _oauth_error(400, "invalid_request", "malformed client_id, client_secret or scope")
    address = client_address(request) or "?"
    try:
        grant = platforms.client_credentials(
            conn,
            client_id=client_id,
            client_secret=secret,
            scope=form.get("scope"),
            address=address,
        )
    except AccessError as exc:
        if exc.status == 429:
            raise
        access.record(
            conn,
            f"anonymous:platform:{client_id[:40]}",
            "auth.token",
            request.url.path,
            address=address,
            outcome="failed",
            detail={"error": exc.message},
        )
        description = {
            "invalid_client": "unknown client, or a wrong, revoked or expired key",
            "invalid_scope": f"ask for some of the key's scopes ({' '.join(PLATFORM_SCOPES)})",
        }.get(exc.message, exc.message)
        return _oauth_error(exc.status, exc.message, description)
    access.record(
        conn,
        f"platform:{grant.platform_id}:{grant.platform_name}",
        "auth.token",
        request.url.path,
        address=address,
        detail={"scopes": list(grant.scopes)},
    )
    return JSONResponse(
        TokenResponse(
            access_token=grant.access_token,
            expires_in=grant.expires_in,
            scope=" ".join(grant.scopes),
        ).model_dump(),
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )
