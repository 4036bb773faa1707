"""Page cursors for keyset paging: the sort key of a page's last row, as a short string.

Clients treat a cursor as opaque and pass `next` back unchanged. Every string that matches the
documented pattern is a position (one that was never handed out is just a place to start), so
input the OpenAPI schema allows is never refused: a cursor is valid or it fails the schema (422).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Microseconds since 1970: from about 1653 to 5138, all of which Python and PostgreSQL can hold.
_TIME = r"(?:-?[0-9]{1,16}|[0-9]{17})"

READINGS = rf"^{_TIME}\.[a-z0-9_]{{1,32}}(?:\.[A-Za-z0-9_-]{{0,400}})?$"
ALERTS = rf"^[0-2]\.{_TIME}\.[0-9]{{1,15}}$"


class CursorError(ValueError):
    """Not a cursor (only reachable by calling the parsers directly: the API checks the pattern)."""


@dataclass(frozen=True)
class ReadingPosition:
    at: datetime
    metric: str
    device_id: str  # '' sorts before every device (bucketed rows have none)


@dataclass(frozen=True)
class AlertPosition:
    rank: int
    opened_at: datetime
    id: int


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def _moment(micros: str) -> datetime:
    return _EPOCH + int(micros) * _MICROSECOND


def _text(part: str) -> str:
    """Lenient base64url: any string of its alphabet decodes to some text PostgreSQL can hold."""
    if len(part) % 4 == 1:
        part = part[:-1]
    raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    return raw.decode("utf-8", "replace").replace("\x00", "")


def readings_cursor(at: datetime, metric: str, device_id: str | None) -> str:
    device = base64.urlsafe_b64encode((device_id or "").encode()).decode().rstrip("=")
    return f"{_micros(at)}.{metric}" + (f".{device}" if device_id else "")


def parse_readings(cursor: str) -> ReadingPosition:
    if not re.fullmatch(READINGS, cursor):
        raise CursorError(f"not a readings cursor: {cursor!r}")
    at, metric, *device = cursor.split(".")
    return ReadingPosition(_moment(at), metric, _text(device[0]) if device else "")


def alerts_cursor(rank: int, opened_at: datetime, alert_id: int) -> str:
    return f"{rank}.{_micros(opened_at)}.{alert_id}"


def parse_alerts(cursor: str) -> AlertPosition:
    if not re.fullmatch(ALERTS, cursor):
        raise CursorError(f"not an alerts cursor: {cursor!r}")
    rank, opened_at, alert_id = cursor.split(".")
    return AlertPosition(int(rank), _moment(opened_at), int(alert_id))
