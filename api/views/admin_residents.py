"""Residents' records through the API: add a resident, change its record, read its emergency
contacts (reading residents and their data: api/views/residents.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request

from api.deps import Caller, Conn, IdPath
from api.schemas.residents import ListedContact, NewResident, ResidentChange, ResidentRecord
from api.views.admin_common import archive_refused, audit_request, refused
from api.views.guards import (
    NOT_OWNER,
    is_contracted_doctor,
    owns_resident,
    require_admin,
    require_institution,
    see_resident,
)
from care import service as care
from care.service import CareError
from devices import service as devices
from devices.service import DuplicateArchive, EmergencyContact, RegistryError

router = APIRouter()  # under /api/v1 with the "administration" tag, see api/views/admin.py


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
        raise archive_refused(conn, caller, exc) from None
    except (RegistryError, CareError) as exc:
        raise refused(exc) from None
    audit_request(conn, caller, request, "resident.add", resident_id=resident.id)
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
        raise archive_refused(conn, caller, exc) from None
    except CareError as exc:
        raise refused(exc) from None
    audit_request(
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
    audit_request(conn, caller, request, "read.contacts", resident_id=resident_id)
    return rows
