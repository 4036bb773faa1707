"""Managing the care circle and the devices through the API (administrators; thresholds also doctors).

System admins manage everything; an institution admin manages its own institution's doctors, their
contracts and the devices of the residents it can see. Domain rules live in care/ and devices/; this
module only checks who may ask and turns refusals into 4xx answers.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Request
from pydantic import BaseModel, Field

from api import queries
from api.access import Principal, audit
from api.deps import MAX_ID, Caller, Conn, IdPath, client_address
from care import service as care
from care.service import CareError
from devices import service as devices
from devices.models import DEVICE_KINDS
from devices.service import RegistryError

router = APIRouter(prefix="/api/v1", tags=["administration"])
# The device kinds as an enum, so the OpenAPI schema lists them.
DeviceKind = StrEnum("DeviceKind", {key: key for key in DEVICE_KINDS})  # type: ignore[misc]
DeviceId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


def _admin(caller: Principal, institution_id: int | None = None) -> None:
    if caller.role == "system_admin":
        return
    if (
        caller.role == "institution_admin"
        and caller.can_write
        and (institution_id is None or institution_id in caller.institutions)
    ):
        return
    raise HTTPException(403, "this needs an administrator of the institution concerned")


def _see(conn: Conn, caller: Principal, resident_id: int) -> None:
    row = conn.execute(
        queries.GET_RESIDENT, {**caller.visibility(), "resident_id": resident_id}
    ).fetchone()
    if row is None:
        raise HTTPException(404, "no such resident (or not one of yours)")


def _refused(exc: Exception) -> HTTPException:
    return HTTPException(409, str(exc))


class NewInstitution(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    kind: Literal[
        "community_health_centre",
        "township_hospital",
        "care_home",
        "care_home_medical_room",
        "partner_hospital",
        "duty_desk",
    ]
    phone: str | None = Field(default=None, max_length=40)


class NewDoctor(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    institution_id: int = Field(ge=1, le=MAX_ID)
    team: str | None = Field(default=None, max_length=100)
    phone: str | None = Field(default=None, max_length=40)
    email: str | None = Field(default=None, max_length=200)


class NewContract(BaseModel):
    resident_id: int = Field(ge=1, le=MAX_ID)
    doctor_id: int = Field(ge=1, le=MAX_ID)


class NewResident(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    archive_id: str | None = Field(
        default=None, pattern=r"^[0-9]{17}$", description="健康档案编号, 17 digits"
    )
    birth_date: date | None = None
    gender: Literal["female", "male", "other", "unknown"] | None = None
    address: str | None = Field(default=None, max_length=300)
    institution_id: int | None = Field(default=None, ge=1, le=MAX_ID)


class NewDevice(BaseModel):
    device_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    kind: DeviceKind
    resident_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    model: str | None = Field(default=None, max_length=100)


class Binding(BaseModel):
    resident_id: int = Field(ge=1, le=MAX_ID)


class Threshold(BaseModel):
    low: float | None = Field(default=None, ge=-1000, le=100_000)
    high: float | None = Field(default=None, ge=-1000, le=100_000)


class Tier(BaseModel):
    after_s: int = Field(ge=0, le=7 * 24 * 3600)
    notify: list[
        Literal["contracted_doctor", "team", "duty_desk", "partner_duty_desk", "emergency_contacts"]
    ] = Field(min_length=1)


class Policy(BaseModel):
    institution_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    reminder_every_s: int | None = Field(default=None, ge=30, le=24 * 3600)
    tiers: list[Tier] = Field(min_length=1, max_length=10)


@router.get("/institutions", responses={401: {}})
def institutions(caller: Caller, conn: Conn) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT id, name, kind, phone FROM institution ORDER BY id").fetchall()
    return [dict(zip(("id", "name", "kind", "phone"), r, strict=True)) for r in rows]


@router.post("/institutions", status_code=201, responses={401: {}, 403: {}, 409: {}})
def add_institution(body: NewInstitution, caller: Caller, conn: Conn) -> dict[str, Any]:
    _admin(caller)
    try:
        return care.add_institution(conn, name=body.name, kind=body.kind, phone=body.phone)
    except CareError as exc:
        raise _refused(exc) from None


@router.post("/doctors", status_code=201, responses={401: {}, 403: {}, 409: {}})
def add_doctor(body: NewDoctor, caller: Caller, conn: Conn) -> dict[str, Any]:
    _admin(caller, body.institution_id)
    try:
        return care.add_doctor(
            conn,
            name=body.name,
            institution_id=body.institution_id,
            team=body.team,
            phone=body.phone,
            email=body.email,
        )
    except CareError as exc:
        raise _refused(exc) from None


@router.post("/contracts", status_code=201, responses={401: {}, 403: {}, 404: {}, 409: {}})
def add_contract(body: NewContract, caller: Caller, conn: Conn, request: Request) -> dict[str, Any]:
    """家庭医生签约: sign a resident with a doctor from now."""
    row = conn.execute(
        "SELECT institution_id FROM doctor WHERE id = %s", (body.doctor_id,)
    ).fetchone()
    _admin(caller, row[0] if row else None)
    if row is None:
        raise HTTPException(404, f"no doctor {body.doctor_id}")
    if caller.role != "system_admin":
        _see(conn, caller, body.resident_id)
    try:
        contract = care.add_contract(conn, resident_id=body.resident_id, doctor_id=body.doctor_id)
    except CareError as exc:
        raise _refused(exc) from None
    audit(
        conn,
        caller,
        "contract.add",
        request.url.path,
        address=client_address(request),
        resident_id=body.resident_id,
    )
    return contract


@router.post("/residents", status_code=201, responses={401: {}, 403: {}, 409: {}})
def add_resident(body: NewResident, caller: Caller, conn: Conn, request: Request) -> dict[str, Any]:
    institution = body.institution_id or (caller.institutions[0] if caller.institutions else None)
    _admin(caller, institution)
    try:
        resident = devices.add_resident(
            conn,
            name=body.name,
            archive_id=body.archive_id,
            birth_date=body.birth_date,
            gender=body.gender,
            address=body.address,
        )
        if institution is not None:
            care.set_resident_institution(conn, resident_id=resident.id, institution_id=institution)
    except (RegistryError, CareError) as exc:
        raise _refused(exc) from None
    audit(
        conn,
        caller,
        "resident.add",
        request.url.path,
        address=client_address(request),
        resident_id=resident.id,
    )
    return {**asdict(resident), "institution_id": institution}


@router.post("/devices", status_code=201, responses={401: {}, 403: {}, 404: {}, 409: {}})
def add_device(body: NewDevice, caller: Caller, conn: Conn, request: Request) -> dict[str, Any]:
    """Register a device; its broker password is in this answer only."""
    _admin(caller)
    if body.resident_id is not None and caller.role != "system_admin":
        _see(conn, caller, body.resident_id)
    try:
        new = devices.add_device(
            conn,
            device_id=body.device_id,
            kind=body.kind,
            model=body.model,
            resident_id=body.resident_id,
        )
    except RegistryError as exc:
        raise _refused(exc) from None
    audit(
        conn,
        caller,
        "device.add",
        request.url.path,
        address=client_address(request),
        resident_id=body.resident_id,
    )
    return {
        **asdict(new.device),
        "mqtt_username": new.mqtt_username,
        "mqtt_password": new.mqtt_password,
    }


def _device_action(
    conn: Conn, caller: Principal, request: Request, device_id: str, action: str, **kwargs: Any
) -> dict[str, Any]:
    _admin(caller)
    try:
        current = devices.get_device(conn, device_id)
        for resident in {current.resident_id, kwargs.get("resident_id")} - {None}:
            if caller.role != "system_admin":
                _see(conn, caller, resident)  # type: ignore[arg-type]
        result = getattr(devices, action)(conn, device_id=device_id, **kwargs)
    except RegistryError as exc:
        if str(exc).startswith("no device"):
            raise HTTPException(404, str(exc)) from None
        raise _refused(exc) from None
    audit(
        conn,
        caller,
        f"device.{action}",
        request.url.path,
        address=client_address(request),
        resident_id=kwargs.get("resident_id") or current.resident_id,
    )
    if action == "rotate_credentials":
        return {
            "device_id": device_id,
            "mqtt_username": result.mqtt_username,
            "mqtt_password": result.mqtt_password,
        }
    return asdict(result)


@router.post("/devices/{device_id}/bind", responses={401: {}, 403: {}, 404: {}, 409: {}})
def bind(
    device_id: DeviceId, body: Binding, caller: Caller, conn: Conn, request: Request
) -> dict[str, Any]:
    return _device_action(conn, caller, request, device_id, "bind", resident_id=body.resident_id)


@router.post("/devices/{device_id}/unbind", responses={401: {}, 403: {}, 404: {}, 409: {}})
def unbind(device_id: DeviceId, caller: Caller, conn: Conn, request: Request) -> dict[str, Any]:
    return _device_action(conn, caller, request, device_id, "unbind")


@router.post("/devices/{device_id}/retire", responses={401: {}, 403: {}, 404: {}, 409: {}})
def retire(device_id: DeviceId, caller: Caller, conn: Conn, request: Request) -> dict[str, Any]:
    return _device_action(conn, caller, request, device_id, "retire")


@router.post("/devices/{device_id}/rotate", responses={401: {}, 403: {}, 404: {}, 409: {}})
def rotate(device_id: DeviceId, caller: Caller, conn: Conn, request: Request) -> dict[str, Any]:
    """A new broker password for the device (in this answer only)."""
    return _device_action(conn, caller, request, device_id, "rotate_credentials")


@router.put(
    "/residents/{resident_id}/thresholds/{metric}", responses={401: {}, 403: {}, 404: {}, 409: {}}
)
def set_threshold(
    resident_id: IdPath,
    metric: Literal[
        "heart_rate",
        "spo2",
        "systolic_bp",
        "diastolic_bp",
        "resp_rate",
        "body_temp",
        "blood_glucose",
        "steps",
        "weight",
    ],
    body: Threshold,
    caller: Caller,
    conn: Conn,
    request: Request,
) -> dict[str, Any]:
    """The doctor's own thresholds for this resident (a hypertensive resident's normal is not the textbook's)."""
    _see(conn, caller, resident_id)
    if not caller.can_write:
        raise HTTPException(403, "this credential may read but not change thresholds")
    try:
        row = care.set_threshold(
            conn,
            resident_id=resident_id,
            metric=metric,
            low=body.low,
            high=body.high,
            set_by=caller.actor,
        )
    except CareError as exc:
        raise _refused(exc) from None
    audit(
        conn,
        caller,
        "threshold.set",
        request.url.path,
        address=client_address(request),
        resident_id=resident_id,
        detail={"metric": metric, "low": body.low, "high": body.high},
    )
    return row


@router.put("/policies/{severity}", responses={401: {}, 403: {}, 409: {}})
def set_policy(
    severity: Literal["info", "warning", "critical"], body: Policy, caller: Caller, conn: Conn
) -> dict[str, Any]:
    """The escalation policy of an institution (or the default one) for a severity."""
    _admin(caller, body.institution_id)
    if body.institution_id is None and caller.role != "system_admin":
        raise HTTPException(403, "only a system administrator changes the default policy")
    try:
        return care.set_policy(
            conn,
            institution_id=body.institution_id,
            severity=severity,
            tiers=[t.model_dump() for t in body.tiers],
            reminder_every_s=body.reminder_every_s,
        )
    except CareError as exc:
        raise _refused(exc) from None
