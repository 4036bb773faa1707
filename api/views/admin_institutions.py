"""Institutions through the API: list them, add one with its duty desk (system administrators)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from psycopg.rows import dict_row

from api import queries
from api.deps import Caller, Conn
from api.schemas.care import CreatedInstitution, Institution, NewInstitution
from api.views.admin_common import audit_request, refused
from api.views.guards import require_admin
from care import service as care
from care.service import CareError

router = APIRouter()  # under /api/v1 with the "administration" tag, see api/views/admin.py


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
        raise refused(exc) from None
    audit_request(conn, caller, request, "institution.add", detail={"institution_id": row["id"]})
    return row
