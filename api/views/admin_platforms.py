"""Platforms' credentials through the API (system administrators): register, list, rotate, disable.

The same as `eldercare platforms add|list|rotate|revoke`; the rules are in api/platforms.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from api import platforms
from api.access import PLATFORM_SCOPES, audit
from api.deps import MAX_ID, NO_NUL, Caller, Conn, IdPath, client_address
from api.views.guards import require_admin

router = APIRouter(tags=["administration"])  # under /api/v1, see api/views/admin.py
Scope = Literal["read:residents", "read:readings", "read:alerts"]
assert set(Scope.__args__) == set(PLATFORM_SCOPES)  # type: ignore[attr-defined]
InstitutionId = Annotated[int, Field(ge=1, le=MAX_ID)]


Expiry = Annotated[
    datetime | None,
    Field(description="when the key stops working (in the future); none: never (rotate it then)"),
]


class NewPlatform(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=NO_NUL)
    institution_ids: list[InstitutionId] = Field(min_length=1, max_length=100)
    scopes: list[Scope] = Field(
        default=["read:residents", "read:readings", "read:alerts"], min_length=1
    )
    expires_at: Expiry = None


class Rotation(BaseModel):
    scopes: list[Scope] | None = Field(default=None, min_length=1, description="default: as before")
    expires_at: Expiry = None


class Key(BaseModel):
    id: int
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class Platform(BaseModel):
    id: int
    name: str
    institution_ids: list[int]
    created_at: datetime
    disabled_at: datetime | None
    keys: list[Key]


class PlatformWithKey(Platform):
    api_key: str = Field(description="shown in this answer only; stored as a digest")


def _audit(conn: Conn, caller: Any, request: Request, action: str, platform_id: int) -> None:
    audit(
        conn,
        caller,
        action,
        request.url.path,
        address=client_address(request),
        detail={"platform_id": platform_id},
    )


@router.get("/platforms", response_model=list[Platform], responses={401: {}, 403: {}})
def list_platforms(caller: Caller, conn: Conn) -> list[dict[str, Any]]:
    """Platforms and their keys (never the secrets)."""
    require_admin(caller, system_only=True)
    return platforms.listing(conn)


@router.get(
    "/platforms/{platform_id}", response_model=Platform, responses={401: {}, 403: {}, 404: {}}
)
def get_platform(platform_id: IdPath, caller: Caller, conn: Conn) -> dict[str, Any]:
    require_admin(caller, system_only=True)
    return platforms.get(conn, platform_id)


@router.post(
    "/platforms",
    status_code=201,
    response_model=PlatformWithKey,
    responses={401: {}, 403: {}, 404: {}, 409: {}},
)
def add_platform(body: NewPlatform, caller: Caller, conn: Conn, request: Request) -> dict[str, Any]:
    """Register a platform; its API key is in this answer only."""
    require_admin(caller, system_only=True)
    platform_id, key = platforms.add(
        conn,
        name=body.name,
        institution_ids=body.institution_ids,
        scopes=tuple(body.scopes),
        expires_at=body.expires_at,
    )
    _audit(conn, caller, request, "platform.add", platform_id)
    return {**platforms.get(conn, platform_id), "api_key": key}


@router.post(
    "/platforms/{platform_id}/rotate",
    response_model=PlatformWithKey,
    responses={401: {}, 403: {}, 404: {}, 409: {}},
)
def rotate_platform_key(
    platform_id: IdPath, body: Rotation, caller: Caller, conn: Conn, request: Request
) -> dict[str, Any]:
    """A new key (in this answer only); all earlier keys and tokens stop working now."""
    require_admin(caller, system_only=True)
    key = platforms.rotate(
        conn,
        platform_id,
        scopes=tuple(body.scopes) if body.scopes else None,
        expires_at=body.expires_at,
    )
    _audit(conn, caller, request, "platform.rotate", platform_id)
    return {**platforms.get(conn, platform_id), "api_key": key}


@router.post(
    "/platforms/{platform_id}/disable",
    response_model=Platform,
    responses={401: {}, 403: {}, 404: {}, 409: {}},
)
def disable_platform(
    platform_id: IdPath, caller: Caller, conn: Conn, request: Request
) -> dict[str, Any]:
    """Revoke every key and token of the platform; it stays listed for the audit trail."""
    require_admin(caller, system_only=True)
    platform = platforms.disable(conn, platform_id)
    _audit(conn, caller, request, "platform.disable", platform_id)
    return platform
