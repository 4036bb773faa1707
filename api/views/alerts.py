"""The alert queue of the caller's residents, and acting on an alert (people only, not platforms)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from psycopg.rows import dict_row
from pydantic import BaseModel, Field

from alerts import queries as alert_queries
from alerts import service
from alerts.service import AlertError
from api import queries
from api.access import Principal, audit
from api.deps import Caller, Conn, IdPath, IdQuery, client_address

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])
NOT_FOUND = "no such alert (or not one of your residents')"


class AlertSummary(BaseModel):
    id: int
    resident_id: int
    resident_name: str | None = None
    rule: str
    severity: str
    state: str
    title: str
    opened_at: datetime
    last_seen_at: datetime
    occurrences: int
    acknowledged_by: str | None
    acknowledged_at: datetime | None


class Transition(BaseModel):
    at: datetime
    actor: str
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
    resolved_by: str | None
    resolution_note: str | None
    timeline: list[Transition]


class Note(BaseModel):
    note: str | None = Field(default=None, max_length=2000)


class ResolveBody(BaseModel):
    note: str = Field(min_length=1, max_length=2000, description="what was done")


class SnoozeBody(BaseModel):
    minutes: int = Field(ge=1, le=24 * 60)


@router.get("", response_model=list[AlertSummary], responses={401: {}})
def list_alerts(
    caller: Caller,
    conn: Conn,
    request: Request,
    state: Literal["unresolved", "pending", "open", "acknowledged", "resolved"]
    | None = "unresolved",
    severity: Literal["info", "warning", "critical"] | None = None,
    resident_id: IdQuery = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict[str, Any]]:
    """Critical first, then newest."""
    params = {
        **caller.visibility(),
        "state": state,
        "severity": severity,
        "resident_id": resident_id,
        "since": since,
        "limit": limit,
    }
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(queries.LIST_ALERTS, params).fetchall()
    audit(
        conn,
        caller,
        "read.alerts",
        request.url.path,
        address=client_address(request),
        resident_id=resident_id,
        detail={"count": len(rows)},
    )
    return rows


def _resident_of(conn: Conn, caller: Principal, alert_id: int) -> int:
    row = conn.execute(
        queries.ALERT_RESIDENT, {**caller.visibility(), "alert_id": alert_id}
    ).fetchone()
    if row is None:
        raise HTTPException(404, NOT_FOUND)
    resident_id: int = row[0]
    return resident_id


@router.get("/{alert_id}", response_model=AlertDetail, responses={401: {}, 404: {}})
def get_alert(alert_id: IdPath, caller: Caller, conn: Conn, request: Request) -> dict[str, Any]:
    """One alert with its timeline."""
    resident_id = _resident_of(conn, caller, alert_id)
    alert = asdict(service.get_alert(conn, alert_id))
    keys = ("at", "actor", "action", "from_state", "to_state", "severity", "note")
    alert["timeline"] = [
        dict(zip(keys, t, strict=True)) for t in conn.execute(alert_queries.TIMELINE, (alert_id,))
    ]
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
    conn: Conn, caller: Principal, request: Request, alert_id: int, action: str, **kwargs: Any
) -> dict[str, Any]:
    resident_id = _resident_of(conn, caller, alert_id)
    if not caller.can_write:
        audit(
            conn,
            caller,
            f"alert.{action}",
            request.url.path,
            address=client_address(request),
            resident_id=resident_id,
            outcome="refused",
        )
        raise HTTPException(403, "this credential may read but not act on alerts")
    try:
        alert = getattr(service, action)(conn, alert_id, now=datetime.now(UTC), **kwargs)
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
    return _summary(alert)


def _summary(alert: Any) -> dict[str, Any]:
    fields = AlertSummary.model_fields
    return {k: v for k, v in asdict(alert).items() if k in fields}


@router.post(
    "/{alert_id}/ack", response_model=AlertSummary, responses={401: {}, 403: {}, 404: {}, 409: {}}
)
def acknowledge(
    alert_id: IdPath, body: Note, caller: Caller, conn: Conn, request: Request
) -> dict[str, Any]:
    """I am handling it: reminders stop; an SOS device hears that help is coming."""
    return _act(conn, caller, request, alert_id, "acknowledge", actor=caller.actor, note=body.note)


@router.post(
    "/{alert_id}/snooze",
    response_model=AlertSummary,
    responses={401: {}, 403: {}, 404: {}, 409: {}},
)
def snooze(
    alert_id: IdPath, body: SnoozeBody, caller: Caller, conn: Conn, request: Request
) -> dict[str, Any]:
    """Pause my reminders for this alert (refused for critical alerts)."""
    if caller.doctor_id is None:
        raise HTTPException(409, "only a doctor's account can snooze (reminders are per doctor)")
    until = datetime.now(UTC) + timedelta(minutes=body.minutes)
    return _act(conn, caller, request, alert_id, "snooze", doctor_id=caller.doctor_id, until=until)


@router.post(
    "/{alert_id}/resolve",
    response_model=AlertSummary,
    responses={401: {}, 403: {}, 404: {}, 409: {}},
)
def resolve(
    alert_id: IdPath, body: ResolveBody, caller: Caller, conn: Conn, request: Request
) -> dict[str, Any]:
    """Close the alert, saying what was done."""
    return _act(conn, caller, request, alert_id, "resolve", actor=caller.actor, note=body.note)
