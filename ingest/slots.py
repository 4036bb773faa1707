"""Stable names for ingest processes that were started without one (replicas, containers).

A persistent MQTT session is resumed only by a client with the same id, and a shared subscription
keeps handing a vanished member its share of the messages. So a replica claims the lowest free
numbered slot, held by a PostgreSQL advisory lock for as long as the process lives: a recreated
replica takes the slot (and the session, with its queued messages) its predecessor left.

The lock lives only as long as its connection: after a database restart (or a terminated backend)
another replica can claim the same slot, and two processes with one client id take the broker
session from each other in turn. So the holder checks its lock (`watch`) and, once it is lost,
the process exits for a supervised restart, which claims a slot afresh. A check that gets no
answer in time (a silent network partition leaves the query waiting for hours) counts as lost too:
a restart is cheap (the broker keeps the session), two holders of one session are not.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

from ingest import queries
from store.db import connect_with_retry

log = logging.getLogger(__name__)

# Advisory-lock key space of the ingest slots: (LOCK_CLASS, slot number).
LOCK_CLASS = 0x0E1D
MAX_SLOTS = 256


class SlotClaim:
    def __init__(self, conn: psycopg.Connection, slot: int, lock_class: int = LOCK_CLASS) -> None:
        self.conn = conn
        self.slot = slot
        self.lock_class = lock_class
        self._stop = threading.Event()

    @property
    def instance(self) -> str:
        return f"slot{self.slot}"

    def holds_lock(self) -> bool:
        """True while this connection still holds the slot's lock (False once it is gone)."""
        try:
            row = self.conn.execute(queries.SLOT_LOCK_HELD, (self.lock_class, self.slot)).fetchone()
        except psycopg.Error:
            return False
        return bool(row and row[0])

    def holds_lock_within(self, deadline_s: float) -> bool | None:
        """`holds_lock`, or None when the database does not answer within `deadline_s`. The
        check runs on its own daemon thread, left behind if it hangs (the process then exits)."""
        answer: list[bool] = []
        done = threading.Event()

        def ask() -> None:
            answer.append(self.holds_lock())
            done.set()

        threading.Thread(target=ask, name="slot-check", daemon=True).start()
        return answer[0] if done.wait(deadline_s) else None

    def watch(
        self, on_lost: Callable[[], None], interval_s: float = 5.0, deadline_s: float = 10.0
    ) -> None:
        """Check the lock every `interval_s` on a daemon thread; call `on_lost` once it is gone
        or a check has had no answer for `deadline_s`."""

        def check() -> None:
            while not self._stop.wait(interval_s):
                held = self.holds_lock_within(deadline_s)
                if held:
                    continue
                if held is None:
                    log.critical(
                        "ingest slot %s: the database did not answer the lock check within "
                        "%.0f s; treating the slot as lost",
                        self.instance,
                        deadline_s,
                    )
                else:
                    log.critical(
                        "ingest slot %s: its database lock was lost (database restarted or "
                        "connection ended); another replica may claim the slot",
                        self.instance,
                    )
                on_lost()
                return

        threading.Thread(target=check, name="slot-watch", daemon=True).start()

    def release(self) -> None:
        self._stop.set()
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
            return SlotClaim(conn, slot, lock_class)
    conn.close()
    raise RuntimeError(f"all {MAX_SLOTS} ingest slots are taken; pass --instance explicitly")
