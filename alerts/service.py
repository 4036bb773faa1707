"""Alert life cycle: raise (with dedup and worsening), escalate, remind, acknowledge, snooze, resolve.

Each change is one transaction that also records the transition (who, when, why), enqueues the
notifications it causes in the outbox (idempotency keys make a retried step harmless) and announces
itself on the `eldercare_alert` stream. Time always comes from the caller (`now`).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from alerts import queries
from alerts.channels.base import Recipient
from alerts.circle import load_circle, load_policy, resident_institution
from alerts.models import Alert, Finding, worse
from alerts.routing import Person, channels_for, tier_people

EVENT_RULES = frozenset({"sos", "fall"})


class AlertError(Exception):
    """An action the alert life cycle refuses; the message says why."""


def _lock(conn: psycopg.Connection, alert_id: int) -> Alert:
    with conn.cursor(row_factory=class_row(Alert)) as cur:
        alert = cur.execute(queries.LOCK_ALERT, (alert_id,)).fetchone()
    if alert is None:
        raise AlertError(f"no alert {alert_id}: see `eldercare alerts list`")
    return alert


def get_alert(conn: psycopg.Connection, alert_id: int) -> Alert:
    with conn.cursor(row_factory=class_row(Alert)) as cur:
        alert = cur.execute(queries.SELECT_ALERT, (alert_id,)).fetchone()
    if alert is None:
        raise AlertError(f"no alert {alert_id}: see `eldercare alerts list`")
    return alert


def _transition(
    conn: psycopg.Connection,
    alert: Alert,
    now: datetime,
    actor: str,
    action: str,
    to_state: str,
    severity: str | None = None,
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


def _payload(conn: psycopg.Connection, alert: Alert, kind: str, **extra: Any) -> dict[str, Any]:
    resident = None
    if alert.resident_id is not None:
        row = conn.execute(queries.RESIDENT_NAME, (alert.resident_id,)).fetchone()
        resident = {"id": alert.resident_id, "name": row[0] if row else None}
    body = {
        "id": alert.id,
        "rule": alert.rule,
        "severity": alert.severity,
        "state": alert.state,
        "title": alert.title,
        "resident": resident,
        "device_id": alert.device_id,
        "opened_at": alert.opened_at.isoformat(),
        "detail": alert.detail,
    }
    return {"kind": kind, "alert": body, **extra}


def _notify(
    conn: psycopg.Connection,
    *,
    alert_id: int,
    kind: str,
    key: str,
    recipient_kind: str,
    recipient_id: str,
    channel: str,
    payload: dict[str, Any],
    now: datetime,
    state: str = "pending",
) -> None:
    conn.execute(
        queries.INSERT_NOTIFICATION,
        {
            "alert_id": alert_id,
            "kind": kind,
            "recipient_kind": recipient_kind,
            "recipient_id": recipient_id,
            "channel": channel,
            "payload": Jsonb(payload),
            "key": f"{key}:{recipient_kind}:{recipient_id}:{channel}",
            "state": state,
            "now": now,
        },
    )


def _to_people(
    conn: psycopg.Connection,
    alert: Alert,
    kind: str,
    key: str,
    people: list[Person | Recipient],
    now: datetime,
    **extra: Any,
) -> None:
    payload = _payload(conn, alert, kind, **extra)
    contacts = [p for p in people if isinstance(p, Recipient)]
    for person in people:
        if isinstance(person, Recipient):
            continue
        channels, suppressed = channels_for(person, alert.severity, now)
        for channel in channels:
            _notify(
                conn,
                alert_id=alert.id,
                kind=kind,
                key=key,
                recipient_kind="doctor",
                recipient_id=str(person.id),
                channel=channel,
                payload=payload,
                now=now,
                state="suppressed" if suppressed else "pending",
            )
    if contacts:
        # Families are reached through the platforms' webhooks (call centres, SMS gateways).
        extra_payload = {
            **payload,
            "notify_contacts": [{"name": c.name, "phone": c.phone} for c in contacts],
        }
        _to_webhooks(conn, alert, kind, key + ":contacts", now, extra_payload, force=True)
        for contact in contacts:
            _notify(
                conn,
                alert_id=alert.id,
                kind=kind,
                key=key,
                recipient_kind="contact",
                recipient_id=contact.id,
                channel="webhook",
                payload=extra_payload,
                now=now,
                state="suppressed",  # delivered by the webhook rows above; kept as the record
            )


def _to_webhooks(
    conn: psycopg.Connection,
    alert: Alert,
    kind: str,
    key: str,
    now: datetime,
    payload: dict[str, Any] | None = None,
    force: bool = False,
) -> None:
    from alerts.models import SEVERITY_RANK

    body = payload or _payload(conn, alert, kind)
    for hook_id, _name, _url, _secret, min_severity in conn.execute(queries.WEBHOOKS).fetchall():
        if force or SEVERITY_RANK[alert.severity] >= SEVERITY_RANK[min_severity]:
            _notify(
                conn,
                alert_id=alert.id,
                kind=kind,
                key=key,
                recipient_kind="webhook",
                recipient_id=str(hook_id),
                channel="webhook",
                payload=body,
                now=now,
            )


def _to_device(
    conn: psycopg.Connection, alert: Alert, kind: str, key: str, now: datetime, status: str
) -> None:
    if alert.rule not in EVENT_RULES or not alert.device_id:
        return
    payload = {"type": alert.rule, "alert_id": alert.id, "status": status, "at": now.isoformat()}
    _notify(
        conn,
        alert_id=alert.id,
        kind=kind,
        key=key,
        recipient_kind="device",
        recipient_id=alert.device_id,
        channel="device_ack",
        payload=payload,
        now=now,
    )


def _notified(
    conn: psycopg.Connection, alert: Alert, now: datetime, skip_snoozed: bool
) -> list[Person | Recipient]:
    circle = load_circle(conn, alert.resident_id, now)
    rows = conn.execute(queries.NOTIFIED_RECIPIENTS, (alert.id,)).fetchall()
    snoozers = (
        {str(r[0]) for r in conn.execute(queries.ACTIVE_SNOOZERS, (alert.id, now))}
        if skip_snoozed
        else set()
    )
    everyone: dict[tuple[str, str], Person | Recipient] = {}
    for person in (
        circle.contracted_doctor,
        circle.duty_desk,
        circle.partner_duty_desk,
        *circle.team,
    ):
        if person is not None:
            everyone[("doctor", str(person.id))] = person
    for contact in circle.contacts:
        everyone[("contact", contact.id)] = contact
    chosen: list[Person | Recipient] = []
    for kind, rid in rows:
        who = everyone.get((kind, rid))
        if who is None and kind == "doctor":
            row = conn.execute(queries.DOCTOR_CONTACT, (int(rid),)).fetchone()
            who = Person(row[0], row[1], row[2]) if row else None
        if who is not None and not (kind == "doctor" and rid in snoozers) and kind != "contact":
            chosen.append(who)
    return chosen


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
    """Open an alert for the finding, or update the open one for the same resident and rule."""
    with conn.transaction():
        with conn.cursor(row_factory=class_row(Alert)) as cur:
            existing = cur.execute(
                queries.LOCK_UNRESOLVED, {"resident_id": resident_id, "rule": finding.rule}
            ).fetchone()
        if existing is None:
            with conn.cursor(row_factory=class_row(Alert)) as cur:
                alert = cur.execute(
                    queries.INSERT_ALERT,
                    {
                        "resident_id": resident_id,
                        "rule": finding.rule,
                        "severity": finding.severity,
                        "state": "pending" if delay else "open",
                        "title": finding.title,
                        "detail": Jsonb(finding.detail),
                        "device_id": finding.device_id,
                        "event_id": event_id,
                        "now": now,
                        "next_tier_at": now + delay,
                    },
                ).fetchone()
            assert alert is not None
            _transition(
                conn,
                alert,
                now,
                actor,
                "raised",
                alert.state,
                note=f"delay {delay}" if delay else None,
            )
            return _advance(conn, alert, now)
        conn.execute(
            queries.REPEAT_ALERT, {"id": existing.id, "now": now, "detail": Jsonb(finding.detail)}
        )
        if worse(finding.severity, existing.severity):
            conn.execute(
                queries.RAISE_SEVERITY,
                {"id": existing.id, "severity": finding.severity, "title": finding.title},
            )
            tid = _transition(
                conn, existing, now, actor, "severity_raised", existing.state, finding.severity
            )
            updated = _lock(conn, existing.id)
            key = f"a{existing.id}:sev{tid}"
            _to_people(
                conn, updated, "severity_raised", key, _notified(conn, updated, now, False), now
            )
            _to_webhooks(conn, updated, "severity_raised", key, now)
            return _reschedule_reminders(conn, updated, now)
        return _lock(conn, existing.id)


def _reschedule_reminders(conn: psycopg.Connection, alert: Alert, now: datetime) -> Alert:
    if alert.state != "open":
        return alert
    policy = load_policy(conn, alert.severity, resident_institution(conn, alert.resident_id))
    next_reminder = (
        now + timedelta(seconds=policy.reminder_every_s) if policy.reminder_every_s else None
    )
    conn.execute(
        queries.SET_TIMERS,
        {
            "id": alert.id,
            "state": alert.state,
            "tier": alert.tier,
            "next_tier_at": alert.next_tier_at,
            "next_reminder_at": next_reminder,
            "reminders_sent": alert.reminders_sent,
        },
    )
    return _lock(conn, alert.id)


def _advance(conn: psycopg.Connection, alert: Alert, now: datetime) -> Alert:
    """Notify every tier that is due by `now` (in order) and schedule the next tier and reminder."""
    if (
        alert.state not in ("pending", "open")
        or alert.next_tier_at is None
        or alert.next_tier_at > now
    ):
        return alert
    policy = load_policy(conn, alert.severity, resident_institution(conn, alert.resident_id))
    circle = load_circle(conn, alert.resident_id, now)
    tier, state = alert.tier, alert.state
    due: datetime | None = alert.next_tier_at
    assert due is not None
    base: datetime = (
        due - timedelta(seconds=policy.tiers[tier].after_s) if tier < len(policy.tiers) else due
    )
    next_reminder = alert.next_reminder_at
    while due is not None and due <= now and tier < len(policy.tiers):
        kind = "raised" if tier == 0 else "escalation"
        key = f"a{alert.id}:t{tier}"
        current = _with_state(alert, "open")
        _to_people(
            conn, current, kind, key, tier_people(circle, policy.tiers[tier]), now, tier=tier
        )
        _to_webhooks(conn, current, kind, key, now)
        if tier == 0:
            _to_device(conn, current, kind, key, now, "doctor_notified")
            if policy.reminder_every_s:
                next_reminder = now + timedelta(seconds=policy.reminder_every_s)
        else:
            _transition(conn, current, now, "system", "escalated", "open", note=f"tier {tier}")
        if state == "pending":
            _transition(conn, alert, now, "system", "opened", "open")
        state = "open"
        tier += 1
        due = (
            base + timedelta(seconds=policy.tiers[tier].after_s)
            if tier < len(policy.tiers)
            else None
        )
    conn.execute(
        queries.SET_TIMERS,
        {
            "id": alert.id,
            "state": state,
            "tier": tier,
            "next_tier_at": due,
            "next_reminder_at": next_reminder,
            "reminders_sent": alert.reminders_sent,
        },
    )
    return _lock(conn, alert.id)


def _with_state(alert: Alert, state: str) -> Alert:
    return Alert(**{**asdict(alert), "state": state})


def run_due(conn: psycopg.Connection, now: datetime) -> int:
    """Escalations and reminders that are due; returns how many alerts were touched."""
    touched = 0
    for (alert_id,) in conn.execute(queries.DUE_TIERS, {"now": now}).fetchall():
        with conn.transaction():
            _advance(conn, _lock(conn, alert_id), now)
        touched += 1
    for (alert_id,) in conn.execute(queries.DUE_REMINDERS, {"now": now}).fetchall():
        with conn.transaction():
            alert = _lock(conn, alert_id)
            if (
                alert.state != "open"
                or alert.next_reminder_at is None
                or alert.next_reminder_at > now
            ):
                continue
            policy = load_policy(
                conn, alert.severity, resident_institution(conn, alert.resident_id)
            )
            key = f"a{alert.id}:r{alert.reminders_sent + 1}"
            _to_people(
                conn,
                alert,
                "reminder",
                key,
                _notified(conn, alert, now, True),
                now,
                reminder=alert.reminders_sent + 1,
            )
            every = timedelta(seconds=policy.reminder_every_s or 0)
            conn.execute(
                queries.SET_TIMERS,
                {
                    "id": alert.id,
                    "state": alert.state,
                    "tier": alert.tier,
                    "next_tier_at": alert.next_tier_at,
                    "next_reminder_at": max(now, alert.next_reminder_at + every) if every else None,
                    "reminders_sent": alert.reminders_sent + 1,
                },
            )
        touched += 1
    return touched


def acknowledge(
    conn: psycopg.Connection, alert_id: int, *, actor: str, now: datetime, note: str | None = None
) -> Alert:
    """Somebody is handling it: reminders and escalation stop for this alert (only)."""
    with conn.transaction():
        alert = _lock(conn, alert_id)
        if alert.state == "resolved":
            raise AlertError(f"alert {alert_id} is already resolved")
        if alert.state == "acknowledged":
            return alert
        tid = _transition(conn, alert, now, actor, "acknowledged", "acknowledged", note=note)
        conn.execute(
            queries.SET_STATE,
            {"id": alert_id, "state": "acknowledged", "now": now, "actor": actor, "note": None},
        )
        updated = _lock(conn, alert_id)
        key = f"a{alert_id}:ack{tid}"
        _to_people(
            conn, updated, "acknowledged", key, _notified(conn, updated, now, False), now, by=actor
        )
        _to_webhooks(conn, updated, "acknowledged", key, now)
        _to_device(conn, updated, "acknowledged", key, now, "help_coming")
        return updated


def snooze(
    conn: psycopg.Connection, alert_id: int, *, doctor_id: int, until: datetime, now: datetime
) -> Alert:
    """Silence this alert's reminders for one person until `until`; refused for critical alerts."""
    with conn.transaction():
        alert = _lock(conn, alert_id)
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
        _transition(
            conn,
            alert,
            now,
            f"doctor:{doctor_id}",
            "snoozed",
            alert.state,
            note=f"until {until.isoformat()}",
        )
        return _lock(conn, alert_id)


def resolve(
    conn: psycopg.Connection,
    alert_id: int,
    *,
    actor: str,
    now: datetime,
    note: str | None,
    automatic: bool = False,
) -> Alert:
    """Close an alert; a person must say why (the note), the system says what cleared."""
    if not automatic and not (note and note.strip()):
        raise AlertError("resolving needs a note saying what was done")
    with conn.transaction():
        alert = _lock(conn, alert_id)
        if alert.state == "resolved":
            raise AlertError(f"alert {alert_id} is already resolved")
        tid = _transition(conn, alert, now, actor, "resolved", "resolved", note=note)
        conn.execute(
            queries.SET_STATE,
            {"id": alert_id, "state": "resolved", "now": now, "actor": actor, "note": note},
        )
        updated = _lock(conn, alert_id)
        key = f"a{alert_id}:res{tid}"
        if alert.state != "pending":
            _to_people(
                conn, updated, "resolved", key, _notified(conn, updated, now, False), now, note=note
            )
            _to_webhooks(conn, updated, "resolved", key, now)
        return updated


def settle_cleared(
    conn: psycopg.Connection,
    resident_id: int,
    active: set[str],
    rules: dict[str, timedelta],
    now: datetime,
) -> None:
    """Mark reading alerts whose condition is gone; resolve those clear for long enough."""
    rows = conn.execute(
        queries.UNRESOLVED_READING_ALERTS, {"resident_id": resident_id, "rules": list(rules)}
    ).fetchall()
    for alert_id, rule, cleared_since in rows:
        if rule in active:
            continue
        if cleared_since is None:
            conn.execute(queries.MARK_CLEARED, {"id": alert_id, "now": now})
        elif now - cleared_since >= rules[rule]:
            resolve(
                conn,
                alert_id,
                actor="system",
                now=now,
                automatic=True,
                note=f"condition cleared for {rules[rule]}",
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
        alert = _lock(conn, alert_id)
        _transition(conn, alert, now, actor, "commented", alert.state, note=text)
        return alert
