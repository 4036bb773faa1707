"""Fan-out: turn an alert change into outbox rows for doctors and duty desks, emergency contacts
(through authorised platforms), webhooks and the SOS/fall device, and say who was told.

Idempotency keys are derived from the step's key, so a retried step enqueues nothing twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from alerts import queries, transitions
from alerts.channels.base import Recipient
from alerts.circle import load_circle, resident_institution
from alerts.device_events import EVENT_RULES
from alerts.models import SEVERITY_RANK, Alert
from alerts.routing import Person, channels_for, quiet_until

Who = tuple[str, str]  # (recipient_kind, recipient_id) as in the notification table


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


def who(person: Person | Recipient) -> Who:
    return ("contact", person.id) if isinstance(person, Recipient) else ("doctor", str(person.id))


def to_people(
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
        told.add(who(person))
    return told


def _contacts_payload(contacts: list[Recipient]) -> list[dict[str, str | None]]:
    return [{"name": c.name, "phone": c.phone} for c in contacts]


def to_contacts(
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
        contacts_to_desk(conn, alert, key, contacts, desk, now, reason)


def contacts_to_desk(
    conn: psycopg.Connection,
    alert: Alert,
    key: str,
    contacts: list[Recipient],
    desk: Person,
    now: datetime,
    reason: str,
) -> None:
    transitions.record(conn, alert, now, "system", "contacts_unreached", alert.state, note=reason)
    to_people(
        conn,
        alert,
        "contacts_unreached",
        key + ":contacts-desk",
        [desk],
        now,
        reason=reason,
        notify_contacts=_contacts_payload(contacts),
    )


def to_webhooks(
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


def to_device(
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


def notified(
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


def involved(conn: psycopg.Connection, alert: Alert, now: datetime) -> list[Person]:
    """Everyone told of the alert so far, and whoever acknowledged it (they may not have been)."""
    people = notified(conn, alert, now, False)
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
