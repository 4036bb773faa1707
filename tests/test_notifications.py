"""Notifications through the persisted outbox to real receivers: a webhook endpoint that fails for a
while, and a real local SMTP server (aiosmtpd)."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from alerts import lifecycle, outbox
from alerts.channels.email import EmailChannel
from alerts.channels.webhook import WebhookChannel, verify_signature
from alerts.clock import ManualClock
from alerts.models import Finding
from care import service as care
from eldercare.ports import free_port

SECRET = "platform-shared-secret"


class Platform:
    """A 12349-style platform: verifies signatures, fails its first `failures` requests, and
    records every accepted delivery by idempotency key."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.accepted: Counter[str] = Counter()
        self.bad_signatures = 0
        self.lock = threading.Lock()
        platform = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with platform.lock:
                    if platform.failures > 0:
                        platform.failures -= 1
                        self.send_response(503)
                        self.end_headers()
                        return
                    ok = verify_signature(
                        SECRET,
                        self.headers["X-Eldercare-Timestamp"],
                        body,
                        self.headers["X-Eldercare-Signature"],
                    )
                    if not ok:
                        platform.bad_signatures += 1
                        self.send_response(401)
                        self.end_headers()
                        return
                    platform.accepted[self.headers["Idempotency-Key"]] += 1
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/eldercare"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def platform():
    instance = Platform(failures=4)
    yield instance
    instance.close()


def test_a_failing_webhook_receives_everything_exactly_once_after_it_recovers(
    conn, circle, platform
):
    hook = care.add_webhook(
        conn,
        name=f"12349-{circle['resident']}",
        url=platform.url,
        secret=SECRET,
        min_severity="warning",
    )
    clock = ManualClock(datetime.now(UTC))
    alerts = [
        lifecycle.raise_finding(
            conn,
            resident_id=circle["resident"],
            now=clock.now(),
            finding=Finding(rule=rule, severity="warning", title=rule),
        )
        for rule in ("fever", "glucose_low", "hypotension")
    ]
    lifecycle.acknowledge(conn, alerts[0].id, actor="doctor:1", now=clock.now())
    keys = {
        r[0]
        for r in conn.execute(
            "SELECT idempotency_key FROM notification WHERE channel = 'webhook' "
            "AND recipient_kind = 'webhook' AND recipient_id = %s",
            (str(hook["id"]),),
        )
    }
    assert len(keys) == 4, "three raised and one acknowledged"
    channel = WebhookChannel()
    try:
        for _ in range(12):  # the dispatcher's rounds; each failure waits out its backoff
            outbox.dispatch(conn, {"webhook": channel}, clock.now())
            clock.advance(timedelta(minutes=5))
    finally:
        channel.close()
    assert set(platform.accepted) == keys and set(platform.accepted.values()) == {1}
    assert platform.bad_signatures == 0
    attempts = conn.execute(
        "SELECT max(attempts), bool_and(state = 'sent') FROM notification "
        "WHERE recipient_kind = 'webhook' AND recipient_id = %s AND channel = 'webhook'",
        (str(hook["id"]),),
    ).fetchone()
    assert attempts[0] > 1 and attempts[1], "retried, then all sent"
    conn.execute("UPDATE webhook_subscription SET active = false WHERE id = %s", (hook["id"],))


class _Inbox:
    def __init__(self) -> None:
        self.envelopes: list[object] = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 OK"


def test_email_is_delivered_to_a_real_smtp_server(conn, circle):
    inbox = _Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        now = datetime.now(UTC)
        alert = lifecycle.raise_finding(
            conn,
            resident_id=circle["resident"],
            now=now,
            finding=Finding(rule="sos", severity="critical", title="SOS 呼救 / SOS button pressed"),
        )
        channel = EmailChannel("127.0.0.1", port, "eldercare@example.org")
        sent = outbox.dispatch(conn, {"email": channel}, now, alert_id=alert.id)
        assert sent == 1, "doctor A has an e-mail address; the duty desk has none configured"
        (envelope,) = inbox.envelopes
        assert envelope.rcpt_tos == ["zhang@example.org"]
        text = envelope.content.decode("utf-8", errors="replace")
        assert "eldercare" in text.lower()
        row = conn.execute(
            "SELECT state FROM notification WHERE alert_id = %s AND channel = 'email' AND recipient_id = %s",
            (alert.id, str(circle["a"])),
        ).fetchone()
        assert row == ("sent",)
    finally:
        controller.stop()
