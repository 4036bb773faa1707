"""An alert's row: read it, lock it for a change, and record each transition on its timeline and the
`eldercare_alert` stream. The one place the life cycle, fan-out and escalation share."""

from __future__ import annotations

from datetime import datetime

import orjson
import psycopg
from psycopg.rows import class_row

from alerts import queries
from alerts.models import Alert, AlertError, AlertState, Severity


def lock(conn: psycopg.Connection, alert_id: int) -> Alert:
    """The alert, locked until the caller's transaction ends (the change it is about to make)."""
    return _one(conn, queries.LOCK_ALERT, alert_id)


def get_alert(conn: psycopg.Connection, alert_id: int) -> Alert:
    return _one(conn, queries.SELECT_ALERT, alert_id)


def _one(conn: psycopg.Connection, query: str, alert_id: int) -> Alert:
    with conn.cursor(row_factory=class_row(Alert)) as cur:
        alert = cur.execute(query, (alert_id,)).fetchone()
    if alert is None:
        raise AlertError(f"no alert {alert_id}: see `eldercare alerts list`")
    return alert


def record(
    conn: psycopg.Connection,
    alert: Alert,
    now: datetime,
    actor: str,
    action: str,
    to_state: AlertState,
    severity: Severity | None = None,
    note: str | None = None,
) -> int:
    row = conn.execute(
        queries.INSERT_TRANSITION,
        (alert.id, now, actor, action, alert.state, to_state, severity or alert.severity, note),
    ).fetchone()
    assert row is not None
    event = {
        "alert_id": alert.id,
        "resident_id": alert.resident_id,
        "rule": alert.rule,
        "action": action,
        "state": to_state,
        "severity": severity or alert.severity,
        "at": now.isoformat(),
        "actor": actor,
    }
    conn.execute(queries.NOTIFY_STREAM, (orjson.dumps(event).decode(),))
    transition_id: int = row[0]
    return transition_id
