"""A channel whose receiver hangs must not hold up the others: a real HTTP receiver that never answers
(until the test lets it), a real SMTP server (aiosmtpd), the real outbox and the real engine."""

from __future__ import annotations

import email
import email.policy
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from psycopg.types.json import Jsonb

from alerts import lifecycle, outbox, queries
from alerts.channels.base import ChannelError, Delivery, Recipient
from alerts.channels.breaker import FIRST_COOL_DOWN_S, Breakers
from alerts.channels.email import EmailChannel
from alerts.channels.webhook import WebhookChannel
from alerts.engine import AlertEngine
from alerts.models import Finding
from alerts.settings import AlertSettings
from care import service as care
from devices import service as devices
from eldercare.ports import free_port
from store import db
from tests.support import MailInbox, wait_for

SECRET = "isolation-test-secret"


class HangingPlatform:
    """Accepts connections and reads requests, but answers only once `release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = 0
        self.lock = threading.Lock()
        platform = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with platform.lock:
                    platform.started += 1
                platform.release.wait(30)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def requests(self) -> int:
        with self.lock:
            return self.started

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def platform() -> Iterator[HangingPlatform]:
    instance = HangingPlatform()
    yield instance
    instance.close()


@pytest.fixture()
def smtp() -> Iterator[tuple[MailInbox, int]]:
    inbox = MailInbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def _insert(conn, alert_id: int, channel: str, recipient_kind: str, recipient_id: str, now):
    conn.execute(
        queries.INSERT_NOTIFICATION,
        {
            "alert_id": alert_id,
            "kind": "raised",
            "recipient_kind": recipient_kind,
            "recipient_id": recipient_id,
            "channel": channel,
            "payload": Jsonb({"kind": "raised", "alert": {"id": alert_id, "rule": "fever"}}),
            "key": f"isolation-{uuid.uuid4().hex}",
            "state": "pending",
            "now": now,
            "send_at": now,
            "error": None,
        },
    )


def _state(conn, alert_id: int, channel: str) -> set[str]:
    rows = conn.execute(
        "SELECT state FROM notification WHERE alert_id = %s AND channel = %s "
        "AND idempotency_key LIKE 'isolation-%%'",
        (alert_id, channel),
    ).fetchall()
    return {r[0] for r in rows}


def test_a_hanging_webhook_does_not_hold_up_email_in_the_outbox(
    conn, database_url, circle, platform, smtp
):
    inbox, port = smtp
    hook = care.add_webhook(conn, name="hangs", url=platform.url, secret=SECRET)
    try:
        now = datetime.now(UTC)
        alert = lifecycle.raise_finding(
            conn,
            resident_id=circle["resident"],
            now=now,
            finding=Finding(rule="fever", severity="warning", title="发热 / Fever"),
        )
        # Only the rows of this test: the webhook ones first, as the oldest rows of a backlog.
        conn.execute(
            "UPDATE notification SET state = 'suppressed' WHERE alert_id = %s", (alert.id,)
        )
        for _ in range(3):
            _insert(conn, alert.id, "webhook", "webhook", str(hook["id"]), now)
        _insert(conn, alert.id, "email", "doctor", str(circle["a"]), now)

        webhook = WebhookChannel(timeout_s=20)
        mail = EmailChannel("127.0.0.1", port, "eldercare@example.org")
        channels = {"webhook": webhook, "email": mail}
        result: list[int] = []

        def send() -> None:
            # The dispatcher's own connection, as in the engine.
            with db.connection(database_url, autocommit=True) as own:
                result.append(outbox.dispatch(own, channels, now, alert_id=alert.id))

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        wait_for(lambda: platform.requests() == 1, 10, "the webhook receiver holding a request")
        # The e-mail goes out while the webhook request still hangs, and the call returns.
        wait_for(lambda: inbox.to("zhang@example.org"), 5, "the e-mail, while the webhook hangs")
        wait_for(lambda: _state(conn, alert.id, "email") == {"sent"}, 5, "e-mail recorded as sent")
        sender.join(5)
        assert result == [1] and not platform.release.is_set()
        assert _state(conn, alert.id, "webhook") == {"pending"}

        # A new e-mail while the platform still hangs: the next round sends it at once and leaves
        # the webhook channel alone (its lane is still busy: no second request, no second thread).
        _insert(conn, alert.id, "email", "doctor", str(circle["a"]), now)
        assert outbox.dispatch(conn, channels, now, alert_id=alert.id) == 1
        assert len(inbox.to("zhang@example.org")) == 2 and platform.requests() == 1

        platform.release.set()
        wait_for(lambda: _state(conn, alert.id, "webhook") == {"sent"}, 10, "webhooks recorded")
        assert platform.requests() == 3
        webhook.close()
    finally:
        platform.release.set()
        conn.execute("UPDATE webhook_subscription SET active = false WHERE id = %s", (hook["id"],))


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _delivery(url: str, n: int) -> Delivery:
    return Delivery(
        n,
        f"breaker-{n}",
        "webhook",
        Recipient("webhook", "7", url=url, secret=SECRET),
        {"kind": "raised"},
    )


def test_a_hanging_receiver_costs_one_timeout_per_cool_down_not_one_per_notification(platform):
    clock = FakeClock()
    with WebhookChannel(timeout_s=0.3, breakers=Breakers(clock)) as channel:
        with pytest.raises(ChannelError, match="timed out"):
            channel.send(_delivery(platform.url, 1))
        wait_for(lambda: platform.requests() == 1, 5, "the first request")
        for n in range(2, 7):  # fail at once, without a request: the circuit is open
            with pytest.raises(ChannelError, match="circuit open") as caught:
                channel.send(_delivery(platform.url, n))
            assert caught.value.retryable
        assert platform.requests() == 1
        clock.t += FIRST_COOL_DOWN_S  # one probe after the cool-down; it hangs too
        with pytest.raises(ChannelError, match="timed out"):
            channel.send(_delivery(platform.url, 7))
        wait_for(lambda: platform.requests() == 2, 5, "the probe")
        clock.t += FIRST_COOL_DOWN_S  # the cool-down has doubled: still open
        with pytest.raises(ChannelError, match="circuit open"):
            channel.send(_delivery(platform.url, 8))
        platform.release.set()  # the receiver answers again
        clock.t += FIRST_COOL_DOWN_S
        channel.send(_delivery(platform.url, 9))
        channel.send(_delivery(platform.url, 10))  # closed again: straight through
        assert platform.requests() == 4


def test_the_breaker_is_per_destination(platform):
    other = HangingPlatform()
    other.release.set()  # answers at once
    try:
        with WebhookChannel(timeout_s=0.3) as channel:
            with pytest.raises(ChannelError, match="timed out"):
                channel.send(_delivery(platform.url, 1))
            channel.send(_delivery(other.url, 2))  # another receiver is not affected
            assert other.requests() == 1
    finally:
        other.close()


def _key(envelope: Any) -> str:
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    return str(message["X-Eldercare-Idempotency-Key"] or "")


def test_the_engine_delivers_email_while_a_platform_hangs(conn, circle, platform, smtp, settings):
    inbox, port = smtp
    hook = care.add_webhook(conn, name="hangs-engine", url=platform.url, secret=SECRET)
    engine = AlertEngine(
        settings,
        AlertSettings(tick_s=0.2, smtp_host="127.0.0.1", smtp_port=port),
    )
    try:
        now = datetime.now(UTC)
        # An alert with only webhook rows (and a duty desk without e-mail) comes first, so a
        # single sending thread would be stuck on the hanging platform before any e-mail.
        lone = devices.add_resident(conn, name="独居老人").id
        first = Finding(rule="glucose_low", severity="warning", title="低血糖 / Low blood glucose")
        lifecycle.raise_finding(conn, resident_id=lone, now=now, finding=first)
        second = Finding(rule="fever", severity="warning", title="发热 / Fever")
        alert = lifecycle.raise_finding(
            conn, resident_id=circle["resident"], now=now + timedelta(seconds=1), finding=second
        )
        engine.connect()
        engine.start()
        wait_for(lambda: platform.requests() >= 1, 10, "the platform holding a request")
        mail = wait_for(
            lambda: [
                e for e in inbox.to("zhang@example.org") if _key(e).startswith(f"a{alert.id}:")
            ],
            4,
            "the doctor's e-mail while the platform hangs (its timeout is 5 s)",
        )
        assert mail and not platform.release.is_set()
    finally:
        platform.release.set()
        engine.close()
        conn.execute("UPDATE webhook_subscription SET active = false WHERE id = %s", (hook["id"],))
