"""Loads a resident's care circle (contracted doctor, team, duty desks, contacts) and the policy."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from alerts import queries
from alerts.channels.base import Recipient
from alerts.models import Severity
from alerts.routing import CareCircle, Person, Policy


def _person(row: tuple[Any, ...]) -> Person:
    return Person(row[0], row[1], row[2], row[3] or {}, row[4], row[5], row[6])


def _duty_desk(conn: psycopg.Connection, institution_id: int | None) -> Person | None:
    if institution_id is None:
        return None
    row = conn.execute(queries.DUTY_DESK, {"institution_id": institution_id}).fetchone()
    return _person(row) if row else None


def load_circle(conn: psycopg.Connection, resident_id: int | None, now: datetime) -> CareCircle:
    default_row = conn.execute(queries.DEFAULT_DUTY_DESK).fetchone()
    assert default_row is not None, "migration 0003 creates the default duty desk"
    default_desk = _person(default_row)
    if resident_id is None:  # an event from a device bound to nobody
        return CareCircle(None, (), default_desk, None, ())
    home = conn.execute(queries.RESIDENT_INSTITUTION, (resident_id,)).fetchone()
    institution_id, institution_kind = home if home else (None, None)
    doctor_row = conn.execute(
        queries.CONTRACTED_DOCTOR, {"resident_id": resident_id, "now": now}
    ).fetchone()
    doctor = _person(doctor_row) if doctor_row else None
    team: tuple[Person, ...] = ()
    if doctor_row is not None and doctor_row[7]:
        rows = conn.execute(
            queries.TEAM,
            {"team": doctor_row[7], "institution_id": doctor_row[8], "doctor_id": doctor_row[0]},
        ).fetchall()
        team = tuple(_person(r) for r in rows)
    partner_desk = None
    if institution_kind == "care_home":
        partner = conn.execute(
            queries.PARTNER_INSTITUTION, {"institution_id": institution_id, "now": now}
        ).fetchone()
        partner_desk = _duty_desk(conn, partner[0]) if partner else None
    desk = (
        _duty_desk(conn, institution_id)
        or (_duty_desk(conn, doctor_row[8]) if doctor_row else None)
        or partner_desk
        or default_desk
    )
    contacts = tuple(
        Recipient("contact", str(r[0]), r[1], phone=r[2])
        for r in conn.execute(queries.CONTACTS, (resident_id,)).fetchall()
    )
    return CareCircle(doctor, team, desk, partner_desk, contacts)


def load_policy(conn: psycopg.Connection, severity: Severity, institution_id: int | None) -> Policy:
    row = conn.execute(
        queries.POLICY, {"severity": severity, "institution_id": institution_id}
    ).fetchone()
    assert row is not None, "migration 0003 creates the default policies"
    return Policy.from_row(severity, row[0], row[1])


def resident_institution(conn: psycopg.Connection, resident_id: int | None) -> int | None:
    if resident_id is None:
        return None
    row = conn.execute(queries.RESIDENT_INSTITUTION, (resident_id,)).fetchone()
    return row[0] if row else None
