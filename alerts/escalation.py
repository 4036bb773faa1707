"""Escalation: notify a policy's tiers on schedule, send reminders, and fall back to the duty desk
when no platform took the emergency contacts' notification (`run_due`, each engine tick).

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

import psycopg

from alerts import fanout, queries, transitions
from alerts.channels.base import Recipient
from alerts.circle import load_circle, load_policy, resident_institution
from alerts.models import Alert, AlertState
from alerts.routing import Person, tier_people

# A contact delivery no platform has accepted by then: the duty desk is asked to call instead.
CONTACTS_DEADLINE = timedelta(minutes=2)


def _tier_key(alert: Alert, tier: int) -> str:
    if alert.escalation_round == 0:
        return f"a{alert.id}:t{tier}"
    return f"a{alert.id}:e{alert.escalation_round}t{tier}"


def advance(
    conn: psycopg.Connection,
    alert: Alert,
    now: datetime,
    already: set[fanout.Who] | frozenset[fanout.Who] = frozenset(),
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
        people = [p for p in tier_people(circle, tiers[tier]) if fanout.who(p) not in already]
        fanout.to_people(
            conn, current, kind, key, [p for p in people if isinstance(p, Person)], now, tier=tier
        )
        contacts = [p for p in people if isinstance(p, Recipient)]
        if contacts:
            fanout.to_contacts(conn, current, kind, key, contacts, circle.duty_desk, now, tier=tier)
        fanout.to_webhooks(conn, current, kind, key, now, skip=already)
        if tier == 0:
            if alert.escalation_round == 0 and not alert.late:
                fanout.to_device(conn, current, kind, key, now, "doctor_notified")
            if policy.reminder_every_s:
                next_reminder = now + timedelta(seconds=policy.reminder_every_s)
        else:
            transitions.record(
                conn, current, now, "system", "escalated", "open", note=f"tier {tier}"
            )
        if state == "pending":
            transitions.record(conn, alert, now, "system", "opened", "open")
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
    return transitions.lock(conn, alert.id)


def _with_state(alert: Alert, state: AlertState) -> Alert:
    return Alert(**{**asdict(alert), "state": state})


def run_due(conn: psycopg.Connection, now: datetime) -> int:
    """Escalations, reminders and contact fall-backs that are due; returns how many alerts were
    touched."""
    touched = 0
    for (alert_id,) in conn.execute(queries.DUE_TIERS, {"now": now}).fetchall():
        with conn.transaction():
            advance(conn, transitions.lock(conn, alert_id), now)
        touched += 1
    for (alert_id,) in conn.execute(queries.DUE_REMINDERS, {"now": now}).fetchall():
        with conn.transaction():
            alert = transitions.lock(conn, alert_id)
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
            fanout.to_people(
                conn,
                alert,
                "reminder",
                key,
                fanout.notified(conn, alert, now, True),
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
            alert = transitions.lock(conn, alert_id)
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
            fanout.contacts_to_desk(conn, alert, step, contacts, circle.duty_desk, now, reason)
    return len(rows)
