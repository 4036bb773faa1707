"""Email channel: one plain-text message per notification, Chinese first with English below.

`render` turns a notification payload into subject and body (pure, so it is tested on its own);
`EmailChannel` wraps that in a message and hands it to an SMTP server, one attempt per `send`.
The Message-ID is derived from the idempotency key, so a resend after a lost reply is recognisably
the same message (mail systems and people can drop the duplicate). A relay that hangs or refuses
connections opens the channel's circuit (alerts/channels/breaker.py): the messages queued behind
fail fast and wait for their retry instead of each waiting out the timeout.
"""

from __future__ import annotations

import hashlib
import smtplib
import ssl
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any

import orjson

from alerts.channels.base import ChannelError, Delivery
from alerts.channels.breaker import Breakers

SUBJECT_TAG = "[eldercare]"

# severity -> (Chinese, English)
SEVERITY_WORDS: dict[str, tuple[str, str]] = {
    "critical": ("紧急", "critical"),
    "warning": ("警告", "warning"),
    "info": ("提示", "info"),
}

# kind -> (short Chinese, short English, Chinese status line, English status line)
KIND_WORDS: dict[str, tuple[str, str, str, str]] = {
    "raised": ("新告警", "new", "新告警", "New alert"),
    "reminder": ("提醒", "reminder", "提醒：告警尚未确认", "Reminder: not yet acknowledged"),
    "escalation": ("升级", "escalation", "告警已升级", "Escalated"),
    "acknowledged": ("已确认", "acknowledged", "告警已被确认", "Acknowledged"),
    "resolved": ("已解除", "resolved", "告警已解除", "Resolved"),
    "severity_raised": ("级别升高", "severity raised", "告警级别升高", "Severity raised"),
    # Another SOS press or fall on the same unresolved alert.
    "repeated": ("再次发生", "repeated", "同一告警再次发生", "It happened again"),
    # To the duty desk: no platform reached the emergency contacts, somebody must call them.
    "contacts_unreached": (
        "请联系家属",
        "call the contacts",
        "未能通知紧急联系人，请致电",
        "Emergency contacts not reached: please call them",
    ),
}


def _text(value: Any, default: str) -> str:
    return default if value is None or value == "" else str(value)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _split_title(title: str) -> tuple[str, str]:
    """Rule titles are written "中文 / English"; a title without the separator serves both."""
    zh, sep, en = title.partition(" / ")
    return (zh.strip(), en.strip()) if sep else (title, title)


def _detail_lines(detail: Any, colon: str) -> list[str]:
    if not isinstance(detail, dict) or not detail:
        return []
    lines = []
    for key, value in detail.items():
        shown = value if isinstance(value, str) else orjson.dumps(value).decode()
        lines.append(f"  {key}{colon}{shown}")
    return lines


def _contact_lines(contacts: Any) -> list[str]:
    if not isinstance(contacts, list):
        return []
    lines = []
    for contact in contacts:
        person = _mapping(contact)
        lines.append(f"  {_text(person.get('name'), '?')} {_text(person.get('phone'), '?')}")
    return lines


def render(payload: dict[str, Any]) -> tuple[str, str]:
    """(subject, body) for a notification payload; tolerant of missing fields.

    A notification must still go out when a field is missing, so gaps render as placeholders
    instead of raising.
    """
    kind = _text(payload.get("kind"), "raised")
    alert = _mapping(payload.get("alert"))
    resident = _mapping(alert.get("resident"))
    severity = _text(alert.get("severity"), "info")
    sev_zh, sev_en = SEVERITY_WORDS.get(severity, (severity, severity))
    kind_zh, kind_en, status_zh, status_en = KIND_WORDS.get(kind, (kind, kind, kind, kind))
    rule = _text(alert.get("rule"), "?")
    title_zh, title_en = _split_title(_text(alert.get("title"), rule))
    name = _text(resident.get("name"), "")
    who_zh = name or "未知住户"
    who_en = name or "unknown resident"
    alert_id = _text(alert.get("id"), "?")
    opened_at = _text(alert.get("opened_at"), "?")
    url = _text(payload.get("url"), "")

    # Follow-ups lead with what changed: "resolved" must not read like a new emergency.
    changed = "" if kind == "raised" else f"{kind_zh} {kind_en} · "
    subject = f"{SUBJECT_TAG} {changed}{sev_zh} {sev_en}: {who_zh} – {title_zh}"
    # One line: a line break in a name or title must not break (or inject) mail headers.
    subject = " ".join(subject.split())

    zh = [
        f"【{sev_zh}】{who_zh} – {title_zh}",
        f"状态：{status_zh}",
        f"告警编号：{alert_id}（规则 {rule}）",
        f"开始时间：{opened_at}",
    ]
    en = [
        f"[{sev_en}] {who_en} – {title_en}",
        f"Status: {status_en}",
        f"Alert #{alert_id} (rule {rule})",
        f"Opened at: {opened_at}",
    ]
    # What a follow-up adds: why, the note, and for contacts_unreached the people to call.
    for key, zh_label, en_label in (("reason", "原因", "Reason"), ("note", "备注", "Note")):
        if value := payload.get(key):
            zh.append(f"{zh_label}：{value}")
            en.append(f"{en_label}: {value}")
    if contacts := _contact_lines(payload.get("notify_contacts")):
        zh += ["请致电紧急联系人：", *contacts]
        en += ["Emergency contacts to call:", *contacts]
    if details := _detail_lines(alert.get("detail"), "："):
        zh += ["详情：", *details]
        en += ["Details:", *_detail_lines(alert.get("detail"), ": ")]
    if url:
        zh.append(f"查看告警：{url}")
        en.append(f"View the alert: {url}")
    body = "\n".join([*zh, "", "—— English ——", "", *en]) + "\n"
    return subject, body


class EmailChannel:
    """One SMTP connection per `send`: alerts are rare, and a fresh connection never goes stale."""

    name = "email"
    # Another party's server, which may hang: the outbox gives it a lane of its own.
    isolated = True

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout_s: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        breakers: Breakers | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.username = username
        self._password = password
        self.starttls = starttls
        self.timeout_s = timeout_s
        # None: the system trust store. A context of its own serves a relay with a private CA.
        self._ssl_context = ssl_context
        self._envelope_sender = parseaddr(sender)[1] or sender
        self._domain = self._envelope_sender.rpartition("@")[2] or "eldercare.invalid"
        self.breakers = breakers or Breakers()
        self._relay = f"smtp://{host}:{port}"

    def message_id(self, idempotency_key: str) -> str:
        # Hashed: a key may hold characters a msg-id may not. 128 bits keep it unique and short
        # enough that the header is not folded.
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
        return f"<eldercare.{digest}@{self._domain}>"

    def build(self, delivery: Delivery) -> EmailMessage:
        """The message for `delivery`; ValueError when the recipient address is unusable."""
        recipient = delivery.recipient
        subject, body = render(delivery.payload)
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = Address(display_name=recipient.name, addr_spec=recipient.email or "")
        message["Subject"] = subject
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = self.message_id(delivery.idempotency_key)
        message["X-Eldercare-Idempotency-Key"] = delivery.idempotency_key
        alert = delivery.payload.get("alert")
        if isinstance(alert, dict) and alert.get("id") is not None:
            # A shared reference threads reminders and the resolution under the first message.
            message["References"] = f"<eldercare.alert-{alert['id']}@{self._domain}>"
        # RFC 3834: out-of-office robots must not answer an alert.
        message["Auto-Submitted"] = "auto-generated"
        # base64 keeps the body 7-bit safe for any relay and is compact for Chinese text.
        message.set_content(body, cte="base64")
        return message

    def send(self, delivery: Delivery) -> None:
        recipient = delivery.recipient
        who = f"email recipient {recipient.id!r}"
        if not recipient.email:
            raise ChannelError(f"{who} has no email address", retryable=False)
        try:
            message = self.build(delivery)
        except ValueError as exc:
            raise ChannelError(
                f"{who}: message not buildable, bad address? ({type(exc).__name__})",
                retryable=False,
            ) from None
        self.breakers.before(self._relay, who)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                if self.starttls:
                    smtp.starttls(context=self._ssl_context or ssl.create_default_context())
                if self.username is not None:
                    smtp.login(self.username, self._password or "")
                smtp.send_message(
                    message, from_addr=self._envelope_sender, to_addrs=[recipient.email]
                )
        except smtplib.SMTPRecipientsRefused as exc:
            self.breakers.succeeded(self._relay)  # the relay answered
            codes = sorted({code for code, _text in exc.recipients.values()})
            # 4xx is the server saying "not now" (greylisting, full mailbox); 5xx is final.
            retryable = bool(codes) and all(400 <= code < 500 for code in codes)
            raise ChannelError(f"{who}: refused, SMTP {codes}", retryable=retryable) from None
        except smtplib.SMTPResponseException as exc:
            self.breakers.succeeded(self._relay)
            # Messages carry codes only: server replies can echo addresses or credentials.
            raise ChannelError(f"{who}: SMTP {exc.smtp_code} ({type(exc).__name__})") from None
        except (smtplib.SMTPException, OSError) as exc:
            self.breakers.failed(self._relay)
            # Refused or dropped connections, timeouts, TLS failures: the relay may be back later.
            raise ChannelError(f"{who}: {type(exc).__name__}") from None
        except Exception:
            self.breakers.released(self._relay)
            raise
        self.breakers.succeeded(self._relay)
