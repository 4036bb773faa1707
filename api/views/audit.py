"""The audit trail, for administrators."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from psycopg.rows import dict_row
from pydantic import BaseModel

from api import queries
from api.deps import Caller, Conn, IdQuery

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    resident_id: int | None
    resource: str
    address: str | None
    outcome: str
    detail: dict[str, Any]


@router.get("", response_model=list[AuditEntry], responses={401: {}, 403: {}})
def audit_log(
    caller: Caller,
    conn: Conn,
    resident_id: IdQuery = None,
    actor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[dict[str, Any]]:
    """Who read or changed which resident's data, newest first (system administrators)."""
    if caller.role != "system_admin":
        raise HTTPException(403, "the audit log is for system administrators")
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            queries.SELECT_AUDIT, {"resident_id": resident_id, "actor": actor, "limit": limit}
        ).fetchall()
