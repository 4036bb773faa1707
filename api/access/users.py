"""People's logins: their roles, and adding one with its password hashed."""

from __future__ import annotations

import psycopg

from api import queries
from api.access.errors import AccessError
from api.access.passwords import hash_password

ROLES = ("doctor", "duty_desk", "institution_admin", "system_admin")


def add_user(
    conn: psycopg.Connection,
    *,
    username: str,
    password: str,
    role: str,
    doctor_id: int | None = None,
    institution_id: int | None = None,
    display_name: str | None = None,
) -> int:
    """A login. `display_name` is what people are shown when it acts (else its doctor's name, else
    `user:<id>`): the username is never shown to anyone."""
    if role not in ROLES:
        raise AccessError(422, f"role must be one of {', '.join(ROLES)}")
    if role == "doctor" and institution_id is not None:
        # It would let the doctor see every resident of the institution, not only their own.
        raise AccessError(
            422,
            "a doctor's login has --doctor only; the doctor's institution comes from the doctor",
        )
    try:
        row = conn.execute(
            queries.INSERT_USER,
            (username, hash_password(password), role, doctor_id, institution_id, display_name),
        ).fetchone()
    except psycopg.errors.UniqueViolation:
        raise AccessError(409, f"user {username!r} exists already") from None
    except psycopg.errors.CheckViolation:
        raise AccessError(
            422,
            "a doctor user needs --doctor; a duty desk or institution admin needs --institution; "
            "a display name has 1 to 100 characters",
        ) from None
    assert row is not None
    user_id: int = row[0]
    return user_id
