"""Alert life cycle: raise (with dedup and worsening), escalate, remind, acknowledge, snooze, resolve.

Each change is one transaction that also records the transition (who, when, why), enqueues the
notifications it causes in the outbox (idempotency keys make a retried step harmless) and announces
itself on the `eldercare_alert` stream. Time always comes from the caller (`now`).

Escalation runs in rounds. A round notifies the policy's tiers in order, tier N when
`escalation_base + after_s` has passed. An alert's first round counts from when it opened (a fall:
from the end of its cancel window). A worsening switches to the new severity's policy: every tier
of it that is due by the time elapsed since the round's base is notified at once, the rest follow
on schedule. A worsening of an acknowledged alert, a new SOS press or fall on an acknowledged one,
or a live event on an alert that only held a late one, starts a new round counting from now: the
acknowledgement was for what was known then, a new one is needed.
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
from alerts.clearing import clearing_evidence, freshness, metrics_of
from alerts.device_events import EVENT_RULES, Press, cancel_refusal
from alerts.models import SEVERITY_RANK, Alert, Finding, worse
from alerts.routing import Person, channels_for, quiet_until, tier_people

# A contact delivery no platform has accepted by then: the duty desk is asked to call instead.
CONTACTS_DEADLINE = timedelta(minutes=2)
# A reading alert raised again this soon after a person resolved it says so (the condition persists).
PERSISTS_WITHIN = timedelta(hours=1)

Who = tuple[str, str]  # (recipient_kind, recipient_id) as in the notification table


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
    send_at: datetime | None = None,
    error: str | None = None,
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
            "send_at": send_at or now,
            "error": error,
        },
    )


def _who(person: Person | Recipient) -> Who:
    return ("contact", person.id) if isinstance(person, Recipient) else ("doctor", str(person.id))


def _to_people(
    conn: psycopg.Connection,
    alert: Alert,
    kind: str,
    key: str,
    people: list[Person],
    now: datetime,
    **extra: Any,
) -> set[Who]:
    """Notify these doctors and duty desks on their channels; returns who was addressed.

    In a person's quiet hours a non-critical notification waits for their end (a pending row due
    then); a reminder is only recorded, as the held-back notification says the same.
    """
    payload = _payload(conn, alert, kind, **extra)
    told: set[Who] = set()
    for person in people:
        channels, _quiet = channels_for(person, alert.severity, now)
        until = quiet_until(person, alert.severity, now)
        body = payload if until is None else {**payload, "held_back_until": until.isoformat()}
        for channel in channels:
            _notify(
                conn,
                alert_id=alert.id,
                kind=kind,
                key=key,
                recipient_kind="doctor",
                recipient_id=str(person.id),
                channel=channel,
                payload=body,
                now=now,
                state="suppressed" if until is not None and kind == "reminder" else "pending",
                send_at=until,
            )
        told.add(_who(person))
    return told


def _contacts_payload(contacts: list[Recipient]) -> list[dict[str, str | None]]:
    return [{"name": c.name, "phone": c.phone} for c in contacts]


def _to_contacts(
    conn: psycopg.Connection,
    alert: Alert,
    kind: str,
    key: str,
    contacts: list[Recipient],
    desk: Person,
    now: datetime,
    **extra: Any,
) -> None:
    """Families are reached through platforms (call centres, SMS gateways) authorised for the
    resident's institution; their phone numbers go to no other platform. Without such a platform
    the contact rows record the failure and the duty desk gets the contacts to call."""
    institution_id = resident_institution(conn, alert.resident_id)
    hooks = [
        r[0] for r in conn.execute(queries.CONTACT_WEBHOOKS, {"institution_id": institution_id})
    ]
    payload = {
        **_payload(conn, alert, kind, **extra),
        "notify_contacts": _contacts_payload(contacts),
    }
    for hook_id in hooks:
        _notify(
            conn,
            alert_id=alert.id,
            kind=kind,
            key=key + ":contacts",
            recipient_kind="webhook",
            recipient_id=str(hook_id),
            channel="webhook",
            payload=payload,
            now=now,
        )
    reason = (
        None
        if hooks
        else f"no platform authorised for institution {institution_id} reaches emergency contacts"
    )
    for contact in contacts:
        _notify(
            conn,
            alert_id=alert.id,
            kind=kind,
            key=key,
            recipient_kind="contact",
            recipient_id=contact.id,
            channel="webhook",
            payload=payload,
            now=now,
            # A record: the platforms' rows above carry the delivery.
            state="suppressed" if hooks else "failed",
            error=reason,
        )
    if reason is not None:
        _contacts_to_desk(conn, alert, key, contacts, desk, now, reason)


def _contacts_to_desk(
    conn: psycopg.Connection,
    alert: Alert,
    key: str,
    contacts: list[Recipient],
    desk: Person,
    now: datetime,
    reason: str,
) -> None:
    _transition(conn, alert, now, "system", "contacts_unreached", alert.state, note=reason)
    _to_people(
        conn,
        alert,
        "contacts_unreached",
        key + ":contacts-desk",
        [desk],
        now,
        reason=reason,
        notify_contacts=_contacts_payload(contacts),
    )


def _to_webhooks(
    conn: psycopg.Connection,
    alert: Alert,
    kind: str,
    key: str,
    now: datetime,
    skip: set[Who] | frozenset[Who] = frozenset(),
) -> set[Who]:
    body = _payload(conn, alert, kind)
    told: set[Who] = set()
    institution_id = resident_institution(conn, alert.resident_id)
    for hook_id, _name, _url, _secret, min_severity in conn.execute(
        queries.WEBHOOKS, {"institution_id": institution_id}
    ).fetchall():
        who = ("webhook", str(hook_id))
        if who in skip or SEVERITY_RANK[alert.severity] < SEVERITY_RANK[min_severity]:
            continue
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
        told.add(who)
    return told


def _to_device(
    conn: psycopg.Connection,
    alert: Alert,
    kind: str,
    key: str,
    now: datetime,
    status: str,
    device_id: str | None = None,
) -> None:
    """Tell the SOS/fall device (the one that sent the event) what happened to its call."""
    device_id = device_id or alert.device_id
    if alert.rule not in EVENT_RULES or not device_id:
        return
    payload = {"type": alert.rule, "alert_id": alert.id, "status": status, "at": now.isoformat()}
    _notify(
        conn,
        alert_id=alert.id,
        kind=kind,
        key=key,
        recipient_kind="device",
        recipient_id=device_id,
        channel="device_ack",
        payload=payload,
        now=now,
    )


def _notified(
    conn: psycopg.Connection, alert: Alert, now: datetime, skip_snoozed: bool
) -> list[Person]:
    """The doctors and desks told of this alert so far (raised, escalation). A snooze silences its
    person's reminders, but never on a critical alert."""
    circle = load_circle(conn, alert.resident_id, now)
    rows = conn.execute(queries.NOTIFIED_RECIPIENTS, (alert.id,)).fetchall()
    snoozers = (
        {str(r[0]) for r in conn.execute(queries.ACTIVE_SNOOZERS, (alert.id, now))}
        if skip_snoozed and alert.severity != "critical"
        else set()
    )
    everyone: dict[str, Person] = {}
    for person in (
        circle.contracted_doctor,
        circle.duty_desk,
        circle.partner_duty_desk,
        *circle.team,
    ):
        if person is not None:
            everyone[str(person.id)] = person
    chosen: list[Person] = []
    for kind, rid in rows:
        if kind != "doctor" or rid in snoozers:
            continue
        who = everyone.get(rid) or _person(conn, int(rid))
        if who is not None:
            chosen.append(who)
    return chosen


def _person(conn: psycopg.Connection, doctor_id: int) -> Person | None:
    row = conn.execute(queries.DOCTOR_PERSON, (doctor_id,)).fetchone()
    if row is None:
        return None
    return Person(row[0], row[1], row[2], row[3] or {}, row[4], row[5], row[6])


def _involved(conn: psycopg.Connection, alert: Alert, now: datetime) -> list[Person]:
    """Everyone told of the alert so far, and whoever acknowledged it (they may not have been)."""
    people = _notified(conn, alert, now, False)
    doctor_id = _actor_doctor(conn, alert.acknowledged_by or "")
    if doctor_id is not None and doctor_id not in {p.id for p in people}:
        acknowledger = _person(conn, doctor_id)
        if acknowledger is not None:
            people.append(acknowledger)
    return people


def _actor_doctor(conn: psycopg.Connection, actor: str) -> int | None:
    """The doctor behind an actor: `doctor:<id>` (CLI, tests) or `user:<id>` (the API; older
    records `user:<id>:<username>`)."""
    kind, _sep, rest = actor.partition(":")
    number = rest.partition(":")[0]
    if not number.isdigit() or len(number) > 15:  # free text from the CLI: ids fit in 2^53
        return None
    if kind == "doctor":
        return int(number)
    if kind == "user":
        row = conn.execute(queries.USER_DOCTOR, (int(number),)).fetchone()
        return int(row[0]) if row and row[0] is not None else None
    return None


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
        return _lock(conn, existing.id)


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
    _transition(conn, alert, now, actor, "raised", alert.state, note="; ".join(notes) or None)
    return _advance(conn, alert, now)


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
    tid = _transition(
        conn, existing, now, actor, "severity_raised", existing.state, finding.severity
    )
    updated = _lock(conn, existing.id)
    key = f"a{existing.id}:sev{tid}"
    told = _to_people(conn, updated, "severity_raised", key, _involved(conn, updated, now), now)
    told |= _to_webhooks(conn, updated, "severity_raised", key, now)
    if updated.state == "pending":
        return updated  # its round starts when the window ends, under the new severity's policy
    base = updated.escalation_base or updated.opened_at
    if updated.state == "acknowledged":
        _transition(
            conn,
            updated,
            now,
            "system",
            "reopened",
            "open",
            note=f"worse ({finding.severity}) after the acknowledgement",
        )
        base = now
    conn.execute(queries.NEW_ROUND, {"id": existing.id, "base": base})
    return _advance(conn, _lock(conn, existing.id), now, already=told)


def _event_again(
    conn: psycopg.Connection, existing: Alert, finding: Finding, now: datetime, actor: str
) -> Alert:
    """Another SOS press or fall on an unresolved alert of the same rule."""
    late = bool(finding.detail.get("late"))
    source = finding.device_id or "?"
    if late:
        # History: counted and recorded, nobody is alarmed again, the alert keeps what it says.
        conn.execute(queries.COUNT_OCCURRENCE, (existing.id,))
        _transition(
            conn,
            existing,
            now,
            actor,
            "repeated",
            existing.state,
            note=f"late {finding.rule} event from {source}, occurred "
            f"{finding.detail.get('occurred_at')}",
        )
        return _lock(conn, existing.id)
    conn.execute(
        queries.REPEAT_ALERT, {"id": existing.id, "now": now, "detail": Jsonb(finding.detail)}
    )
    if existing.late:
        conn.execute(
            queries.SET_DESCRIPTION,
            {"id": existing.id, "title": finding.title, "detail": Jsonb(finding.detail)},
        )
    if existing.state == "pending":
        return _lock(conn, existing.id)  # a fall inside its window: the window runs on
    tid = _transition(
        conn,
        existing,
        now,
        actor,
        "repeated",
        existing.state,
        note=f"{finding.rule} again from {source}",
    )
    updated = _lock(conn, existing.id)
    key = f"a{existing.id}:rep{tid}"
    told = _to_people(conn, updated, "repeated", key, _involved(conn, updated, now), now)
    told |= _to_webhooks(conn, updated, "repeated", key, now)
    _to_device(conn, updated, "repeated", key, now, "doctor_notified", finding.device_id)
    if existing.state == "acknowledged" or existing.late:
        if existing.state == "acknowledged":
            _transition(
                conn,
                updated,
                now,
                "system",
                "reopened",
                "open",
                note=f"{finding.rule} again after the acknowledgement",
            )
        conn.execute(queries.NEW_ROUND, {"id": existing.id, "base": now})
        updated = _advance(conn, _lock(conn, existing.id), now, already=told)
    return updated


def _tier_key(alert: Alert, tier: int) -> str:
    if alert.escalation_round == 0:
        return f"a{alert.id}:t{tier}"
    return f"a{alert.id}:e{alert.escalation_round}t{tier}"


def _advance(
    conn: psycopg.Connection,
    alert: Alert,
    now: datetime,
    already: set[Who] | frozenset[Who] = frozenset(),
) -> Alert:
    """Notify every tier of the round that is due by `now` (in order) and schedule the next tier
    and reminder. `already`: told of this very change a moment ago, not again."""
    if (
        alert.state not in ("pending", "open")
        or alert.next_tier_at is None
        or alert.next_tier_at > now
    ):
        return alert
    policy = load_policy(conn, alert.severity, resident_institution(conn, alert.resident_id))
    circle = load_circle(conn, alert.resident_id, now)
    # A late event: the first tier sees it (and is reminded); it is not a live emergency to
    # escalate to the team and the family.
    tiers = policy.tiers[:1] if alert.late else policy.tiers
    base = alert.escalation_base or alert.opened_at
    tier, state = alert.tier, alert.state
    next_reminder = alert.next_reminder_at
    current = _with_state(alert, "open")
    while tier < len(tiers) and base + timedelta(seconds=tiers[tier].after_s) <= now:
        kind = "raised" if tier == 0 else "escalation"
        key = _tier_key(alert, tier)
        people = [p for p in tier_people(circle, tiers[tier]) if _who(p) not in already]
        _to_people(
            conn, current, kind, key, [p for p in people if isinstance(p, Person)], now, tier=tier
        )
        contacts = [p for p in people if isinstance(p, Recipient)]
        if contacts:
            _to_contacts(conn, current, kind, key, contacts, circle.duty_desk, now, tier=tier)
        _to_webhooks(conn, current, kind, key, now, skip=already)
        if tier == 0:
            if alert.escalation_round == 0 and not alert.late:
                _to_device(conn, current, kind, key, now, "doctor_notified")
            if policy.reminder_every_s:
                next_reminder = now + timedelta(seconds=policy.reminder_every_s)
        else:
            _transition(conn, current, now, "system", "escalated", "open", note=f"tier {tier}")
        if state == "pending":
            _transition(conn, alert, now, "system", "opened", "open")
        state = "open"
        tier += 1
    due = base + timedelta(seconds=tiers[tier].after_s) if tier < len(tiers) else None
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
    """Escalations, reminders and contact fall-backs that are due; returns how many alerts were
    touched."""
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
                    # From now: after a pause (a restart) one reminder, not a burst catching up.
                    "next_reminder_at": now + every if every else None,
                    "reminders_sent": alert.reminders_sent + 1,
                },
            )
        touched += 1
    touched += _contacts_fallback(conn, now)
    return touched


def _contacts_fallback(conn: psycopg.Connection, now: datetime) -> int:
    """Contact deliveries that no platform accepted in time (down, refusing): the desk calls."""
    rows = conn.execute(
        queries.CONTACTS_UNDELIVERED,
        {"deadline": now - CONTACTS_DEADLINE, "since": now - timedelta(days=1)},
    ).fetchall()
    for alert_id, step in rows:
        with conn.transaction():
            alert = _lock(conn, alert_id)
            if alert.state == "resolved":
                continue
            circle = load_circle(conn, alert.resident_id, now)
            reached = {
                r[0] for r in conn.execute(queries.CONTACTS_OF_STEP, (alert_id, step + ":contact:"))
            }
            contacts = [c for c in circle.contacts if c.id in reached] or list(circle.contacts)
            reason = (
                f"no platform accepted the emergency contacts' notification within "
                f"{CONTACTS_DEADLINE}"
            )
            _contacts_to_desk(conn, alert, step, contacts, circle.duty_desk, now, reason)
    return len(rows)


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
        # People (doctors' apps, mail) are told who by name; the actor may hold a username.
        row = conn.execute(queries.ACTOR_NAME, (actor,)).fetchone()
        by = row[0] if row else actor
        _to_people(
            conn, updated, "acknowledged", key, _notified(conn, updated, now, False), now, by=by
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
    """Close an alert; a person must say why (the note), the system says what cleared.

    A reading alert resolved while its condition still holds is raised again by the rule as a new
    alert that says it follows this one."""
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
        _transition(
            conn,
            found,
            now,
            actor,
            "device_cancel",
            found.state,
            note=f"{kind} from {device_id} at {cancelled_at.isoformat()} does not count: "
            f"{refusal}; a person must check and resolve",
        )
        return _lock(conn, found.id)


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
        alert = _lock(conn, alert_id)
        _transition(conn, alert, now, actor, "commented", alert.state, note=text)
        return alert
