"""Retention of the ingest tables, so that they do not grow forever.

- `telemetry_message` (one row per message, for deduplication): kept for the backfill window plus a
  margin; a re-send of anything older is refused as too old, so the id is no longer needed.
- `quarantine`: kept for a retention period, and per device only the newest N rows.

Every ingest process runs it every few minutes; an advisory lock lets one do it at a time. On plain
PostgreSQL the same thread keeps the hourly and daily rollups up to date every minute
(store/rollups.py; on TimescaleDB its continuous-aggregate policies do that).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import psycopg

from ingest import queries
from ingest.contract.envelope import now_utc
from store import rollups
from store.db import connect_with_retry, storage_kind

if TYPE_CHECKING:
    from ingest.settings import IngestSettings

log = logging.getLogger(__name__)

LOCK = (0x0E1D, 0x7E7E)  # advisory lock (class, key); ingest/slots.py uses other classes
BATCH = 5000  # rows per delete statement: short transactions, no long lock on the hot tables


@dataclass(frozen=True)
class Retention:
    message_ids: timedelta
    quarantine: timedelta
    quarantine_per_device: int


@dataclass(frozen=True)
class Pruned:
    telemetry_messages: int = 0
    quarantine_expired: int = 0
    quarantine_over_cap: int = 0
    skipped: bool = False  # another process held the lock

    @property
    def total(self) -> int:
        return self.telemetry_messages + self.quarantine_expired + self.quarantine_over_cap


def prune(conn: psycopg.Connection, retention: Retention, now: datetime) -> Pruned:
    """Delete what `retention` no longer keeps, as of `now`. `conn` must be in autocommit mode
    (each batch commits on its own)."""
    row = conn.execute(queries.TRY_LOCK, LOCK).fetchone()
    if not (row and row[0]):
        return Pruned(skipped=True)
    try:
        return Pruned(
            telemetry_messages=_in_batches(
                conn, queries.PRUNE_TELEMETRY_MESSAGES, now - retention.message_ids
            ),
            quarantine_expired=_in_batches(
                conn, queries.PRUNE_QUARANTINE_EXPIRED, now - retention.quarantine
            ),
            quarantine_over_cap=conn.execute(
                queries.PRUNE_QUARANTINE_OVER_CAP, {"cap": retention.quarantine_per_device}
            ).rowcount,
        )
    finally:
        conn.execute(queries.UNLOCK, LOCK)


def _in_batches(conn: psycopg.Connection, statement: str, before: datetime) -> int:
    total = 0
    while True:
        deleted = conn.execute(statement, {"before": before, "limit": BATCH}).rowcount
        total += deleted
        if deleted < BATCH:
            return total


class Maintenance:
    """A thread applying the retention every `maintenance_interval_s` seconds and, on plain
    PostgreSQL, refreshing the rollups every `rollup_interval_s`."""

    def __init__(self, database_url: str, ingest: IngestSettings) -> None:
        self.url = database_url
        self.interval = ingest.maintenance_interval_s
        self.rollup_interval = ingest.rollup_interval_s
        self.retention = ingest.retention
        self._storage: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-maintenance", daemon=True)

    def start(self) -> None:
        if self.interval > 0 or self.rollup_interval > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        # Not at once: a fleet of ingest processes restarted together would all start pruning.
        tick = min(i for i in (self.interval, self.rollup_interval) if i > 0)
        next_prune = next_rollup = 0.0
        elapsed = 0.0
        while not self._stop.wait(tick):
            elapsed += tick
            if self.rollup_interval > 0 and elapsed >= next_rollup:
                next_rollup = elapsed + self.rollup_interval
                self._guarded("rollup refresh", self._refresh_rollups)
            if self.interval > 0 and elapsed >= next_prune:
                next_prune = elapsed + self.interval
                self._guarded("retention", self._prune)

    def _guarded(self, what: str, job: Callable[[psycopg.Connection], None]) -> None:
        try:
            with connect_with_retry(
                self.url, autocommit=True, application_name="eldercare-ingest-maintenance"
            ) as conn:
                job(conn)
        except Exception:
            # Maintenance can wait for the next round; storing messages must not.
            log.exception("%s failed; trying again next round", what)

    def _prune(self, conn: psycopg.Connection) -> None:
        pruned = prune(conn, self.retention, now_utc())
        if pruned.total:
            log.info(
                "retention: %d message ids, %d expired and %d surplus quarantine rows deleted",
                pruned.telemetry_messages,
                pruned.quarantine_expired,
                pruned.quarantine_over_cap,
            )

    def _refresh_rollups(self, conn: psycopg.Connection) -> None:
        if self._storage is None:
            self._storage = storage_kind(conn)
        if self._storage == "timescaledb":
            return  # the continuous-aggregate policies refresh them
        written = rollups.refresh(conn, storage=self._storage, now=now_utc())
        if written:
            log.debug("rollups: %d buckets brought up to date", written)
