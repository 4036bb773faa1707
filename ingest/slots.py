"""Stable names for ingest processes that were started without one (replicas, containers).

A persistent MQTT session is resumed only by a client with the same id, and a shared subscription
keeps handing a vanished member its share of the messages. So a replica claims the lowest free
numbered slot, held by a PostgreSQL advisory lock for as long as the process lives: a recreated
replica takes the slot (and the session, with its queued messages) its predecessor left.
"""

from __future__ import annotations

import psycopg

from store.db import connect_with_retry

# Advisory-lock key space of the ingest slots: (LOCK_CLASS, slot number).
LOCK_CLASS = 0x0E1D
MAX_SLOTS = 256


class SlotClaim:
    def __init__(self, conn: psycopg.Connection, slot: int) -> None:
        self.conn = conn
        self.slot = slot

    @property
    def instance(self) -> str:
        return f"slot{self.slot}"

    def release(self) -> None:
        self.conn.close()


ROLE_OFFSET = {"all": 0, "telemetry": 1, "events": 2}


def claim_slot(database_url: str, role: str = "all") -> SlotClaim:
    """Each role numbers its slots on its own, so an events process always finds its session."""
    conn = connect_with_retry(
        database_url, autocommit=True, application_name="eldercare-ingest-slot"
    )
    lock_class = LOCK_CLASS + ROLE_OFFSET[role]
    for slot in range(1, MAX_SLOTS + 1):
        row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (lock_class, slot)).fetchone()
        if row and row[0]:
            return SlotClaim(conn, slot)
    conn.close()
    raise RuntimeError(f"all {MAX_SLOTS} ingest slots are taken; pass --instance explicitly")
