"""One listener per API process for the live stream, fanning out to every open stream.

It LISTENs for `eldercare_alert` (any process's alert changes, on any machine), reads the new
transitions once, and polls the vitals the ingestor stored recently (one cheap query every few
seconds, only while somebody is watching). Each open stream gets everything on a queue and keeps
what its caller may see: an open stream holds no thread and no database connection.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from api import queries
from ingest.metrics import METRICS

log = logging.getLogger(__name__)

# Transitions committed out of id order (two transactions at once) are still delivered while
# they are within this many ids of the newest one read.
LOOKBACK_IDS = 256
# A stream whose client reads slower than events come falls back to reading from the database.
QUEUE_MAX = 1000
# The ingestor stamps received_at when a message arrives and commits a little later; each vitals
# poll looks this far back before the previous one, and keeps only what is newer than it sent.
VITALS_SLACK = timedelta(minutes=1)


@dataclass(frozen=True)
class Timing:
    heartbeat_s: float = 15.0  # a comment line to keep proxies open; the token is re-checked too
    vitals_poll_s: float = 5.0
    tick_s: float = 5.0  # read transitions even without a notify (a lost one costs this long)


@dataclass(frozen=True)
class AlertChange:
    id: int
    resident_id: int | None  # None: a device bound to nobody; seen by the desks notified of it
    data: dict[str, Any]
    desk_ids: frozenset[int] = frozenset()
    desk_institutions: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Vitals:
    resident_id: int
    data: dict[str, Any]


Item = AlertChange | Vitals


class Subscription:
    """One open stream's inbox."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=QUEUE_MAX)
        self.overflowed = False

    def put(self, item: Item) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True  # the stream re-reads alert changes from the database

    def drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()


def alert_event(row: tuple[Any, ...]) -> AlertChange:
    """A row of LIVE_TRANSITIONS or STREAM_TRANSITIONS as the stream's `alert` event."""
    (tid, alert_id, resident_id, device_id, rule, action, state, severity, at, actor, actor_name,
     desk_ids, desk_institutions) = row  # fmt: skip
    return AlertChange(
        tid,
        resident_id,
        {
            "alert_id": alert_id,
            "resident_id": resident_id,
            "device_id": device_id,
            "rule": rule,
            "action": action,
            "state": state,
            "severity": severity,
            "at": at.isoformat(),
            "actor": actor,
            "actor_name": actor_name,
        },
        frozenset(desk_ids or ()),
        frozenset(i for i in desk_institutions or () if i is not None),
    )


class LiveHub:
    def __init__(self, url: str, timing: Timing | None = None) -> None:
        self.url = url
        self.timing = timing or Timing()
        self._subscriptions: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        # Transitions: every id <= floor is done; `seen` are the ids above it already read.
        self._floor: int | None = None
        self._seen: list[int] = []
        # Vitals: the newest measurement sent per (resident, metric), and where the last poll began.
        self._sent_vitals: dict[tuple[int, str], datetime] = {}
        self._vitals_since: datetime | None = None
        self._last_vitals = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="eldercare-live-hub")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    def _publish(self, item: Item) -> None:
        for subscription in list(self._subscriptions):
            subscription.put(item)

    async def _run(self) -> None:
        delay = 1.0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, application_name="eldercare-api-live"
                ) as conn:
                    await conn.execute("LISTEN eldercare_alert")
                    delay = 1.0
                    await self._serve(conn)
            except psycopg.Error as exc:
                # Streams stay open and keep their heartbeat; they catch up when this reconnects
                # (the floor is kept, so nothing committed meanwhile is skipped).
                log.warning("live stream listener: %s; retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _serve(self, conn: psycopg.AsyncConnection[Any]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._read_transitions(conn)
            if not self._subscriptions:
                self._vitals_since = None  # when somebody comes, start from now, not from then
            elif loop.time() - self._last_vitals >= self.timing.vitals_poll_s:
                self._last_vitals = loop.time()
                await self._read_vitals(conn)
            wait = min(self.timing.tick_s, self.timing.vitals_poll_s)
            async for _ in conn.notifies(timeout=wait, stop_after=1):
                pass

    async def _read_transitions(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if self._floor is None or not self._subscriptions:
            # Nobody is watching: start from the newest (each new stream catches up by itself).
            row = await (await conn.execute(queries.LAST_TRANSITION)).fetchone()
            self._floor, self._seen = (int(row[0]) if row else 0), []
            return
        while True:
            cur = await conn.execute(
                queries.LIVE_TRANSITIONS, {"floor": self._floor, "seen": self._seen}
            )
            rows = await cur.fetchall()
            for row in rows:
                bisect.insort(self._seen, row[0])
                self._publish(alert_event(row))
            if len(self._seen) > LOOKBACK_IDS:
                self._floor = self._seen[-LOOKBACK_IDS - 1]
                del self._seen[:-LOOKBACK_IDS]
            if len(rows) < queries.LIVE_TRANSITIONS_PAGE:
                return

    async def _read_vitals(self, conn: psycopg.AsyncConnection[Any]) -> None:
        row = await (await conn.execute("SELECT now()")).fetchone()
        assert row is not None
        since = self._vitals_since - VITALS_SLACK if self._vitals_since else row[0] - VITALS_SLACK
        self._vitals_since = row[0]
        cur = await conn.execute(queries.LIVE_VITALS, {"since": since, "metrics": list(METRICS)})
        by_resident: dict[int, list[dict[str, Any]]] = {}
        for resident_id, metric, value, measured_at, device_id in await cur.fetchall():
            key = (resident_id, metric)
            if key in self._sent_vitals and self._sent_vitals[key] >= measured_at:
                continue
            self._sent_vitals[key] = measured_at
            by_resident.setdefault(resident_id, []).append(
                {
                    "metric": metric,
                    "value": value,
                    "unit": METRICS[metric].unit,
                    "measured_at": measured_at.isoformat(),
                    "device_id": device_id,
                }
            )
        for resident_id, values in by_resident.items():
            self._publish(Vitals(resident_id, {"resident_id": resident_id, "values": values}))
