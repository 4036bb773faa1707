"""The alert queue of the caller's residents, and acting on an alert (people only, not platforms)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from psycopg.rows import dict_row
from pydantic import BaseModel, Field, StringConstraints

from alerts import lifecycle, transitions
from alerts.models import AlertError, Severity
from api import cursor, queries
from api.access import Principal, audit
from api.deps import Caller, Conn, IdPath, IdQuery, client_address
from api.views import guards

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])
NOT_FOUND = "no such alert (or not one of your residents')"


class AlertSummary(BaseModel):
    id: int
    resident_id: int | None = Field(
        description="null: an event from a device bound to nobody (see device_id); shown to "
        "system admins and the duty desks notified of it"
    )
    resident_name: str | None = None
    device_id: str | None = Field(default=None, description="the device that raised it, if one did")
    rule: str
    severity: str
    state: str
    title: str
    opened_at: datetime
    last_seen_at: datetime
    occurrences: int
    acknowledged_by: str | None
    acknowledged_by_name: str | None = Field(
        default=None, description="who is handling it, by the name people know them by"
    )
    acknowledged_at: datetime | None


class Transition(BaseModel):
    at: datetime
    actor: str
    actor_name: str
    action: str
    to_state: str
    severity: str
    note: str | None


class AlertDetail(BaseModel):
    id: int
    resident_id: int | None
    rule: str
    severity: str
    state: str
    title: str
    detail: dict[str, Any]
    opened_at: datetime
    acknowledged_by: str | None
    acknowledged_by_name: str | None
    resolved_by: str | None
    resolved_by_name: str | None
    resolution_note: str | None
    timeline: list[Transition]


# Notes are stripped first: a note of only spaces says nothing, and is refused as invalid (422).
NoteText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class Note(BaseModel):
    note: str | None = Field(default=None, max_length=2000)


class ResolveBody(BaseModel):
    note: NoteText = Field(description="what was done")


class CommentBody(BaseModel):
    note: NoteText = Field(description="e.g. 'called the daughter, she is on her way'")


class SnoozeBody(BaseModel):
    minutes: int = Field(ge=1, le=24 * 60)


NEXT_CURSOR = "X-Next-Cursor"


@router.get(
    "",
    response_model=list[AlertSummary],
    responses={
        200: {
            "headers": {
                NEXT_CURSOR: {
                    "description": "pass as ?cursor= for the next page; absent on the last",
                    "schema": {"type": "string"},
                }
            }
        },
        401: {},
    },
)
def list_alerts(
    caller: Caller,
    conn: Conn,
    request: Request,
    response: Response,
    state: Literal["unresolved", "pending", "open", "acknowledged", "resolved"]
    | None = "unresolved",
    severity: Severity | None = None,
    resident_id: IdQuery = None,
    since: Annotated[datetime | None, Query(description="opened at or after")] = None,
    until: Annotated[datetime | None, Query(description="opened before")] = None,
    cursor_: Annotated[
        str | None,
        Query(
            alias="cursor", pattern=cursor.ALERTS, description=f"the previous page's {NEXT_CURSOR}"
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict[str, Any]]:
    """Critical first, then newest; a page at a time (the next page's cursor is in the
    X-Next-Cursor header)."""
    params = {
        **caller.visibility(),
        "state": state,
        "severity": severity,
        "resident_id": resident_id,
        "since": since,
        "until": until,
        "limit": limit + 1,  # one more tells whether there is a next page
        **_position(cursor_),
    }
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(queries.LIST_ALERTS, params).fetchall()
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        response.headers[NEXT_CURSOR] = cursor.alerts_cursor(
            last["rank"], last["opened_at"], last["id"]
        )
    audit(
        conn,
        caller,
        "read.alerts",
        request.url.path,
        address=client_address(request),
        resident_id=resident_id,
        resident_ids=[r["resident_id"] for r in rows if r["resident_id"] is not None],
        detail={"count": len(rows)},
    )
    return rows


def _position(token: str | None) -> dict[str, Any]:
    if token is None:
        return {"c_rank": None, "c_opened": None, "c_id": None}
    key = cursor.parse_alerts(token)
    return {"c_rank": key.rank, "c_opened": key.opened_at, "c_id": key.id}


def _resident_of(conn: Conn, caller: Principal, alert_id: int) -> int | None:
    """The alert's resident (None: a device bound to nobody), or 404 when the caller may not see it."""
    row = conn.execute(
        queries.ALERT_RESIDENT, {**caller.visibility(), "alert_id": alert_id}
    ).fetchone()
    if row is None:
        raise HTTPException(404, NOT_FOUND)
    resident_id: int | None = row[0]
    return resident_id


@router.get("/{alert_id}", response_model=AlertDetail, responses={401: {}, 404: {}})
def get_alert(alert_id: IdPath, caller: Caller, conn: Conn, request: Request) -> dict[str, Any]:
    """One alert with its timeline."""
    resident_id = _resident_of(conn, caller, alert_id)
    alert = asdict(transitions.get_alert(conn, alert_id))
    params = {"alert_id": alert_id, "people": caller.kind == "user"}
    with conn.cursor(row_factory=dict_row) as cur:
        alert.update(cur.execute(queries.ALERT_HANDLERS, params).fetchone() or {})
        alert["timeline"] = cur.execute(queries.ALERT_TIMELINE, params).fetchall()
    audit(
        conn,
        caller,
        "read.alert",
        request.url.path,
        address=client_address(request),
        resident_id=resident_id,
    )
    return alert


def _act(
    conn: Conn,
    caller: Principal,
    request: Request,
    alert_id: int,
    action: str,
    *,
    refusal: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run one life-cycle action for a caller allowed to act on this alert; always audited.

    Out of scope is 404 before anything else; `refusal` (or a read-only credential) is 403."""
    resident_id = _resident_of(conn, caller, alert_id)
    if not caller.can_write:
        refusal = "this credential may read but not act on alerts"
    elif caller.role == "institution_admin" and (
        resident_id is None or not guards.owns_resident(conn, caller, resident_id)
    ):
        refusal = guards.NOT_OWNER  # seeing another institution's resident is not handling it
    if refusal:
        audit(
            conn,
            caller,
            f"alert.{action}",
            request.url.path,
            address=client_address(request),
            resident_id=resident_id,
            outcome="refused",
        )
        raise HTTPException(403, refusal)
    try:
        alert = getattr(lifecycle, action)(conn, alert_id, now=datetime.now(UTC), **kwargs)
    except AlertError as exc:
        raise HTTPException(409, str(exc)) from None
    audit(
        conn,
        caller,
        f"alert.{action}",
        request.url.path,
        address=client_address(request),
        resident_id=resident_id,
    )
    return _summary(conn, alert)


def _summary(conn: Conn, alert: Any) -> dict[str, Any]:
    fields = AlertSummary.model_fields
    out = {k: v for k, v in asdict(alert).items() if k in fields}
    with conn.cursor(row_factory=dict_row) as cur:
        # Only people act on alerts (platforms may not write), so names are shown.
        row = cur.execute(queries.ALERT_HANDLERS, {"alert_id": alert.id, "people": True}).fetchone()
    out.update({k: v for k, v in (row or {}).items() if k in fields})
    return out


@router.post(
    "/{alert_id}/ack", response_model=AlertSummary, responses={401: {}, 403: {}, 404: {}, 409: {}}
)
def acknowledge(
    alert_id: IdPath, body: Note, caller: Caller, conn: Conn, request: Request
) -> dict[str, Any]:
    """I am handling it: reminders stop; an SOS device hears that help is coming."""
    return _act(conn, caller, request, alert_id, "acknowledge", actor=caller.ref, note=body.note)


@router.post(
    "/{alert_id}/snooze",
    response_model=AlertSummary,
    responses={401: {}, 403: {}, 404: {}, 409: {}},
)
def snooze(
    alert_id: IdPath, body: SnoozeBody, caller: Caller, conn: Conn, request: Request
) -> dict[str, Any]:
    """Pause my reminders for this alert (refused for critical alerts, and for callers who are not
    a doctor: reminders are per doctor)."""
    until = datetime.now(UTC) + timedelta(minutes=body.minutes)
    refusal = (
        "only a doctor's account can snooze (reminders are per doctor); acknowledge it instead"
        if caller.doctor_id is None
        else None
    )
    return _act(
        conn,
        caller,
        request,
        alert_id,
        "snooze",
        refusal=refusal,
        doctor_id=caller.doctor_id,
        until=until,
    )


@router.post(
    "/{alert_id}/resolve",
    response_model=AlertSummary,
    responses={401: {}, 403: {}, 404: {}, 409: {}},
)
def resolve(
    alert_id: IdPath, body: ResolveBody, caller: Caller, conn: Conn, request: Request
) -> dict[str, Any]:
    """Close the alert, saying what was done."""
    return _act(conn, caller, request, alert_id, "resolve", actor=caller.ref, note=body.note)


@router.post(
    "/{alert_id}/comment",
    response_model=AlertSummary,
    responses={401: {}, 403: {}, 404: {}, 409: {}},
)
def comment(
    alert_id: IdPath, body: CommentBody, caller: Caller, conn: Conn, request: Request
) -> dict[str, Any]:
    """Add a note to the alert's timeline (what was tried, who was called); the state stays."""
    return _act(conn, caller, request, alert_id, "comment", actor=caller.ref, note=body.note)
