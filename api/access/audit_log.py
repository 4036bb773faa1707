"""The audit log: one row per thing a caller did or was refused (never a password or token)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from api import queries
from api.access.principals import Principal


def audit(
    conn: psycopg.Connection,
    who: Principal,
    action: str,
    resource: str,
    *,
    address: str | None,
    resident_id: int | None = None,
    resident_ids: Iterable[int] | None = None,
    outcome: str = "ok",
    detail: dict[str, Any] | None = None,
) -> None:
    """One audit row for what `who` did; `resident_ids`: the residents a list returned."""
    if outcome != "ok":
        who.refusals.append(action)
    record(
        conn,
        who.actor,
        action,
        resource,
        address=address,
        resident_id=resident_id,
        resident_ids=resident_ids,
        outcome=outcome,
        detail=detail,
        acts_for=who.acts_for,
    )


def record(
    conn: psycopg.Connection,
    actor: str,
    action: str,
    resource: str,
    *,
    address: str | None,
    resident_id: int | None = None,
    resident_ids: Iterable[int] | None = None,
    outcome: str = "ok",
    detail: dict[str, Any] | None = None,
    acts_for: list[int] | None = None,
) -> None:
    conn.execute(
        queries.INSERT_AUDIT,
        (
            actor,
            action,
            resident_id,
            None if resident_ids is None else sorted(set(resident_ids)),
            resource,
            address,
            outcome,
            Jsonb(detail or {}),
            acts_for or None,
        ),
    )
