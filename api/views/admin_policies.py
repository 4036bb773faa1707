"""Escalation policies through the API: the default ones and an institution's own, per severity."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from psycopg.rows import dict_row

from alerts.models import Severity
from api import queries
from api.deps import Caller, Conn, IdQuery
from api.schemas.care import Policy, StoredPolicy
from api.views.admin_common import audit_request, refused
from api.views.guards import require_admin, require_institution, scope
from care import service as care
from care.service import CareError

router = APIRouter()  # under /api/v1 with the "administration" tag, see api/views/admin.py


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
    severity: Severity,
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
        raise refused(exc) from None
    audit_request(
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
