"""The demo care circle of `make run`: a health centre, two family doctors with logins, contracts,
and each doctor's app login (a reference app, `eldercare care app-listen`, plays their phones).

Idempotent: a second run finds what the first created; the doctors' passwords are set anew each
start (only their hashes are stored) and printed once.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

from api.access import hash_password
from care import service as care
from devices import service as devices

CENTRE = "演示社区卫生服务中心 (demo health centre)"
DOCTORS = (
    ("doctor1", "张医生 Dr Zhang", "zhang@demo.invalid"),
    ("doctor2", "李医生 Dr Li", "li@demo.invalid"),
)


@dataclass(frozen=True)
class DemoLogin:
    username: str
    password: str
    doctor: str
    residents: int
    doctor_id: int
    app_username: str
    app_password: str


def provision(conn: psycopg.Connection, resident_ids: list[int]) -> list[DemoLogin]:
    row = conn.execute("SELECT id FROM institution WHERE name = %s", (CENTRE,)).fetchone()
    centre_id = (
        row[0]
        if row
        else care.add_institution(conn, name=CENTRE, kind="community_health_centre")["id"]
    )
    logins = []
    for index, (username, name, email) in enumerate(DOCTORS):
        found = conn.execute(
            "SELECT id FROM doctor WHERE name = %s AND institution_id = %s", (name, centre_id)
        ).fetchone()
        doctor_id = (
            found[0]
            if found
            else care.add_doctor(
                conn, name=name, institution_id=centre_id, team="家庭医生一队", email=email
            )["id"]
        )
        password = secrets.token_urlsafe(9)
        conn.execute(
            "INSERT INTO app_user (username, password_hash, role, doctor_id) VALUES (%s, %s, 'doctor', %s) "
            "ON CONFLICT (username) DO UPDATE SET password_hash = EXCLUDED.password_hash, active = true",
            (username, hash_password(password), doctor_id),
        )
        mine = resident_ids[index :: len(DOCTORS)]
        for resident_id in mine:
            signed = conn.execute(
                "SELECT 1 FROM contract WHERE resident_id = %s AND (valid_to IS NULL OR valid_to > now())",
                (resident_id,),
            ).fetchone()
            if not signed:
                care.add_contract(
                    conn,
                    resident_id=resident_id,
                    doctor_id=doctor_id,
                    valid_from=datetime.now(UTC) - timedelta(days=365),
                )
            conn.execute(
                "UPDATE resident SET institution_id = %s WHERE id = %s AND institution_id IS NULL",
                (centre_id, resident_id),
            )
        # Without an app to acknowledge them, every critical alert's app notification would fail
        # ("no app login") or wait a day: the demo's doctors have phones too.
        app = devices.create_doctor_login(conn, doctor_id=doctor_id, rotate=True)
        logins.append(
            DemoLogin(username, password, name, len(mine), doctor_id, app.username, app.password)
        )
    return logins
