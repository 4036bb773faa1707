"""Who is calling: a bearer token turned into a `Principal` (a person's login or a platform)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from api import queries
from api.access.errors import AccessError
from api.access.tokens import token_hash


@dataclass(frozen=True)
class Principal:
    kind: str  # 'user' or 'platform'
    id: int
    name: str
    role: str  # a user role, or 'platform'
    token_id: int
    scopes: tuple[str, ...] = ("read",)
    doctor_id: int | None = None
    doctor_institution: int | None = None
    institutions: tuple[int, ...] = field(default_factory=tuple)
    token_kind: str = "session"  # session, api_key or access_token
    # Refusals already written to the audit log during this request (so they are written once).
    refusals: list[str] = field(default_factory=list, compare=False, repr=False)

    @property
    def actor(self) -> str:
        """Who, for the audit log (which stays on the server): with the login's name."""
        return f"{self.kind}:{self.id}:{self.name}"

    @property
    def ref(self) -> str:
        """Who, wherever others can read it (alert history, thresholds): an opaque id, never the
        username; people are shown the display name behind it (migration 0015: actor_name)."""
        return f"{self.kind}:{self.id}"

    @property
    def acts_for(self) -> list[int]:
        """The institutions this caller acts for, as recorded in the audit log."""
        ids = set(self.institutions)
        if self.doctor_institution is not None:
            ids.add(self.doctor_institution)
        return sorted(ids)

    @property
    def can_write(self) -> bool:
        return self.kind == "user" and "write" in self.scopes

    def visibility(self) -> dict[str, Any]:
        """Parameters of api/queries.py: VISIBLE (the may_see_resident rule)."""
        return {
            "doctor_id": self.doctor_id,
            "doctor_institution": self.doctor_institution,
            "institutions": list(self.institutions),
            "everyone": self.role == "system_admin",
            # Duty desks also see alerts without a resident that were sent to them (queries._SEE_A).
            "desk": self.role == "duty_desk",
            # People see who acted by name, platforms by opaque id (actor_shown, migration 0015).
            "people": self.kind == "user",
        }


def authenticate(conn: psycopg.Connection, token: str | None) -> Principal:
    if not token:
        raise AccessError(401, "missing credentials: send 'Authorization: Bearer <token>'")
    row = conn.execute(queries.SELECT_TOKEN, (token_hash(token),)).fetchone()
    if row is None:
        raise AccessError(401, "unknown or revoked token; log in again")
    (
        token_id,
        kind,
        scopes,
        expires_at,
        uid,
        username,
        role,
        doctor_id,
        institution_id,
        doctor_institution,
        pid,
        pname,
        pinstitutions,
    ) = row
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise AccessError(401, "the token has expired; log in again")
    conn.execute(queries.TOUCH_TOKEN, (token_id,))
    if kind in ("api_key", "access_token") and pid is not None:
        return Principal(
            "platform",
            pid,
            pname,
            "platform",
            token_id,
            tuple(scopes),
            institutions=tuple(pinstitutions or ()),
            token_kind=kind,
        )
    if uid is None:
        raise AccessError(401, "the account or platform behind this token is disabled")
    # A doctor sees the doctor's residents: an institution on a doctor's login (refused since
    # migration 0009, possible before) must not widen that to the whole institution.
    institutions = tuple(i for i in (institution_id,) if i is not None and role != "doctor")
    return Principal(
        "user",
        uid,
        username,
        role,
        token_id,
        tuple(scopes),
        doctor_id,
        doctor_institution,
        institutions,
    )
