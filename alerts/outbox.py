"""The persisted outbox: sends due notifications through their channels, retries with backoff.

Rows are claimed with FOR UPDATE SKIP LOCKED, so several dispatchers never send the same row at
once; one failing channel only delays its own rows. A crash between sending and recording makes the
row go out again: delivery is at-least-once, and receivers deduplicate on the idempotency key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta

import psycopg

from alerts import queries
from alerts.channels.base import Channel, ChannelError, Delivery, Recipient

log = logging.getLogger(__name__)

MAX_BACKOFF = timedelta(minutes=5)
# Retry for about a day; a notification that cannot go out by then is marked failed (and counted).
MAX_ATTEMPTS = 300


def backoff(attempts: int) -> timedelta:
    """1 s, 2 s, 4 s … capped at 5 minutes."""
    return min(MAX_BACKOFF, timedelta(seconds=2 ** min(attempts, 16)))


def _recipient(conn: psycopg.Connection, kind: str, rid: str) -> Recipient:
    if kind == "doctor":
        row = conn.execute(queries.DOCTOR_CONTACT, (int(rid),)).fetchone()
        return Recipient("doctor", rid, row[1] if row else "", email=row[2] if row else None)
    if kind == "webhook":
        row = conn.execute(queries.WEBHOOK_ROW, (int(rid),)).fetchone()
        if row is None:
            return Recipient("webhook", rid)
        return Recipient("webhook", rid, row[1], url=row[2], secret=row[3])
    return Recipient(kind, rid)


def dispatch(
    conn: psycopg.Connection,
    channels: Mapping[str, Channel],
    now: datetime,
    *,
    alert_id: int | None = None,
    limit: int = 200,
) -> int:
    """Send what is due on these channels (optionally one alert's rows only), each row in its own
    transaction; returns the number delivered."""
    delivered = 0
    due = conn.execute(
        queries.DUE_NOTIFICATIONS,
        {"now": now, "alert_id": alert_id, "limit": limit, "channels": list(channels)},
    ).fetchall()
    for (notification_id,) in due:
        with conn.transaction():
            row = conn.execute(queries.CLAIM_NOTIFICATION, (notification_id,)).fetchone()
            if row is None:
                continue  # another dispatcher has it, or it went out meanwhile
            nid, _alert, kind, rkind, rid, channel_name, payload, key, attempts = row
            delivery = Delivery(nid, key, channel_name, _recipient(conn, rkind, rid), payload)
            try:
                channels[channel_name].send(delivery)
            except ChannelError as exc:
                give_up = not exc.retryable or attempts + 1 >= MAX_ATTEMPTS
                log.warning(
                    "notification %s (%s, %s) not delivered: %s", nid, kind, channel_name, exc
                )
                conn.execute(
                    queries.MARK_RETRY,
                    {
                        "id": nid,
                        "error": str(exc)[:500],
                        "next": now + backoff(attempts),
                        "give_up": give_up,
                    },
                )
                continue
            conn.execute(queries.MARK_SENT, (now, nid))
            delivered += 1
    return delivered
