"""Alert life cycle: raise (with dedup and worsening), acknowledge, snooze, resolve, comment.

Each change is one transaction that also records the transition (who, when, why), enqueues the
notifications it causes in the outbox (alerts/fanout.py) and announces itself on the
`eldercare_alert` stream. Time always comes from the caller (`now`). Escalation rounds and
reminders are alerts/escalation.py's. Over 400 lines, one cohesive thing: every action that moves
an alert from one state to another, each short and reading the same way.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from alerts import escalation, fanout, queries, transitions
from alerts.clearing import clearing_evidence, freshness, metrics_of
from alerts.device_events import EVENT_RULES, Press, cancel_refusal
from alerts.models import Alert, AlertError, AlertState, Finding, worse

# A reading alert raised again this soon after a person resolved it says so (the condition persists).
PERSISTS_WITHIN = timedelta(hours=1)


def raise_finding(
    conn: psycopg.Connection,
    *,
    resident_id: int | None,
    finding: Finding,
    now: datetime,
    event_id: int | None = None,
    delay: timedelta = timedelta(0),
    actor: str = "system",
) -> Alert:
    """Open an alert for the finding, or update the open one for the same resident and rule (for
    an event from a device bound to nobody: the same device)."""
    key = {"resident_id": resident_id, "rule": finding.rule, "device_id": finding.device_id}
    with conn.transaction():
        conn.execute(queries.LOCK_ALERT_KEY, key)
        with conn.cursor(row_factory=class_row(Alert)) as cur:
            existing = cur.execute(queries.LOCK_UNRESOLVED, key).fetchone()
        if existing is None:
            return _open(conn, resident_id, finding, now, event_id, delay, actor)
        if finding.rule in EVENT_RULES:
            return _event_again(conn, existing, finding, now, actor)
        conn.execute(
            queries.REPEAT_ALERT, {"id": existing.id, "now": now, "detail": Jsonb(finding.detail)}
        )
        if worse(finding.severity, existing.severity):
            return _worsen(conn, existing, finding, now, actor)
        return transitions.lock(conn, existing.id)


def _open(
    conn: psycopg.Connection,
    resident_id: int | None,
    finding: Finding,
    now: datetime,
    event_id: int | None,
    delay: timedelta,
    actor: str,
) -> Alert:
    notes = [f"delay {delay}"] if delay else []
    if finding.detail.get("late"):
        notes.append(f"reported late: occurred {finding.detail.get('occurred_at')}")
    previous = (
        None
        if finding.rule in EVENT_RULES
        else conn.execute(
            queries.RECENTLY_RESOLVED,
            {"resident_id": resident_id, "rule": finding.rule, "since": now - PERSISTS_WITHIN},
        ).fetchone()
    )
    detail = finding.detail
    if previous is not None:
        # Resolving does not make the data normal: the rule finds the condition again, and that is
        # a new alert (notified as such) which says that it follows the resolved one.
        prev_id, prev_at, prev_by = previous
        detail = {
            **detail,
            "follows": {"alert_id": prev_id, "resolved_at": prev_at.isoformat(), "by": prev_by},
        }
        notes.append(
            f"the condition persists after alert {prev_id} was resolved by {prev_by} "
            f"at {prev_at.isoformat()}"
        )
    with conn.cursor(row_factory=class_row(Alert)) as cur:
        alert = cur.execute(
            queries.INSERT_ALERT,
            {
                "resident_id": resident_id,
                "rule": finding.rule,
                "severity": finding.severity,
                "state": "pending" if delay else "open",
                "title": finding.title,
                "detail": Jsonb(detail),
                "device_id": finding.device_id,
                "event_id": event_id,
                "now": now,
                "next_tier_at": now + delay,
            },
        ).fetchone()
    assert alert is not None
    transitions.record(
        conn, alert, now, actor, "raised", alert.state, note="; ".join(notes) or None
    )
    return escalation.advance(conn, alert, now)


def _worsen(
    conn: psycopg.Connection, existing: Alert, finding: Finding, now: datetime, actor: str
) -> Alert:
    """The same alert at a worse severity: everyone told so far hears it, then the new severity's
    policy from tier 0 (tiers due by the elapsed time at once; after an acknowledgement, from now)."""
    conn.execute(
        queries.RAISE_SEVERITY,
        {"id": existing.id, "severity": finding.severity, "title": finding.title},
    )
    if finding.severity == "critical":
        conn.execute(queries.DELETE_SNOOZES, (existing.id,))  # critical alerts are never snoozed
    tid = transitions.record(
        conn, existing, now, actor, "severity_raised", existing.state, finding.severity
    )
    updated = transitions.lock(conn, existing.id)
    key = f"a{existing.id}:sev{tid}"
    told = fanout.to_people(
        conn, updated, "severity_raised", key, fanout.involved(conn, updated, now), now
    )
    told |= fanout.to_webhooks(conn, updated, "severity_raised", key, now)
    if updated.state == "pending":
        return updated  # its round starts when the window ends, under the new severity's policy
    base = updated.escalation_base or updated.opened_at
    if updated.state == "acknowledged":
        _reopen(conn, updated, now, f"worse ({finding.severity}) after the acknowledgement")
        base = now
    conn.execute(queries.NEW_ROUND, {"id": existing.id, "base": base})
    return escalation.advance(conn, transitions.lock(conn, existing.id), now, already=told)


def _event_again(
    conn: psycopg.Connection, existing: Alert, finding: Finding, now: datetime, actor: str
) -> Alert:
    """Another SOS press or fall on an unresolved alert of the same rule."""
    late = bool(finding.detail.get("late"))
    source = finding.device_id or "?"
    if late:
        # History: counted and recorded, nobody is alarmed again, the alert keeps what it says.
        conn.execute(queries.COUNT_OCCURRENCE, (existing.id,))
        why = (
            f"late {finding.rule} event from {source}, occurred {finding.detail.get('occurred_at')}"
        )
        transitions.record(conn, existing, now, actor, "repeated", existing.state, note=why)
        return transitions.lock(conn, existing.id)
    conn.execute(
        queries.REPEAT_ALERT, {"id": existing.id, "now": now, "detail": Jsonb(finding.detail)}
    )
    if existing.late:
        conn.execute(
            queries.SET_DESCRIPTION,
            {"id": existing.id, "title": finding.title, "detail": Jsonb(finding.detail)},
        )
    if existing.state == "pending":
        return transitions.lock(conn, existing.id)  # a fall inside its window: the window runs on
    tid = transitions.record(
        conn,
        existing,
        now,
        actor,
        "repeated",
        existing.state,
        note=f"{finding.rule} again from {source}",
    )
    updated = transitions.lock(conn, existing.id)
    key = f"a{existing.id}:rep{tid}"
    told = fanout.to_people(
        conn, updated, "repeated", key, fanout.involved(conn, updated, now), now
    )
    told |= fanout.to_webhooks(conn, updated, "repeated", key, now)
    fanout.to_device(conn, updated, "repeated", key, now, "doctor_notified", finding.device_id)
    if existing.state == "acknowledged" or existing.late:
        if existing.state == "acknowledged":
            _reopen(conn, updated, now, f"{finding.rule} again after the acknowledgement")
        conn.execute(queries.NEW_ROUND, {"id": existing.id, "base": now})
        updated = escalation.advance(conn, transitions.lock(conn, existing.id), now, already=told)
    return updated


def _reopen(conn: psycopg.Connection, alert: Alert, now: datetime, why: str) -> None:
    """An acknowledged alert open again: the acknowledgement was for what was known then."""
    transitions.record(conn, alert, now, "system", "reopened", "open", note=why)


def acknowledge(
    conn: psycopg.Connection, alert_id: int, *, actor: str, now: datetime, note: str | None = None
) -> Alert:
    """Somebody is handling it: reminders and escalation stop for this alert (only)."""
    with conn.transaction():
        alert = transitions.lock(conn, alert_id)
        if alert.state == "resolved":
            raise AlertError(f"alert {alert_id} is already resolved")
        if alert.state == "acknowledged":
            return alert
        tid = transitions.record(conn, alert, now, actor, "acknowledged", "acknowledged", note=note)
        updated = _set_state(conn, alert_id, "acknowledged", now=now, actor=actor, note=None)
        key = f"a{alert_id}:ack{tid}"
        # People (doctors' apps, mail) are told who by name; the actor may hold a username.
        row = conn.execute(queries.ACTOR_NAME, (actor,)).fetchone()
        by = row[0] if row else actor
        people = fanout.notified(conn, updated, now, False)
        fanout.to_people(conn, updated, "acknowledged", key, people, now, by=by)
        fanout.to_webhooks(conn, updated, "acknowledged", key, now)
        fanout.to_device(conn, updated, "acknowledged", key, now, "help_coming")
        return updated


def _set_state(
    conn: psycopg.Connection,
    alert_id: int,
    state: AlertState,
    *,
    now: datetime,
    actor: str,
    note: str | None,
) -> Alert:
    """Acknowledged or resolved, by whom and when (`note`: a resolution's); the row as it is now."""
    conn.execute(
        queries.SET_STATE,
        {"id": alert_id, "state": state, "now": now, "actor": actor, "note": note},
    )
    return transitions.lock(conn, alert_id)


def snooze(
    conn: psycopg.Connection, alert_id: int, *, doctor_id: int, until: datetime, now: datetime
) -> Alert:
    """Silence this alert's reminders for one person until `until`; refused for critical alerts."""
    with conn.transaction():
        alert = transitions.lock(conn, alert_id)
        if alert.severity == "critical":
            raise AlertError(
                f"alert {alert_id} is critical ({alert.title}): it cannot be snoozed; acknowledge it"
            )
        if alert.state == "resolved":
            raise AlertError(f"alert {alert_id} is already resolved")
        if until <= now:
            raise AlertError("snooze until a time in the future")
        if conn.execute(queries.DOCTOR_CONTACT, (doctor_id,)).fetchone() is None:
            raise AlertError(f"no doctor {doctor_id}")
        conn.execute(queries.UPSERT_SNOOZE, (alert_id, doctor_id, until))
        transitions.record(
            conn,
            alert,
            now,
            f"doctor:{doctor_id}",
            "snoozed",
            alert.state,
            note=f"until {until.isoformat()}",
        )
        return transitions.lock(conn, alert_id)


def resolve(
    conn: psycopg.Connection,
    alert_id: int,
    *,
    actor: str,
    now: datetime,
    note: str | None,
    automatic: bool = False,
) -> Alert:
    """Close an alert; a person must say why (the note), the system says what cleared.

    A reading alert resolved while its condition still holds is raised again by the rule as a new
    alert that says it follows this one."""
    if not automatic and not (note and note.strip()):
        raise AlertError("resolving needs a note saying what was done")
    with conn.transaction():
        alert = transitions.lock(conn, alert_id)
        if alert.state == "resolved":
            raise AlertError(f"alert {alert_id} is already resolved")
        tid = transitions.record(conn, alert, now, actor, "resolved", "resolved", note=note)
        updated = _set_state(conn, alert_id, "resolved", now=now, actor=actor, note=note)
        key = f"a{alert_id}:res{tid}"
        if alert.state != "pending":
            people = fanout.notified(conn, updated, now, False)
            fanout.to_people(conn, updated, "resolved", key, people, now, note=note)
            fanout.to_webhooks(conn, updated, "resolved", key, now)
        return updated


def cancel_from_device(
    conn: psycopg.Connection,
    *,
    resident_id: int | None,
    device_id: str,
    rule: str,
    kind: str,
    cancelled_at: datetime,
    now: datetime,
    window: timedelta,
) -> Alert | None:
    """A device's sos_cancel / fall_cancel: resolves the alert when the wearer withdraws their own
    call in time (alerts/device_events.py `cancel_refusal`); otherwise it only adds a note, and a
    person checks and resolves the alert."""
    with conn.transaction():
        with conn.cursor(row_factory=class_row(Alert)) as cur:
            found = cur.execute(
                queries.LOCK_UNRESOLVED,
                {"resident_id": resident_id, "rule": rule, "device_id": device_id},
            ).fetchone()
        if found is None:
            return None
        refusal = cancel_refusal(
            rule=rule,
            alert_state=found.state,
            acknowledged=_ever_acknowledged(conn, found.id),
            presses=_presses(conn, found),
            device_id=device_id,
            cancelled_at=cancelled_at,
            window=window,
        )
        actor = f"device:{device_id}"
        if refusal is None:
            return resolve(
                conn,
                found.id,
                actor=actor,
                now=now,
                automatic=True,
                note=f"cancelled on the device ({kind})",
            )
        why = (
            f"{kind} from {device_id} at {cancelled_at.isoformat()} does not count: "
            f"{refusal}; a person must check and resolve"
        )
        transitions.record(conn, found, now, actor, "device_cancel", found.state, note=why)
        return transitions.lock(conn, found.id)


def _presses(conn: psycopg.Connection, alert: Alert) -> list[Press]:
    """The presses (falls) the alert holds; without event rows (an alert raised by hand), the one
    its detail describes."""
    rows = conn.execute(
        queries.ALERT_PRESSES,
        {
            "rule": alert.rule,
            "opened_at": alert.opened_at,
            "resident_id": alert.resident_id,
            "device_id": alert.device_id,
        },
    ).fetchall()
    presses = [Press(device, at) for device, at in rows]
    occurred = alert.detail.get("occurred_at")
    if not presses and alert.device_id and isinstance(occurred, str):
        presses.append(Press(alert.device_id, datetime.fromisoformat(occurred)))
    return presses


def _ever_acknowledged(conn: psycopg.Connection, alert_id: int) -> bool:
    row = conn.execute(queries.EVER_ACKNOWLEDGED, (alert_id,)).fetchone()
    return bool(row and row[0])


def settle_cleared(
    conn: psycopg.Connection,
    resident_id: int,
    active: set[str],
    rules: dict[str, timedelta],
    now: datetime,
) -> None:
    """Mark reading alerts whose condition fresh readings show gone; resolve those clear for long
    enough. Readings that stopped are not a cleared condition (alerts/clearing.py)."""
    rows = [
        row
        for row in conn.execute(
            queries.UNRESOLVED_READING_ALERTS, {"resident_id": resident_id, "rules": list(rules)}
        ).fetchall()
        if row[1] not in active
    ]
    if not rows:
        return
    oldest = max(freshness(rule, rules[rule]) for _id, rule, _c, _l in rows)
    newest: dict[str, datetime] = dict(
        conn.execute(
            queries.NEWEST_READINGS,
            {
                "resident_id": resident_id,
                "metrics": metrics_of([rule for _id, rule, _c, _l in rows]),
                "start": now - oldest,
                "now": now,
            },
        ).fetchall()
    )
    for alert_id, rule, cleared_since, last_seen in rows:
        evidence = clearing_evidence(rule, newest, last_seen, now, rules[rule])
        if evidence is None:
            if cleared_since is not None:
                conn.execute(queries.UNMARK_CLEARED, {"id": alert_id})
        elif cleared_since is None:
            conn.execute(queries.MARK_CLEARED, {"id": alert_id, "now": now})
        elif now - cleared_since >= rules[rule]:
            metric, measured_at = evidence
            resolve(
                conn,
                alert_id,
                actor="system",
                now=now,
                automatic=True,
                note=f"condition cleared for {rules[rule]} "
                f"(latest {metric} measured {measured_at.isoformat()})",
            )


def comment(
    conn: psycopg.Connection, alert_id: int, *, actor: str, now: datetime, note: str
) -> Alert:
    """A note on the alert's timeline (what was tried, who was called); the state does not change.

    Nobody is notified: the note is for whoever opens the alert, and the live stream shows it."""
    text = (note or "").strip()
    if not text:
        raise AlertError("a comment needs a note")
    with conn.transaction():
        alert = transitions.lock(conn, alert_id)
        transitions.record(conn, alert, now, actor, "commented", alert.state, note=text)
        return alert
