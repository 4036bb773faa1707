"""The persisted outbox: sends due notifications through their channels, retries with backoff.

Rows are claimed with FOR UPDATE SKIP LOCKED, and only while still due, so several dispatchers
never send the same row at once, nor again a row another one has just tried and put off. A crash
between sending and recording makes the row go out again: delivery is at-least-once, and receivers
deduplicate on the idempotency key.

Channels do not wait for each other: webhooks and e-mail (other parties' servers) are each sent on a
lane of their own, a thread with its own database connection, which a call leaves running when it
takes long; so a webhook receiver that hangs never delays the e-mail, the doctor's app or the
device's ack. Within a channel, a destination that hangs opens its circuit
(alerts/channels/breaker.py) and costs one timeout, not one per queued row.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timedelta

import psycopg
from psycopg.conninfo import make_conninfo

from alerts import queries
from alerts.channels.base import Channel, ChannelError, Delivery, Recipient

log = logging.getLogger(__name__)

MAX_BACKOFF = timedelta(minutes=5)
# Retry for about a day; a notification that cannot go out by then is marked failed (and counted).
MAX_ATTEMPTS = 300
# How long a call waits for an isolated channel's lane before leaving it to finish by itself.
DETACH_AFTER_S = 1.0
# A row published to a doctor's app waits at least this long for the app's acknowledgement before
# it is published again (then with the backoff): a connected app answers within milliseconds.
ACK_WAIT = timedelta(seconds=10)


def backoff(attempts: int) -> timedelta:
    """1 s, 2 s, 4 s … capped at 5 minutes."""
    return min(MAX_BACKOFF, timedelta(seconds=2 ** min(attempts, 16)))


def ack_wait(attempts: int) -> timedelta:
    """How long a published row waits for the app's acknowledgement before it goes out again."""
    return max(ACK_WAIT, backoff(attempts))


def confirm(
    conn: psycopg.Connection, *, doctor_id: int, notification_id: int, now: datetime
) -> bool:
    """The doctor's app acknowledged this notification: delivered. False when it is not one of
    this doctor's app notifications that was published (nothing changes)."""
    params = {"id": notification_id, "doctor_id": str(doctor_id), "now": now}
    with conn.transaction():
        if conn.execute(queries.LOCK_APP_NOTIFICATION, params).fetchone() is None:
            return False
        return conn.execute(queries.CONFIRM_APP_DELIVERY, params).fetchone() is not None


def _recipient(conn: psycopg.Connection, kind: str, rid: str) -> Recipient:
    if kind == "doctor":
        row = conn.execute(queries.DOCTOR_RECIPIENT, (int(rid),)).fetchone()
        if row is None:
            return Recipient("doctor", rid)
        return Recipient("doctor", rid, row[0], email=row[1], app_login=bool(row[2]))
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
    transaction; returns the number delivered (a row that awaits its receiver's acknowledgement,
    the doctor's app, is not counted: `confirm` records its delivery).

    Channels to our own broker (the doctor's app, the device's ack) are sent here on `conn`, in
    order. A channel marked `isolated` (webhooks, e-mail: other parties' servers, which may hang)
    is sent on a lane of its own, a thread with its own database connection, started first so it
    runs alongside. The call waits for such a lane at most DETACH_AFTER_S: one still sending then
    goes on by itself (its count is logged, not returned) and later calls skip its channel until it
    ends, so new rows of every other channel keep going out.
    """
    local: list[tuple[Channel, list[int]]] = []
    lanes: list[_Lane] = []
    for name, channel in channels.items():
        isolated = bool(getattr(channel, "isolated", False))
        if isolated and _Lane.running(channel):
            continue  # still sending from an earlier call
        due = conn.execute(
            queries.DUE_NOTIFICATIONS,
            {"now": now, "alert_id": alert_id, "limit": limit, "channels": [name]},
        ).fetchall()
        if not due:
            continue
        ids = [row[0] for row in due]
        if isolated:
            lane = _Lane(_conninfo(conn), channel, ids, now)
            if lane.start():
                lanes.append(lane)
        else:
            local.append((channel, ids))
    delivered = sum(_send_lane(conn, channel, ids, now) for channel, ids in local)
    deadline = time.monotonic() + DETACH_AFTER_S
    for lane in lanes:
        sent = lane.wait(max(0.0, deadline - time.monotonic()))
        if sent is None:
            log.warning(
                "outbox: the %s channel is still sending after %.0f s; not waiting for it",
                lane.channel.name,
                DETACH_AFTER_S,
            )
        else:
            delivered += sent
    return delivered


def _conninfo(conn: psycopg.Connection) -> str:
    # info.dsn leaves the password out; a lane needs it to log in as this connection did.
    password = conn.info.password
    extra = {"password": password} if password else {}
    return make_conninfo(conn.info.dsn, **extra)


# The channels (by id()) with a lane still sending, across calls: such a channel is skipped until
# its lane ends, so a hanging one never has more than one thread and connection.
_RUNNING: set[int] = set()
_RUNNING_LOCK = threading.Lock()


class _Lane:
    """One isolated channel's due rows, sent on a thread and connection of their own."""

    def __init__(self, conninfo: str, channel: Channel, ids: list[int], now: datetime) -> None:
        self.conninfo = conninfo
        self.channel = channel
        self.ids = ids
        self.now = now
        self.delivered: int | None = None
        self._done = threading.Event()

    @staticmethod
    def running(channel: Channel) -> bool:
        with _RUNNING_LOCK:
            return id(channel) in _RUNNING

    def start(self) -> bool:
        """False when this channel already has a lane sending."""
        with _RUNNING_LOCK:
            if id(self.channel) in _RUNNING:
                return False
            _RUNNING.add(id(self.channel))
        name = f"outbox-{self.channel.name}"
        threading.Thread(target=self._run, name=name, daemon=True).start()
        return True

    def wait(self, timeout: float) -> int | None:
        """The number delivered, or None when still sending after `timeout` seconds."""
        return self.delivered if self._done.wait(timeout) else None

    def _run(self) -> None:
        try:
            with psycopg.connect(
                self.conninfo,
                autocommit=True,
                application_name=f"eldercare-outbox-{self.channel.name}",
            ) as conn:
                self.delivered = _send_lane(conn, self.channel, self.ids, self.now)
            log.debug("outbox: %s lane delivered %s", self.channel.name, self.delivered)
        except psycopg.Error as exc:
            # The rows stay due (a claimed one is released with the connection): the next call
            # starts a new lane for them.
            log.warning("outbox: %s lane stopped: %s", self.channel.name, exc)
            self.delivered = 0
        except Exception:
            log.exception("outbox: %s lane failed", self.channel.name)
            self.delivered = 0
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(id(self.channel))
            self._done.set()


def _send_lane(conn: psycopg.Connection, channel: Channel, ids: list[int], now: datetime) -> int:
    """Send these due rows of one channel in order, each claimed and recorded in a transaction."""
    delivered = 0
    for notification_id in ids:
        with conn.transaction():
            row = conn.execute(
                queries.CLAIM_NOTIFICATION, {"id": notification_id, "now": now}
            ).fetchone()
            if row is None:
                continue  # another dispatcher has it, or it went out or failed meanwhile
            nid, _alert, kind, rkind, rid, channel_name, payload, key, attempts = row
            delivery = Delivery(nid, key, channel_name, _recipient(conn, rkind, rid), payload)
            try:
                channel.send(delivery)
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
            if getattr(channel, "awaits_ack", False):
                # Handed over, not delivered: the receiver's acknowledgement (confirm) says that.
                # Till then it goes out again after a while, for about a day like any retry.
                give_up = attempts + 1 >= MAX_ATTEMPTS
                conn.execute(
                    queries.MARK_RETRY,
                    {
                        "id": nid,
                        "error": f"published {attempts + 1} times, never acknowledged by the app"
                        if give_up
                        else "published; awaiting the app's acknowledgement",
                        "next": now + ack_wait(attempts),
                        "give_up": give_up,
                    },
                )
                continue
            conn.execute(queries.MARK_SENT, (now, nid))
            delivered += 1
    return delivered
