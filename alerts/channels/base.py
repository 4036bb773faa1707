"""The one interface every notification channel implements.

The outbox (alerts/outbox.py) hands each channel one `Delivery` at a time and records the outcome:
returning means delivered — or, for a channel with `awaits_ack = True` (the doctor's app), handed
over and delivered only once the receiver acknowledges it; `ChannelError` means not delivered
(retried with backoff when `retryable`). A channel whose server is another party's (it may hang)
sets `isolated = True`: the outbox then sends its rows on a lane of their own, so it never holds up
the other channels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Recipient:
    kind: str  # 'doctor' (also duty desks), 'contact' (emergency contact), 'webhook', 'device'
    id: str
    name: str = ""
    email: str | None = None
    phone: str | None = None
    # webhook recipients: where and with which secret
    url: str | None = None
    secret: str | None = None
    # doctor recipients: an app login in force (eldercare care app-login), so an app can receive
    # and acknowledge what is published to the doctor's topic
    app_login: bool = False


@dataclass(frozen=True)
class Delivery:
    notification_id: int
    idempotency_key: str  # stable across retries and restarts: receivers deduplicate on it
    channel: str
    recipient: Recipient
    # The notification as JSON: {"kind": "raised"|"reminder"|"escalation"|..., "alert": {...}}
    payload: dict[str, Any] = field(default_factory=dict)


class ChannelError(Exception):
    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class Channel(Protocol):
    name: str

    def send(self, delivery: Delivery) -> None:
        """Deliver or raise ChannelError. Must not log secrets or health data beyond the ids."""
        ...
