"""Contracts (家庭医生签约) through the API: list, look up, sign and end them; signing and ending
need the resident's institution, as they decide which doctor sees the resident and gets its alerts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from psycopg.rows import dict_row

from api import queries
from api.access import Principal
from api.deps import Caller, Conn, IdPath, IdQuery
from api.schemas.care import Contract, ContractListed, EndContract, NewContract
from api.views.admin_common import Limit, Offset, audit_request, refused
from api.views.guards import NOT_YOURS, require_admin, require_institution, require_owner, scope
from care import service as care
from care.service import CareError

router = APIRouter()  # under /api/v1 with the "administration" tag, see api/views/admin.py


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
    audit_request(
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
    audit_request(conn, caller, request, "read.contract", resident_id=contract["resident_id"])
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
        raise refused(exc) from None
    audit_request(
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
        raise refused(exc) from None
    audit_request(
        conn,
        caller,
        request,
        "contract.end",
        resident_id=contract["resident_id"],
        detail={"contract_id": contract_id, "valid_to": ended["valid_to"].isoformat()},
    )
    return ended
