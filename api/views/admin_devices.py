"""Devices through the API: register, list, bind/unbind, retire, new broker credentials.

A device belongs to an institution (migration 0009): set when an institution admin registers it,
or when it is bound to a resident of an institution while it belonged to none. An institution admin
sees and manages only its institution's devices (others are 404), and only for its own
institution's residents (api/views/guards.py: ownership; 403); system admins manage all.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from psycopg.rows import dict_row
from pydantic import BaseModel, Field

from api import queries
from api.access import Principal, audit
from api.deps import MAX_ID, NO_NUL, Caller, Conn, IdQuery, client_address
from api.views.guards import NOT_YOURS, require_admin, require_institution, require_owner, scope
from devices import service as devices
from devices.models import DEVICE_KINDS
from devices.service import RegistryError

router = APIRouter(tags=["administration"])  # under /api/v1, see api/views/admin.py
# The device kinds as an enum, so the OpenAPI schema lists them.
DeviceKind = StrEnum("DeviceKind", {key: key for key in DEVICE_KINDS})  # type: ignore[misc]
DEVICE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
DeviceId = Annotated[str, Path(pattern=DEVICE_ID)]


class NewDevice(BaseModel):
    device_id: str = Field(pattern=DEVICE_ID)
    kind: DeviceKind
    resident_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    model: str | None = Field(default=None, max_length=100, pattern=NO_NUL)
    institution_id: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ID,
        description="owner; default: the admin's institution, or the resident's",
    )


class Binding(BaseModel):
    resident_id: int = Field(ge=1, le=MAX_ID)


class DeviceRecord(BaseModel):
    device_id: str
    kind: str
    model: str | None
    status: str
    institution_id: int | None
    resident_id: int | None
    online: bool
    battery: int | None
    firmware: str | None
    last_seen_at: datetime | None
    created_at: datetime
    retired_at: datetime | None


class Credentials(BaseModel):
    device_id: str
    mqtt_username: str
    mqtt_password: str = Field(description="shown in this answer only")


class NewDeviceRecord(DeviceRecord):
    mqtt_username: str
    mqtt_password: str = Field(description="shown in this answer only")


def _devices(conn: Conn, caller: Principal, **filters: Any) -> list[dict[str, Any]]:
    params = {
        **scope(caller),
        "device_id": None,
        "resident_id": None,
        "institution_id": None,
        "status": None,
        "limit": 1000,
        "offset": 0,
    }
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(queries.LIST_DEVICES, {**params, **filters}).fetchall()


def _device(conn: Conn, caller: Principal, device_id: str) -> dict[str, Any]:
    found = _devices(conn, caller, device_id=device_id)
    if not found:
        raise HTTPException(404, f"no device {device_id!r} {NOT_YOURS}")
    return found[0]


def _audit(conn: Conn, caller: Principal, request: Request, action: str, **kwargs: Any) -> None:
    audit(conn, caller, action, request.url.path, address=client_address(request), **kwargs)


@router.get("/devices", response_model=list[DeviceRecord], responses={401: {}, 403: {}})
def list_devices(
    caller: Caller,
    conn: Conn,
    request: Request,
    resident_id: IdQuery = None,
    institution_id: IdQuery = None,
    status: Literal["active", "retired"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[dict[str, Any]]:
    """The institution's devices (all for system admins), with whom each is bound to."""
    require_admin(caller)
    rows = _devices(
        conn,
        caller,
        resident_id=resident_id,
        institution_id=institution_id,
        status=status,
        limit=limit,
        offset=offset,
    )
    bound = [r["resident_id"] for r in rows if r["resident_id"] is not None]
    _audit(
        conn,
        caller,
        request,
        "read.devices",
        resident_id=resident_id,
        resident_ids=bound,
        detail={"count": len(rows)},
    )
    return rows


@router.get(
    "/devices/{device_id}", response_model=DeviceRecord, responses={401: {}, 403: {}, 404: {}}
)
def get_device(device_id: DeviceId, caller: Caller, conn: Conn, request: Request) -> dict[str, Any]:
    require_admin(caller)
    device = _device(conn, caller, device_id)
    _audit(conn, caller, request, "read.device", resident_id=device["resident_id"])
    return device


@router.post(
    "/devices",
    status_code=201,
    response_model=NewDeviceRecord,
    responses={401: {}, 403: {}, 404: {}, 409: {}},
)
def add_device(body: NewDevice, caller: Caller, conn: Conn, request: Request) -> dict[str, Any]:
    """Register a device; its broker password is in this answer only."""
    require_admin(caller)
    owner = body.institution_id
    if owner is None and caller.role != "system_admin":
        owner = caller.institutions[0] if caller.institutions else None
    elif owner is None and body.resident_id is not None:
        row = conn.execute(queries.RESIDENT_INSTITUTION, (body.resident_id,)).fetchone()
        owner = row[0] if row else None
    require_institution(caller, owner)
    if owner is not None and conn.execute(queries.EXISTING_INSTITUTIONS, ([owner],)).fetchone() == (
        None,
    ):
        raise HTTPException(404, f"no institution {owner}")
    if body.resident_id is not None:
        require_owner(conn, caller, body.resident_id)
    try:
        with conn.transaction():
            new = devices.add_device(
                conn,
                device_id=body.device_id,
                kind=body.kind,
                model=body.model,
                resident_id=body.resident_id,
            )
            devices.set_owner(conn, device_id=body.device_id, institution_id=owner)
    except RegistryError as exc:
        raise HTTPException(404 if str(exc).startswith("no ") else 409, str(exc)) from None
    _audit(
        conn,
        caller,
        request,
        "device.add",
        resident_id=body.resident_id,
        detail={"device_id": body.device_id, "institution_id": owner},
    )
    return {
        **_device(conn, caller, body.device_id),
        "mqtt_username": new.mqtt_username,
        "mqtt_password": new.mqtt_password,
    }


def _act(
    conn: Conn, caller: Principal, request: Request, device_id: str, action: str, **kwargs: Any
) -> Any:
    require_admin(caller)
    current = _device(conn, caller, device_id)  # 404 unless the caller owns the device
    target: int | None = kwargs.get("resident_id")
    # And the residents it serves or would serve: an own device is not bound to, taken from or cut
    # off (retired, rotated) a resident of another institution.
    for resident in sorted({current["resident_id"], target} - {None}):
        require_owner(conn, caller, resident)
    try:
        with conn.transaction():
            result = getattr(devices, action)(conn, device_id=device_id, **kwargs)
            if action == "bind" and current["institution_id"] is None:
                # A device of nobody's becomes the institution's of the resident it now serves.
                row = conn.execute(queries.RESIDENT_INSTITUTION, (target,)).fetchone()
                if row and row[0] is not None:
                    devices.set_owner(conn, device_id=device_id, institution_id=row[0])
    except RegistryError as exc:
        raise HTTPException(404 if str(exc).startswith("no ") else 409, str(exc)) from None
    _audit(
        conn,
        caller,
        request,
        f"device.{action}",
        resident_id=target or current["resident_id"],
        detail={"device_id": device_id},
    )
    return result


@router.post(
    "/devices/{device_id}/bind",
    response_model=DeviceRecord,
    responses={401: {}, 403: {}, 404: {}, 409: {}},
)
def bind(
    device_id: DeviceId, body: Binding, caller: Caller, conn: Conn, request: Request
) -> dict[str, Any]:
    """Bind the device to a resident from now (ending its earlier binding)."""
    _act(conn, caller, request, device_id, "bind", resident_id=body.resident_id)
    return _device(conn, caller, device_id)


@router.post(
    "/devices/{device_id}/unbind",
    response_model=DeviceRecord,
    responses={401: {}, 403: {}, 404: {}, 409: {}},
)
def unbind(device_id: DeviceId, caller: Caller, conn: Conn, request: Request) -> dict[str, Any]:
    _act(conn, caller, request, device_id, "unbind")
    return _device(conn, caller, device_id)


@router.post(
    "/devices/{device_id}/retire",
    response_model=DeviceRecord,
    responses={401: {}, 403: {}, 404: {}, 409: {}},
)
def retire(device_id: DeviceId, caller: Caller, conn: Conn, request: Request) -> dict[str, Any]:
    """Out of service for good: binding closed, broker login revoked, data kept."""
    _act(conn, caller, request, device_id, "retire")
    return _device(conn, caller, device_id)


@router.post(
    "/devices/{device_id}/rotate",
    response_model=Credentials,
    responses={401: {}, 403: {}, 404: {}, 409: {}},
)
def rotate(device_id: DeviceId, caller: Caller, conn: Conn, request: Request) -> dict[str, Any]:
    """A new broker password for the device (in this answer only)."""
    new = _act(conn, caller, request, device_id, "rotate_credentials")
    return {
        "device_id": device_id,
        "mqtt_username": new.mqtt_username,
        "mqtt_password": new.mqtt_password,
    }
