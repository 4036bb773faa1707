"""Webhook channel: POST the notification as signed JSON to a recipient's own URL.

Receivers authenticate a request with `verify_signature` (Stripe/GitHub style): the signature is
an HMAC-SHA256 over `f"{timestamp}.".encode() + body` with the recipient's shared secret, sent as
`X-Eldercare-Signature: sha256=<hex>` next to `X-Eldercare-Timestamp`. Signing the timestamp lets
receivers refuse replays of an old, captured request. `Idempotency-Key` is stable across retries,
so a receiver that deduplicates on it processes each notification once.

A receiver that hangs or refuses connections opens its circuit (alerts/channels/breaker.py): the
other notifications queued for it fail fast and wait for their retry, instead of each waiting out
the timeout while other platforms' notifications queue behind them.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from types import TracebackType
from urllib.parse import urlsplit

import httpx
import orjson

from alerts.channels.base import ChannelError, Delivery
from alerts.channels.breaker import Breakers

SIGNATURE_PREFIX = "sha256="
DEFAULT_TOLERANCE_S = 300
USER_AGENT = "eldercare-webhook/1"

# Statuses that say "try again later" although they are 4xx.
_RETRYABLE_4XX = frozenset({408, 429})


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Eldercare-Signature` header value for `body` sent at `timestamp` (unix seconds)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return SIGNATURE_PREFIX + digest.hexdigest()


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    signature_header: str,
    *,
    now: float | None = None,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> bool:
    """True when `signature_header` signs `body` at `timestamp` and the timestamp is fresh.

    Fresh means within `tolerance_s` of `now` in either direction: a request from the future is
    as suspicious as an old one, and clocks drift both ways.
    """
    if not timestamp.isascii() or not timestamp.isdigit():
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body)
    # compare_digest needs ASCII str; a non-ASCII header is simply not a valid signature.
    if not signature_header.isascii():
        return False
    # Constant time, so response timing does not reveal how much of a forged signature matched.
    return hmac.compare_digest(expected, signature_header.strip())


def _where(url: str) -> str:
    """Scheme, host and port only: webhook URLs often carry access tokens in their path or query.
    It also names the destination whose circuit a failure opens."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{parts.hostname or '?'}{port}"


class WebhookChannel:
    """One delivery attempt per `send`; the outbox owns retries. Close it when done."""

    name = "webhook"
    # Another party's server, which may hang: the outbox gives it a lane of its own.
    isolated = True

    def __init__(self, timeout_s: float = 5.0, breakers: Breakers | None = None) -> None:
        # One client per channel so consecutive deliveries reuse pooled connections. Redirects
        # are not followed: a signed body must go only to the URL the recipient registered.
        self._client = httpx.Client(
            timeout=timeout_s, follow_redirects=False, headers={"User-Agent": USER_AGENT}
        )
        self.breakers = breakers or Breakers()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> WebhookChannel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def send(self, delivery: Delivery) -> None:
        recipient = delivery.recipient
        who = f"webhook recipient {recipient.id!r}"
        # A missing URL or secret is a registration mistake that no retry can fix.
        if not recipient.url:
            raise ChannelError(f"{who} has no url", retryable=False)
        if not recipient.secret:
            raise ChannelError(f"{who} has no signing secret", retryable=False)
        try:
            scheme, where = urlsplit(recipient.url).scheme, _where(recipient.url)
        except ValueError:  # e.g. an unclosed IPv6 bracket
            raise ChannelError(f"{who} url does not parse", retryable=False) from None
        if scheme not in ("http", "https"):
            raise ChannelError(f"{who} url is not http(s)", retryable=False)

        body = orjson.dumps(delivery.payload)
        # Taken per attempt, so a retry hours later is not refused as a replay.
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": delivery.idempotency_key,
            "X-Eldercare-Timestamp": timestamp,
            "X-Eldercare-Signature": sign(recipient.secret, timestamp, body),
        }
        self.breakers.before(where, who)
        try:
            response = self._client.post(recipient.url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            self.breakers.failed(where)
            # `from None`: httpx messages may quote the URL, and with it any token inside.
            raise ChannelError(f"{who} at {where}: timed out ({type(exc).__name__})") from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.LocalProtocolError) as exc:
            self.breakers.released(where)
            # Our request itself cannot be sent (bad URL or header): resending the same one fails.
            raise ChannelError(
                f"{who} at {where}: request not sendable ({type(exc).__name__})", retryable=False
            ) from None
        except httpx.TransportError as exc:
            self.breakers.failed(where)
            # Connection refused or reset, DNS failure, a broken response: the receiver may be back.
            raise ChannelError(f"{who} at {where}: {type(exc).__name__}") from None
        except Exception:
            self.breakers.released(where)  # says nothing about the receiver; frees a probe slot
            raise
        # Any answer, even a 503, comes back at once: only silence holds the others up.
        self.breakers.succeeded(where)

        status = response.status_code
        if 200 <= status < 300:
            return
        # Other 4xx are the receiver refusing this request for good (and 3xx means it moved,
        # which needs the registration updated, not a retry).
        retryable = status >= 500 or status in _RETRYABLE_4XX
        raise ChannelError(f"{who} at {where}: HTTP {status}", retryable=retryable)
