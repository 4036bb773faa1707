"""The audit trail: system administrators read all of it, an institution's administrators their own."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from psycopg.rows import dict_row
from pydantic import BaseModel, Field

from api import queries
from api.access import audit
from api.deps import NO_NUL, Caller, Conn, IdQuery, client_address

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str = Field(description="user:<id> or platform:<id>:<name>; never a username")
    actor_name: str = Field(description="the person's display name")
    action: str
    resident_id: int | None
    resident_ids: list[int] | None = None
    resource: str
    address: str | None
    outcome: str
    detail: dict[str, Any]


@router.get("", response_model=list[AuditEntry], responses={401: {}, 403: {}})
def audit_log(
    caller: Caller,
    conn: Conn,
    request: Request,
    resident_id: Annotated[
        IdQuery, Query(description="entries about this resident, lists that returned them too")
    ] = None,
    actor: Annotated[
        str | None, Query(max_length=200, pattern=NO_NUL, description="e.g. user:3")
    ] = None,
    action: Annotated[
        str | None, Query(max_length=100, pattern=NO_NUL, description="e.g. read.resident")
    ] = None,
    outcome: Annotated[
        str | None, Query(max_length=20, pattern=NO_NUL, description="ok, refused, failed")
    ] = None,
    since: Annotated[datetime | None, Query(description="from this moment (inclusive)")] = None,
    until: Annotated[datetime | None, Query(description="before this moment")] = None,
    before_id: Annotated[
        IdQuery, Query(description="the last id of the previous page: the next (older) page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[dict[str, Any]]:
    """Who read or changed which resident's data, who logged in and who was refused, newest first.

    System administrators see everything; an institution's administrators see what its people
    did and what anyone did with its residents."""
    if caller.role not in ("system_admin", "institution_admin"):
        raise HTTPException(403, "the audit log is for administrators")
    params = {
        "everyone": caller.role == "system_admin",
        "institutions": list(caller.institutions),
        "resident_id": resident_id,
        "actor": actor,
        "action": action,
        "outcome": outcome,
        "since": _aware(since),
        "until": _aware(until),
        "before_id": before_id,
        "limit": limit,
    }
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(queries.SELECT_AUDIT, params).fetchall()
    # Reading the trail is itself on the trail (who looked at whose accesses).
    audit(
        conn,
        caller,
        "read.audit",
        request.url.path,
        address=client_address(request),
        resident_id=resident_id,
        detail={
            "count": len(rows),
            **{k: str(v) for k, v in params.items() if v is not None and k in request.query_params},
        },
    )
    return rows


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment and moment.tzinfo is None else moment
