"""Managing the care circle through the API: institutions, doctors, contracts, residents, thresholds
and escalation policies (devices: api/views/admin_devices.py; platforms: api/views/admin_platforms.py).

System admins manage everything; an institution admin manages its own institution's doctors, their
contracts and its residents; seeing a resident is not owning it (api/views/guards.py: ownership).
Contracted doctors set their residents' thresholds and SpO2 scale. Domain rules live in care/ and
devices/; this module checks who may ask, turns refusals into 4xx answers and audits every change
(and every read of resident data).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal, Self

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from psycopg.rows import dict_row
from pydantic import BaseModel, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from api import queries
from api.access import Principal, audit
from api.deps import MAX_ID, NO_NUL, Caller, Conn, IdPath, IdQuery, client_address
from api.views import admin_devices, admin_platforms
from api.views.guards import (
    NOT_OWNER,
    NOT_YOURS,
    is_contracted_doctor,
    owns_resident,
    require_admin,
    require_institution,
    require_owner,
    scope,
    see_resident,
)
from care import service as care
from care.service import CareError, ThresholdError
from devices import service as devices
from devices.service import DuplicateArchive, EmergencyContact, RegistryError

router = APIRouter(prefix="/api/v1", tags=["administration"])
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]
Phone = Annotated[str, Field(min_length=1, max_length=40, pattern=NO_NUL)]


def _refused(exc: Exception) -> HTTPException:
    return HTTPException(409, str(exc))


ARCHIVE_TAKEN = "this archive number cannot be used: check it against the resident's documents"


def _archive_refused(conn: Conn, caller: Principal, exc: DuplicateArchive) -> HTTPException:
    """409 for an archive number in use: naming the holder only to a caller who may see them, so
    that probing numbers does not tell which belong to another institution's residents."""
    row = conn.execute(
        queries.ARCHIVE_HOLDER, {**caller.visibility(), "archive_id": exc.archive_id}
    ).fetchone()
    if row is None:
        return HTTPException(409, ARCHIVE_TAKEN)
    return HTTPException(
        409, f"archive number {exc.archive_id} already belongs to resident {row[0]}"
    )


def _audit(conn: Conn, caller: Principal, request: Request, action: str, **kwargs: Any) -> None:
    audit(conn, caller, action, request.url.path, address=client_address(request), **kwargs)


# --- institutions ---------------------------------------------------------------------------


class NewInstitution(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    kind: Literal[
        "community_health_centre",
        "township_hospital",
        "care_home",
        "care_home_medical_room",
        "partner_hospital",
        "duty_desk",
    ]
    phone: str | None = Field(default=None, max_length=40, pattern=NO_NUL)


class Institution(BaseModel):
    id: int
    name: str
    kind: str
    phone: str | None


class CreatedInstitution(Institution):
    created_at: datetime
    duty_desk_id: int | None = None


@router.get("/institutions", response_model=list[Institution], responses={401: {}, 403: {}})
def institutions(caller: Caller, conn: Conn) -> list[dict[str, Any]]:
    """Every institution (names and kinds only)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(queries.LIST_INSTITUTIONS).fetchall()


@router.post(
    "/institutions",
    status_code=201,
    response_model=CreatedInstitution,
    responses={401: {}, 403: {}, 409: {}},
)
def add_institution(
    body: NewInstitution, caller: Caller, conn: Conn, request: Request
) -> dict[str, Any]:
    """A new institution with its duty desk (system administrators only)."""
    require_admin(caller, system_only=True)
    try:
        row = care.add_institution(conn, name=body.name, kind=body.kind, phone=body.phone)
    except CareError as exc:
        raise _refused(exc) from None
    _audit(conn, caller, request, "institution.add", detail={"institution_id": row["id"]})
    return row


# --- doctors --------------------------------------------------------------------------------


class NewDoctor(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=NO_NUL)
    institution_id: int = Field(ge=1, le=MAX_ID)
    team: str | None = Field(default=None, max_length=100, pattern=NO_NUL)
    phone: str | None = Field(default=None, max_length=40, pattern=NO_NUL)
    email: str | None = Field(default=None, max_length=200, pattern=NO_NUL)


class Doctor(BaseModel):
    id: int
    name: str
    role: str
    institution_id: int | None
    team: str | None
    phone: str | None
    email: str | None
    active: bool = True


def _doctors(conn: Conn, caller: Principal, **filters: Any) -> list[dict[str, Any]]:
    params = {
        **scope(caller),
        "doctor_id": None,
        "institution_id": None,
        "role": None,
        "limit": 1000,
        "offset": 0,
    }
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(queries.LIST_DOCTORS, {**params, **filters}).fetchall()


@router.get("/doctors", response_model=list[Doctor], responses={401: {}, 403: {}})
def list_doctors(
    caller: Caller,
    conn: Conn,
    institution_id: IdQuery = None,
    role: Literal["doctor", "duty_desk"] | None = None,
    limit: Limit = 200,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """Doctors and duty desks (an institution admin: its own institution's)."""
    require_admin(caller)
    return _doctors(
        conn, caller, institution_id=institution_id, role=role, limit=limit, offset=offset
    )


@router.get("/doctors/{doctor_id}", response_model=Doctor, responses={401: {}, 403: {}, 404: {}})
def get_doctor(doctor_id: IdPath, caller: Caller, conn: Conn) -> dict[str, Any]:
    require_admin(caller)
    found = _doctors(conn, caller, doctor_id=doctor_id)
    if not found:
        raise HTTPException(404, f"no doctor {doctor_id} {NOT_YOURS}")
    return found[0]


@router.post(
    "/doctors", status_code=201, response_model=Doctor, responses={401: {}, 403: {}, 409: {}}
)
def add_doctor(body: NewDoctor, caller: Caller, conn: Conn, request: Request) -> dict[str, Any]:
    require_admin(caller)
    require_institution(caller, body.institution_id)
    try:
        doctor = care.add_doctor(
            conn,
            name=body.name,
            institution_id=body.institution_id,
            team=body.team,
            phone=body.phone,
            email=body.email,
        )
    except CareError as exc:
        raise _refused(exc) from None
    _audit(conn, caller, request, "doctor.add", detail={"doctor_id": doctor["id"]})
    return doctor


# --- contracts (家庭医生签约) ------------------------------------------------------------------


class NewContract(BaseModel):
    resident_id: int = Field(ge=1, le=MAX_ID)
    doctor_id: int = Field(ge=1, le=MAX_ID)


class Contract(BaseModel):
    id: int
    resident_id: int
    doctor_id: int
    valid_from: datetime
    valid_to: datetime | None


class ContractListed(Contract):
    resident_name: str
    doctor_name: str
    active: bool


class EndContract(BaseModel):
    valid_to: datetime | None = Field(default=None, description="default: now")


def _contracts(conn: Conn, caller: Principal, **filters: Any) -> list[dict[str, Any]]:
    params = {
        **scope(caller),
        "contract_id": None,
        "resident_id": None,
        "doctor_id": None,
        "active": None,
        "limit": 1000,
        "offset": 0,
    }
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(queries.LIST_CONTRACTS, {**params, **filters}).fetchall()


@router.get("/contracts", response_model=list[ContractListed], responses={401: {}, 403: {}})
def list_contracts(
    caller: Caller,
    conn: Conn,
    request: Request,
    resident_id: IdQuery = None,
    doctor_id: IdQuery = None,
    active: bool | None = None,
    limit: Limit = 200,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """Contracts of the institution's doctors or residents (all for system admins)."""
    require_admin(caller)
    rows = _contracts(
        conn,
        caller,
        resident_id=resident_id,
        doctor_id=doctor_id,
        active=active,
        limit=limit,
        offset=offset,
    )
    _audit(
        conn,
        caller,
        request,
        "read.contracts",
        resident_id=resident_id,
        resident_ids=[r["resident_id"] for r in rows],
        detail={"count": len(rows)},
    )
    return rows


def _contract(conn: Conn, caller: Principal, contract_id: int) -> dict[str, Any]:
    found = _contracts(conn, caller, contract_id=contract_id)
    if not found:
        raise HTTPException(404, f"no contract {contract_id} {NOT_YOURS}")
    return found[0]


@router.get(
    "/contracts/{contract_id}",
    response_model=ContractListed,
    responses={401: {}, 403: {}, 404: {}},
)
def get_contract(
    contract_id: IdPath, caller: Caller, conn: Conn, request: Request
) -> dict[str, Any]:
    require_admin(caller)
    contract = _contract(conn, caller, contract_id)
    _audit(conn, caller, request, "read.contract", resident_id=contract["resident_id"])
    return contract


@router.post(
    "/contracts",
    status_code=201,
    response_model=Contract,
    responses={401: {}, 403: {}, 404: {}, 409: {}},
)
def add_contract(body: NewContract, caller: Caller, conn: Conn, request: Request) -> dict[str, Any]:
    """家庭医生签约: sign a resident with a doctor from now."""
    require_admin(caller)
    row = conn.execute(queries.DOCTOR_INSTITUTION, (body.doctor_id,)).fetchone()
    if row is None:
        raise HTTPException(404, f"no doctor {body.doctor_id}")
    require_institution(caller, row[0])
    # Its own doctor is not enough: signing gives the doctor the resident's data and alerts.
    require_owner(conn, caller, body.resident_id)
    try:
        contract = care.add_contract(conn, resident_id=body.resident_id, doctor_id=body.doctor_id)
    except CareError as exc:
        raise _refused(exc) from None
    _audit(
        conn,
        caller,
        request,
        "contract.add",
        resident_id=body.resident_id,
        detail={"contract_id": contract["id"], "doctor_id": body.doctor_id},
    )
    return contract


@router.post(
    "/contracts/{contract_id}/end",
    response_model=Contract,
    responses={401: {}, 403: {}, 404: {}, 409: {}},
)
def end_contract(
    contract_id: IdPath, body: EndContract, caller: Caller, conn: Conn, request: Request
) -> dict[str, Any]:
    """End a contract (now, or at `valid_to`): the doctor then no longer sees the resident."""
    require_admin(caller)
    contract = _contract(conn, caller, contract_id)
    # Ending it changes who is alerted for the resident: the resident's institution decides.
    require_owner(conn, caller, contract["resident_id"])
    try:
        ended = care.end_contract(conn, contract_id=contract_id, valid_to=body.valid_to)
    except CareError as exc:
        raise _refused(exc) from None
    _audit(
        conn,
        caller,
        request,
        "contract.end",
        resident_id=contract["resident_id"],
        detail={"contract_id": contract_id, "valid_to": ended["valid_to"].isoformat()},
    )
    return ended


# --- residents ------------------------------------------------------------------------------


class Contact(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=NO_NUL)
    phone: Phone
    relation: str | None = Field(default=None, max_length=40, pattern=NO_NUL)


class ListedContact(Contact):
    priority: int


class NewResident(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=NO_NUL)
    archive_id: str | None = Field(
        default=None, pattern=r"^[0-9]{17}$", description="健康档案编号, 17 digits"
    )
    birth_date: date | None = None
    gender: Literal["female", "male", "other", "unknown"] | None = None
    address: str | None = Field(default=None, max_length=300, pattern=NO_NUL)
    institution_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    spo2_scale: Literal[1, 2] = 1
    emergency_contacts: list[Contact] = Field(default_factory=list, max_length=10)


class ResidentChange(BaseModel):
    """Only the fields sent are changed; `emergency_contacts` replaces the list (in priority order).

    Name, SpO2 scale and contacts can be changed but not cleared (null is refused)."""

    # SkipJsonSchema: the schema says what is accepted (no null); the default means "not sent".
    name: (
        Annotated[str, Field(min_length=1, max_length=100, pattern=NO_NUL)] | SkipJsonSchema[None]
    ) = None
    archive_id: str | None = Field(default=None, pattern=r"^[0-9]{17}$")
    birth_date: date | None = None
    gender: Literal["female", "male", "other", "unknown"] | None = None
    address: str | None = Field(default=None, max_length=300, pattern=NO_NUL)
    spo2_scale: Literal[1, 2] | SkipJsonSchema[None] = Field(
        default=None, description="NEWS2 SpO2 scale 2 only for hypercapnic respiratory failure"
    )
    institution_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    emergency_contacts: Annotated[list[Contact], Field(max_length=10)] | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _not_cleared(self) -> Self:
        for name in ("name", "spo2_scale", "emergency_contacts"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class ResidentRecord(BaseModel):
    id: int
    name: str
    archive_id: str | None
    birth_date: date | None
    gender: str | None
    address: str | None
    spo2_scale: int
    institution_id: int | None
    emergency_contacts: list[ListedContact]


@router.post(
    "/residents",
    status_code=201,
    response_model=ResidentRecord,
    responses={401: {}, 403: {}, 409: {}},
)
def add_resident(body: NewResident, caller: Caller, conn: Conn, request: Request) -> dict[str, Any]:
    require_admin(caller)
    institution = body.institution_id or (caller.institutions[0] if caller.institutions else None)
    require_institution(caller, institution)
    try:
        with conn.transaction():
            resident = devices.add_resident(
                conn,
                name=body.name,
                archive_id=body.archive_id,
                birth_date=body.birth_date,
                gender=body.gender,
                address=body.address,
                spo2_scale=body.spo2_scale,
                contacts=[
                    EmergencyContact(c.name, c.phone, c.relation, priority)
                    for priority, c in enumerate(body.emergency_contacts, start=1)
                ],
            )
            if institution is not None:
                care.set_resident_institution(
                    conn, resident_id=resident.id, institution_id=institution
                )
    except DuplicateArchive as exc:
        raise _archive_refused(conn, caller, exc) from None
    except (RegistryError, CareError) as exc:
        raise _refused(exc) from None
    _audit(conn, caller, request, "resident.add", resident_id=resident.id)
    return care.resident_record(conn, resident.id)


# What a doctor may change about their own resident; the rest needs an administrator.
DOCTOR_FIELDS = {"spo2_scale"}


@router.patch(
    "/residents/{resident_id}",
    response_model=ResidentRecord,
    responses={401: {}, 403: {}, 404: {}, 409: {}},
)
def update_resident(
    resident_id: IdPath, body: ResidentChange, caller: Caller, conn: Conn, request: Request
) -> dict[str, Any]:
    """Change a resident's record: its institution's administrators anything, its contracted
    doctor the SpO2 scale."""
    see_resident(conn, caller, resident_id)
    sent = body.model_fields_set
    if not caller.can_write:
        raise HTTPException(403, "this credential may read but not change residents")
    if caller.role == "doctor" and sent <= DOCTOR_FIELDS:
        if not is_contracted_doctor(conn, caller, resident_id):
            raise HTTPException(403, "only the resident's contracted doctor may change this")
    elif caller.role not in ("system_admin", "institution_admin"):
        raise HTTPException(403, "this needs an administrator of the institution concerned")
    elif not owns_resident(conn, caller, resident_id):
        raise HTTPException(403, NOT_OWNER)
    if "institution_id" in sent:
        require_institution(caller, body.institution_id)
    changes = {k: getattr(body, k) for k in sent if k != "emergency_contacts"}
    contacts = (
        [c.model_dump() for c in body.emergency_contacts]
        if body.emergency_contacts is not None
        else None
    )
    try:
        record = care.update_resident(
            conn, resident_id=resident_id, changes=changes, contacts=contacts
        )
    except DuplicateArchive as exc:
        raise _archive_refused(conn, caller, exc) from None
    except CareError as exc:
        raise _refused(exc) from None
    _audit(
        conn,
        caller,
        request,
        "resident.update",
        resident_id=resident_id,
        detail={"fields": sorted(sent)},  # which, not the values: the trail holds no addresses
    )
    return record


@router.get(
    "/residents/{resident_id}/contacts",
    response_model=list[ListedContact],
    responses={401: {}, 404: {}},
)
def contacts(
    resident_id: IdPath, caller: Caller, conn: Conn, request: Request
) -> list[dict[str, Any]]:
    """The resident's emergency contacts, in the order an escalation calls them."""
    see_resident(conn, caller, resident_id)
    rows: list[dict[str, Any]] = care.resident_record(conn, resident_id)["emergency_contacts"]
    _audit(conn, caller, request, "read.contacts", resident_id=resident_id)
    return rows


# --- thresholds -----------------------------------------------------------------------------


class Threshold(BaseModel):
    # Broad bounds for the schema; the metric's plausible range (ingest/metrics.py) is checked
    # after authorisation, as a limit no reading can cross would silence the rule (422).
    low: float | None = Field(default=None, ge=-1000, le=100_000)
    high: float | None = Field(default=None, ge=-1000, le=100_000)


class StoredThreshold(Threshold):
    resident_id: int
    metric: str
    set_by: str | None
    set_at: datetime


@router.put(
    "/residents/{resident_id}/thresholds/{metric}",
    response_model=StoredThreshold,
    responses={401: {}, 403: {}, 404: {}, 409: {}},
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
    """The doctor's own thresholds for this resident (a hypertensive resident's normal is not the
    textbook's): its contracted doctor(s) and its owning administrators only. Each limit must be
    one a reading can cross (inside the metric's plausible range), low below high; else 422."""
    see_resident(conn, caller, resident_id)
    if not caller.can_write:
        raise HTTPException(403, "this credential may read but not change thresholds")
    # A threshold can silence a resident's alerts: its doctor and its owners only, not everyone
    # who sees it (duty desks, a doctor through a cooperation agreement, another institution).
    if not (
        is_contracted_doctor(conn, caller, resident_id) or owns_resident(conn, caller, resident_id)
    ):
        raise HTTPException(
            403,
            "only the resident's contracted doctor or an administrator of its institution may "
            "change its thresholds",
        )
    asked = {"metric": metric, "low": body.low, "high": body.high}
    try:
        row = care.set_threshold(
            conn,
            resident_id=resident_id,
            metric=metric,
            low=body.low,
            high=body.high,
            set_by=caller.ref,
        )
    except ThresholdError as exc:
        # An attempt to move a limit out of reach is worth knowing about, too.
        _audit(
            conn,
            caller,
            request,
            "threshold.set",
            resident_id=resident_id,
            outcome="refused",
            detail={**asked, "reason": str(exc)},
        )
        # Shaped as FastAPI's own validation errors, which the schema documents for 422.
        loc = ("body", exc.side) if exc.side else ("body",)
        raise RequestValidationError(
            [{"loc": loc, "msg": str(exc), "type": "value_error"}]
        ) from None
    except CareError as exc:
        raise _refused(exc) from None
    _audit(
        conn,
        caller,
        request,
        "threshold.set",
        resident_id=resident_id,
        detail={**asked, "previous": row["previous"]},
    )
    return row


# --- escalation policies --------------------------------------------------------------------


class Tier(BaseModel):
    after_s: int = Field(ge=0, le=7 * 24 * 3600)
    notify: list[
        Literal["contracted_doctor", "team", "duty_desk", "partner_duty_desk", "emergency_contacts"]
    ] = Field(min_length=1)


class Policy(BaseModel):
    institution_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    reminder_every_s: int | None = Field(default=None, ge=30, le=24 * 3600)
    tiers: list[Tier] = Field(min_length=1, max_length=10)


class StoredPolicy(BaseModel):
    id: int
    institution_id: int | None
    severity: str
    reminder_every_s: int | None
    tiers: list[Tier]


@router.get("/policies", response_model=list[StoredPolicy], responses={401: {}, 403: {}})
def list_policies(
    caller: Caller, conn: Conn, institution_id: IdQuery = None
) -> list[dict[str, Any]]:
    """The default escalation policies (institution null) and the institution's own."""
    require_admin(caller)
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            queries.LIST_POLICIES, {**scope(caller), "institution_id": institution_id}
        ).fetchall()


@router.put(
    "/policies/{severity}", response_model=StoredPolicy, responses={401: {}, 403: {}, 409: {}}
)
def set_policy(
    severity: Literal["info", "warning", "critical"],
    body: Policy,
    caller: Caller,
    conn: Conn,
    request: Request,
) -> dict[str, Any]:
    """The escalation policy of an institution (or the default one) for a severity."""
    require_admin(caller, system_only=body.institution_id is None)
    require_institution(caller, body.institution_id)
    tiers = [t.model_dump() for t in body.tiers]
    try:
        policy = care.set_policy(
            conn,
            institution_id=body.institution_id,
            severity=severity,
            tiers=tiers,
            reminder_every_s=body.reminder_every_s,
        )
    except CareError as exc:
        raise _refused(exc) from None
    _audit(
        conn,
        caller,
        request,
        "policy.set",
        detail={
            "institution_id": body.institution_id,
            "severity": severity,
            "reminder_every_s": body.reminder_every_s,
            "tiers": tiers,
        },
    )
    return policy


router.include_router(admin_devices.router)
router.include_router(admin_platforms.router)
