"""Which processes are ready for devices, in the `readiness` table (migration 0017).

A device that publishes before ingest has subscribed loses its message (on a first start no broker
session exists yet to keep it). So each process reports itself ready only when it truly is: ingest
once the broker has acknowledged every subscription (SUBACK), the alert engine once it LISTENs for
device events. `eldercare run` announces "running" and `/readyz` answers 200 only from these rows.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg.rows import class_row

from store.db import connect, keep_connected

log = logging.getLogger(__name__)

INGEST_TELEMETRY = "ingest-telemetry"
INGEST_EVENTS = "ingest-events"
INGEST_STATUS = "ingest-status"
ALERTS = "alerts"
# What must be ready before devices may publish: every ingest session and the alert engine.
REQUIRED = (INGEST_TELEMETRY, INGEST_EVENTS, INGEST_STATUS, ALERTS)

HEARTBEAT_S = 5.0
# Three missed heartbeats: a killed process (no clean exit to delete its rows) stops counting.
STALE_AFTER = timedelta(seconds=3 * HEARTBEAT_S)
# Rows of processes killed long ago are deleted by whoever next starts reporting.
FORGET_AFTER = timedelta(days=1)

# The database's clock dates every row and judges freshness: hosts' clocks may differ.
UPSERT_READY = """
INSERT INTO readiness (component, host, pid, ready_at, heartbeat_at)
VALUES (%(component)s, %(host)s, %(pid)s, now(), now())
ON CONFLICT (component, host, pid) DO UPDATE SET heartbeat_at = now()
"""
DELETE_COMPONENT = """
DELETE FROM readiness WHERE component = %(component)s AND host = %(host)s AND pid = %(pid)s
"""
DELETE_PROCESS = "DELETE FROM readiness WHERE host = %(host)s AND pid = %(pid)s"
DELETE_FORGOTTEN = "DELETE FROM readiness WHERE heartbeat_at < now() - %(after)s"
SELECT_READINESS = """
SELECT component, host, pid, ready_at, heartbeat_at, now() AS checked_at FROM readiness
ORDER BY component, host, pid
"""
SELECT_NOW = "SELECT now()"


@dataclass(frozen=True)
class Readiness:
    component: str
    host: str
    pid: int
    ready_at: datetime
    heartbeat_at: datetime
    checked_at: datetime


def not_ready(
    rows: Iterable[Readiness],
    required: Iterable[str],
    now: datetime,
    *,
    processes: Collection[tuple[str, int]] | None = None,
    stale_after: timedelta = STALE_AFTER,
) -> list[str]:
    """The required components (in the order given) with no row of a fresh heartbeat; with
    `processes` ((host, pid) pairs), only rows of those processes count."""
    ready = {
        row.component
        for row in rows
        if now - row.heartbeat_at <= stale_after
        and (processes is None or (row.host, row.pid) in processes)
    }
    return [component for component in required if component not in ready]


def load(conn: psycopg.Connection) -> tuple[list[Readiness], datetime]:
    """All rows, and the database's `now` to judge them by."""
    with conn.cursor(row_factory=class_row(Readiness)) as cur:
        rows = cur.execute(SELECT_READINESS).fetchall()
    if rows:
        return rows, rows[0].checked_at
    now = conn.execute(SELECT_NOW).fetchone()
    assert now is not None
    return rows, now[0]


def components_ready(conn: psycopg.Connection) -> tuple[bool, list[str]]:
    """(True, []) when every required component has a fresh ready row, else (False, missing)."""
    rows, now = load(conn)
    missing = not_ready(rows, REQUIRED, now)
    return not missing, missing


def this_process() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


class Reporter:
    """Keeps this process's rows true: a component's row exists while `checks[component]()` says
    it is ready (checked every 0.1 s, written at once on a change and every HEARTBEAT_S), and is
    deleted when it stops being ready and when the reporter stops."""

    def __init__(
        self,
        url: str,
        checks: Mapping[str, Callable[[], bool]],
        *,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self.url = url
        self.checks = dict(checks)
        self.heartbeat_s = heartbeat_s
        self.host, self.pid = this_process()
        self.stop_event = threading.Event()
        self._thread = threading.Thread(target=self._run, name="readiness", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self._thread.join(2)  # longer only while it waits for an unreachable database
        try:
            with connect(self.url, autocommit=True, application_name="eldercare-readiness") as c:
                c.execute(DELETE_PROCESS, {"host": self.host, "pid": self.pid})
        except psycopg.Error as exc:  # the rows go stale by themselves
            log.warning("readiness: could not delete this process's rows (%s)", exc)

    def _run(self) -> None:
        keep_connected(self.url, "eldercare-readiness", self.stop_event, self._report)

    def _report(self, conn: psycopg.Connection) -> None:
        conn.execute(DELETE_FORGOTTEN, {"after": FORGET_AFTER})
        written: dict[str, bool] = {}  # as last written on this connection
        next_beat = 0.0
        while not self.stop_event.is_set():
            state = {component: check() for component, check in self.checks.items()}
            if state != written or time.monotonic() >= next_beat:
                for component, ready in state.items():
                    key = {"component": component, "host": self.host, "pid": self.pid}
                    conn.execute(UPSERT_READY if ready else DELETE_COMPONENT, key)
                    if ready != written.get(component):
                        log.info("%s %s", component, "ready" if ready else "not ready")
                written, next_beat = state, time.monotonic() + self.heartbeat_s
            self.stop_event.wait(0.1)
