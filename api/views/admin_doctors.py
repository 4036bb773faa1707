"""Doctors and duty desks through the API: list, look up and add them (administrators; an
institution admin its own institution's)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from psycopg.rows import dict_row

from api import queries
from api.access import Principal
from api.deps import Caller, Conn, IdPath, IdQuery
from api.schemas.care import Doctor, NewDoctor
from api.views.admin_common import Limit, Offset, audit_request, refused
from api.views.guards import NOT_YOURS, require_admin, require_institution, scope
from care import service as care
from care.service import CareError

router = APIRouter()  # under /api/v1 with the "administration" tag, see api/views/admin.py


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
        raise refused(exc) from None
    audit_request(conn, caller, request, "doctor.add", detail={"doctor_id": doctor["id"]})
    return doctor
