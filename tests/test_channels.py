"""Webhook and email channels against real local servers: an HTTP receiver and an SMTP relay.

The outbox owns retries, so the tests drive `send` the way it does (again on retryable errors)
and check what a receiver ends up with, plus how each failure is classified.
"""

from __future__ import annotations

import email
import hashlib
import hmac
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from email import policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from alerts.channels.base import Channel, ChannelError, Delivery, Recipient
from alerts.channels.email import EmailChannel, render
from alerts.channels.webhook import WebhookChannel, sign, verify_signature

SECRET = "whsec-test-0123456789abcdef"
SMTP_USER = "relay-user"
SMTP_PASSWORD = "relay-password-not-in-messages"
SENDER = "Eldercare 告警 <alerts@eldercare.test>"


def _payload(alert_id: int = 1, kind: str = "raised") -> dict[str, Any]:
    return {
        "kind": kind,
        "alert": {
            "id": alert_id,
            "rule": "sos",
            "severity": "critical",
            "title": "SOS 呼救 / SOS button pressed",
            "resident": {"id": 3, "name": "王秀英"},
            "opened_at": "2024-05-01T08:30:00+08:00",
            "detail": {"device_id": "wristband-1", "spo2": 91},
        },
        "url": f"http://care.example/alerts/{alert_id}",
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _deliver(channel: Channel, delivery: Delivery, max_attempts: int = 10) -> int:
    """Like the outbox, minus backoff and persistence: resend until delivered; the attempt count."""
    for attempt in range(1, max_attempts + 1):
        try:
            channel.send(delivery)
            return attempt
        except ChannelError as exc:
            if not exc.retryable or attempt == max_attempts:
                raise
    raise AssertionError("unreachable")


# --- webhook -----------------------------------------------------------------------------------


class _Receiver(ThreadingHTTPServer):
    """A webhook receiver as a real platform runs one: verify, deduplicate by key, store."""

    def __init__(self, fail_first: int = 0) -> None:
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        self.lock = threading.Lock()
        self.failures_left = fail_first
        self.bodies: dict[str, bytes] = {}
        self.attempts: Counter[str] = Counter()
        self.verified: list[bool] = []
        self.content_types: set[str] = set()
        self.release = threading.Event()  # lets a deliberately slow reply finish at teardown

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _ReceiverHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the channel's pooled client is exercised
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        state = self.server
        if self.path.startswith("/status/"):
            self._reply(int(self.path.rsplit("/", 1)[1]))
            return
        if self.path == "/slow":
            state.release.wait(10)
            return  # no reply at all: the client has long given up
        ok = verify_signature(
            SECRET,
            self.headers.get("X-Eldercare-Timestamp", ""),
            body,
            self.headers.get("X-Eldercare-Signature", ""),
        )
        key = self.headers.get("Idempotency-Key", "")
        with state.lock:
            state.verified.append(ok)
            state.attempts[key] += 1
            state.content_types.add(self.headers.get("Content-Type", ""))
            if state.failures_left > 0:
                state.failures_left -= 1
                status = 503
            elif not ok:
                status = 401
            else:
                # A repeated key is acknowledged but not processed again.
                state.bodies.setdefault(key, body)
                status = 200
        self._reply(status)

    def _reply(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet test output


@contextmanager
def _serve(server: _Receiver) -> Iterator[_Receiver]:
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture()
def flaky_receiver() -> Iterator[_Receiver]:
    with _serve(_Receiver(fail_first=3)) as server:
        yield server


@pytest.fixture()
def receiver() -> Iterator[_Receiver]:
    with _serve(_Receiver()) as server:
        yield server


@pytest.fixture()
def webhook() -> Iterator[WebhookChannel]:
    with WebhookChannel(timeout_s=2.0) as channel:
        yield channel


def _hook_delivery(key: str, url: str, *, secret: str | None = SECRET) -> Delivery:
    return Delivery(
        notification_id=1,
        idempotency_key=key,
        channel="webhook",
        recipient=Recipient(kind="webhook", id="hook-1", url=url, secret=secret),
        payload=_payload(),
    )


def test_webhook_retries_through_outage_and_receiver_gets_each_key_once(
    flaky_receiver: _Receiver,
) -> None:
    # The channel comes up after the receiver, so it closes first and frees its keep-alive sockets.
    with WebhookChannel(timeout_s=2.0) as channel:
        deliveries = [
            Delivery(
                notification_id=i,
                idempotency_key=f"notif-{i}-webhook-hook-1",
                channel="webhook",
                recipient=Recipient(
                    kind="webhook", id="hook-1", url=flaky_receiver.url(), secret=SECRET
                ),
                payload=_payload(alert_id=i),
            )
            for i in range(5)
        ]
        attempts = [_deliver(channel, d) for d in deliveries]
        # Delivered already, but the outbox may not have recorded it (crash before commit).
        assert _deliver(channel, deliveries[2]) == 1

    assert sum(attempts) == 5 + 3  # the three 503s were retried
    keys = [d.idempotency_key for d in deliveries]
    assert sorted(flaky_receiver.bodies) == sorted(keys)
    for d in deliveries:
        assert orjson.loads(flaky_receiver.bodies[d.idempotency_key]) == d.payload
    assert flaky_receiver.attempts[keys[2]] == 2 + (attempts[2] - 1)
    assert len(flaky_receiver.verified) == 5 + 3 + 1
    assert all(flaky_receiver.verified)
    assert flaky_receiver.content_types == {"application/json"}


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (400, False),
        (401, False),
        (404, False),
        (410, False),
        (302, False),
        (408, True),
        (429, True),
        (500, True),
        (503, True),
    ],
)
def test_webhook_status_classification(
    receiver: _Receiver, webhook: WebhookChannel, status: int, retryable: bool
) -> None:
    with pytest.raises(ChannelError) as caught:
        webhook.send(_hook_delivery("k-status", receiver.url(f"/status/{status}")))
    assert caught.value.retryable is retryable
    assert str(status) in str(caught.value)
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)


def test_webhook_closed_port_is_retryable(webhook: WebhookChannel) -> None:
    url = f"http://127.0.0.1:{_free_port()}/hook"
    with pytest.raises(ChannelError) as caught:
        webhook.send(_hook_delivery("k-closed", url))
    assert caught.value.retryable is True
    assert SECRET not in str(caught.value)


def test_webhook_timeout_is_retryable(receiver: _Receiver) -> None:
    with WebhookChannel(timeout_s=0.3) as channel, pytest.raises(ChannelError) as caught:
        channel.send(_hook_delivery("k-slow", receiver.url("/slow")))
    assert caught.value.retryable is True
    assert "timed out" in str(caught.value)


def test_webhook_url_token_not_in_error(webhook: WebhookChannel) -> None:
    url = f"http://127.0.0.1:{_free_port()}/hooks/tok-SECRETPATH?token=tok-SECRETQUERY"
    with pytest.raises(ChannelError) as caught:
        webhook.send(_hook_delivery("k-token", url))
    assert "SECRET" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        (None, SECRET),
        ("http://127.0.0.1:9/hook", None),
        ("ftp://127.0.0.1/hook", SECRET),
        ("http://[::1/hook", SECRET),
    ],
)
def test_webhook_misconfigured_recipient_is_not_retryable(
    webhook: WebhookChannel, url: str | None, secret: str | None
) -> None:
    delivery = Delivery(
        notification_id=1,
        idempotency_key="k-conf",
        channel="webhook",
        recipient=Recipient(kind="webhook", id="hook-1", url=url, secret=secret),
    )
    with pytest.raises(ChannelError) as caught:
        webhook.send(delivery)
    assert caught.value.retryable is False


def test_signature_format_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, "1700000000", body) == f"sha256={expected}"


def test_verify_signature_refuses_tampering_stale_and_malformed() -> None:
    body = orjson.dumps(_payload())
    ts = "1700000000"
    now = 1700000000.0
    good = sign(SECRET, ts, body)
    assert verify_signature(SECRET, ts, body, good, now=now)
    assert verify_signature(SECRET, ts, body, good, now=now + 300)  # at the edge of tolerance
    assert not verify_signature(SECRET, ts, body + b" ", good, now=now)  # tampered body
    assert not verify_signature(SECRET, ts, body.replace(b"critical", b"info"), good, now=now)
    assert not verify_signature(SECRET, "1700000001", body, good, now=now)  # timestamp swapped
    assert not verify_signature("other-secret", ts, body, good, now=now)
    assert not verify_signature(SECRET, ts, body, good, now=now + 301)  # stale: a replay
    assert not verify_signature(SECRET, ts, body, good, now=now - 301)  # from the future
    assert not verify_signature(SECRET, ts, body, good, now=now + 60, tolerance_s=30)
    for header in ["", "sha256=", good.removeprefix("sha256="), "md5=" + good[7:], good + "0"]:
        assert not verify_signature(SECRET, ts, body, header, now=now)
    assert not verify_signature(SECRET, ts, body, good.replace("a", "é"), now=now)
    for bad_ts in ["", "abc", "-1700000000", "1700000000.5", "١٧٠٠٠٠٠٠٠٠"]:
        assert not verify_signature(SECRET, bad_ts, body, sign(SECRET, bad_ts, body), now=now)
    # The default clock is the real one: a fresh signature passes, a day-old one does not.
    fresh = str(int(time.time()))
    assert verify_signature(SECRET, fresh, body, sign(SECRET, fresh, body))
    old = str(int(time.time()) - 86400)
    assert not verify_signature(SECRET, old, body, sign(SECRET, old, body))


# --- email -------------------------------------------------------------------------------------


class _Relay:
    """aiosmtpd handler: accepts everyone except two scripted addresses; keeps the envelopes."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.logins: list[str] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 No such user"
        if address.startswith("busy@"):
            return "450 4.2.1 Mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == SMTP_USER.encode()
            and data.password == SMTP_PASSWORD.encode()
        )
        if ok:
            self.logins.append(SMTP_USER)
        # handled=False: aiosmtpd then answers 535 itself.
        return AuthResult(success=ok, handled=False)

    def messages(self) -> list[EmailMessage]:
        parsed = []
        for envelope in self.envelopes:
            raw = envelope.original_content
            assert isinstance(raw, bytes)
            message = email.message_from_bytes(raw, policy=policy.default)
            assert isinstance(message, EmailMessage)
            parsed.append(message)
        return parsed


@contextmanager
def _run_relay(**smtp_options: Any) -> Iterator[tuple[_Relay, int]]:
    relay = _Relay()
    port = _free_port()
    controller = Controller(
        relay,
        hostname="127.0.0.1",
        port=port,
        authenticator=relay.authenticate,
        **smtp_options,
    )
    controller.start()
    try:
        yield relay, port
    finally:
        controller.stop()


@pytest.fixture()
def relay() -> Iterator[tuple[_Relay, int]]:
    # Plain-text AUTH is fine on loopback; the STARTTLS test covers the encrypted path.
    with _run_relay(auth_require_tls=False) as running:
        yield running


def _mail_delivery(
    key: str = "notif-7-email-doctor-3", address: str | None = "dr.li@clinic.test"
) -> Delivery:
    return Delivery(
        notification_id=7,
        idempotency_key=key,
        channel="email",
        recipient=Recipient(kind="doctor", id="3", name="李医生", email=address),
        payload=_payload(),
    )


def test_email_delivers_bilingual_message_with_idempotency_headers(
    relay: tuple[_Relay, int],
) -> None:
    handler, port = relay
    channel = EmailChannel("127.0.0.1", port, SENDER, timeout_s=5.0)
    delivery = _mail_delivery()
    channel.send(delivery)
    channel.send(delivery)  # a resend, as after a lost reply

    assert [e.mail_from for e in handler.envelopes] == ["alerts@eldercare.test"] * 2
    assert [e.rcpt_tos for e in handler.envelopes] == [["dr.li@clinic.test"]] * 2
    first, again = handler.messages()
    assert first["To"].addresses[0].addr_spec == "dr.li@clinic.test"
    assert first["To"].addresses[0].display_name == "李医生"
    subject = str(first["Subject"])
    assert subject == "[eldercare] 紧急 critical: 王秀英 – SOS 呼救"
    body = first.get_content()
    assert "SOS 呼救" in body and "SOS button pressed" in body
    assert body.index("状态：新告警") < body.index("Status: New alert")  # Chinese first
    assert "http://care.example/alerts/1" in body
    assert first["X-Eldercare-Idempotency-Key"] == delivery.idempotency_key
    # strip(): the parser keeps the whitespace of a folded header.
    assert first["Message-ID"].strip() == channel.message_id(delivery.idempotency_key)
    assert again["Message-ID"] == first["Message-ID"]  # recognisably the same message
    assert first["Auto-Submitted"] == "auto-generated"
    assert channel.message_id("notif-8-email-doctor-3") != first["Message-ID"].strip()
    assert first["References"] == "<eldercare.alert-1@eldercare.test>"  # threads per alert


def test_email_login(relay: tuple[_Relay, int]) -> None:
    handler, port = relay
    EmailChannel(
        "127.0.0.1", port, SENDER, username=SMTP_USER, password=SMTP_PASSWORD, timeout_s=5.0
    ).send(_mail_delivery())
    assert handler.logins == [SMTP_USER] and len(handler.envelopes) == 1

    wrong = EmailChannel("127.0.0.1", port, SENDER, username=SMTP_USER, password="nope")
    with pytest.raises(ChannelError) as caught:
        wrong.send(_mail_delivery())
    assert caught.value.retryable is True  # an operator can fix the credentials
    assert "535" in str(caught.value) and "nope" not in str(caught.value)


@pytest.mark.parametrize(
    ("address", "retryable"),
    [
        (None, False),
        ("", False),
        ("not an address", False),
        ("nobody@clinic.test", False),
        ("busy@clinic.test", True),
    ],
)
def test_email_refusals(relay: tuple[_Relay, int], address: str | None, retryable: bool) -> None:
    handler, port = relay
    channel = EmailChannel("127.0.0.1", port, SENDER, timeout_s=5.0)
    with pytest.raises(ChannelError) as caught:
        channel.send(_mail_delivery(address=address))
    assert caught.value.retryable is retryable
    assert handler.envelopes == []


def test_email_closed_port_is_retryable() -> None:
    channel = EmailChannel("127.0.0.1", _free_port(), SENDER, password=SMTP_PASSWORD, timeout_s=2)
    with pytest.raises(ChannelError) as caught:
        channel.send(_mail_delivery())
    assert caught.value.retryable is True
    assert SMTP_PASSWORD not in str(caught.value)


@pytest.fixture()
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_email_starttls_and_login(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    trust = ssl.create_default_context(cafile=str(cert))
    with _run_relay(tls_context=server_tls, require_starttls=True) as (handler, port):
        EmailChannel(
            "127.0.0.1",
            port,
            SENDER,
            username=SMTP_USER,
            password=SMTP_PASSWORD,
            starttls=True,
            ssl_context=trust,
            timeout_s=5.0,
        ).send(_mail_delivery())
        assert handler.logins == [SMTP_USER] and len(handler.envelopes) == 1

        # Without STARTTLS this relay refuses to talk: a configuration fault, worth retrying.
        with pytest.raises(ChannelError) as caught:
            EmailChannel("127.0.0.1", port, SENDER, timeout_s=5.0).send(_mail_delivery())
        assert caught.value.retryable is True
        # An untrusted certificate fails the handshake rather than sending in the clear.
        with pytest.raises(ChannelError) as caught:
            EmailChannel("127.0.0.1", port, SENDER, starttls=True, timeout_s=5.0).send(
                _mail_delivery()
            )
        assert caught.value.retryable is True
        assert len(handler.envelopes) == 1


# --- render ------------------------------------------------------------------------------------


def test_render_raised() -> None:
    subject, body = render(_payload())
    assert subject == "[eldercare] 紧急 critical: 王秀英 – SOS 呼救"
    zh, _, en = body.partition("—— English ——")
    assert "【紧急】王秀英 – SOS 呼救" in zh and "告警编号：1（规则 sos）" in zh
    assert "开始时间：2024-05-01T08:30:00+08:00" in zh and "spo2：91" in zh
    assert "[critical] 王秀英 – SOS button pressed" in en and "Alert #1 (rule sos)" in en
    assert "spo2: 91" in en and "View the alert: http://care.example/alerts/1" in en
    assert "SOS button pressed" not in zh


@pytest.mark.parametrize(
    ("kind", "subject_start", "status_line"),
    [
        (
            "reminder",
            "[eldercare] 提醒 reminder · 紧急 critical: 王秀英",
            "Reminder: not yet acknowledged",
        ),
        ("escalation", "[eldercare] 升级 escalation · 紧急 critical", "Status: Escalated"),
        ("acknowledged", "[eldercare] 已确认 acknowledged · ", "告警已被确认"),
        (
            "resolved",
            "[eldercare] 已解除 resolved · 紧急 critical: 王秀英 – SOS 呼救",
            "告警已解除",
        ),
        ("severity_raised", "[eldercare] 级别升高 severity raised · ", "Severity raised"),
    ],
)
def test_render_follow_ups_lead_with_what_changed(
    kind: str, subject_start: str, status_line: str
) -> None:
    subject, body = render(_payload(kind=kind))
    assert subject.startswith(subject_start)
    assert status_line in body


def test_render_tolerates_missing_and_unknown_fields() -> None:
    subject, body = render({})
    assert subject.startswith("[eldercare] 提示 info: 未知住户")
    assert "unknown resident" in body
    subject, body = render(
        {
            "kind": "new_kind",
            "alert": {"severity": "odd", "title": "只有中文", "detail": {"x": [1]}},
        }
    )
    assert subject == "[eldercare] new_kind new_kind · odd odd: 未知住户 – 只有中文"
    assert "x：[1]" in body and "x: [1]" in body
    subject, _ = render(
        {"alert": {"title": "跌倒\r\nBcc: x@evil.test", "resident": {"name": "王\n"}}}
    )
    assert "\n" not in subject and "\r" not in subject
