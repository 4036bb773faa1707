"""The outbox's claim against the real database: two dispatchers at once never send a row twice,
nor one that has just failed and waits for its retry."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

from psycopg.types.json import Jsonb

from alerts import lifecycle, outbox, queries
from alerts.channels.base import ChannelError, Delivery
from alerts.models import Finding
from store import db


def _row(conn, alert_id, channel, now):
    conn.execute(
        queries.INSERT_NOTIFICATION,
        {
            "alert_id": alert_id,
            "kind": "raised",
            "recipient_kind": "device",
            "recipient_id": "claim-test",
            "channel": channel,
            "payload": Jsonb({"kind": "raised"}),
            "key": f"claim-test:{uuid.uuid4().hex}",
            "state": "pending",
            "now": now,
            "send_at": now,
            "error": None,
        },
    )
    return conn.execute(
        "SELECT id FROM notification WHERE alert_id = %s AND channel = %s ORDER BY id DESC LIMIT 1",
        (alert_id, channel),
    ).fetchone()[0]


class _Failing:
    def __init__(self, name):
        self.name = name
        self.tried: list[int] = []

    def send(self, delivery: Delivery) -> None:
        self.tried.append(delivery.notification_id)
        raise ChannelError("receiver down")


class _Holding:
    """Holds the first row it is given until released; records every row it is asked to send."""

    def __init__(self, name, hold):
        self.name = name
        self.hold = hold
        self.holding = threading.Event()
        self.release = threading.Event()
        self.sent: list[int] = []

    def send(self, delivery: Delivery) -> None:
        self.sent.append(delivery.notification_id)
        if delivery.notification_id == self.hold:
            self.holding.set()
            assert self.release.wait(20)


def test_a_row_that_just_failed_is_not_resent_by_a_second_dispatcher_with_a_stale_list(
    conn, database_url
):
    now = datetime.now(UTC)
    channel = f"claim-{uuid.uuid4().hex[:8]}"  # rows of this test only
    alert = lifecycle.raise_finding(
        conn,
        resident_id=None,
        finding=Finding(rule="claim_test", severity="info", title="t", device_id=channel),
        now=now,
    )
    first, second = _row(conn, alert.id, channel, now), _row(conn, alert.id, channel, now)
    holding = _Holding(channel, hold=first)
    failing = _Failing(channel)
    # Dispatcher B lists both rows as due, then holds the first one in its channel ...
    results: list[int] = []
    with db.connection(database_url, autocommit=True) as other:
        b = threading.Thread(
            target=lambda: results.append(
                outbox.dispatch(other, {channel: holding}, now, alert_id=alert.id)
            )
        )
        b.start()
        try:
            assert holding.holding.wait(20), "dispatcher B took the first row"
            # ... meanwhile dispatcher A skips that locked row and fails on the second one, which
            # now waits for its retry (backoff) ...
            assert outbox.dispatch(conn, {channel: failing}, now, alert_id=alert.id) == 0
            assert failing.tried == [second]
        finally:
            holding.release.set()
            b.join(30)
    # ... so B, coming to the second row of its stale list, must leave it for the retry.
    assert holding.sent == [first], "the just-failed row was sent again at once"
    attempts, state, next_at = conn.execute(
        "SELECT attempts, state, next_attempt_at FROM notification WHERE id = %s", (second,)
    ).fetchone()
    assert (attempts, state) == (1, "pending") and next_at > now
    assert results == [1]
    lifecycle.resolve(conn, alert.id, actor="test", now=now, note="test over")
