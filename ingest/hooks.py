"""How the alert engine learns of emergency events the moment they are stored.

In-process callbacks for code that runs inside the ingestor, and a PostgreSQL NOTIFY on the channel
`eldercare_device_event` (payload: the event as JSON) for processes anywhere else; both fire only
after the event's row is committed, and only once per event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "eldercare_device_event"


@dataclass(frozen=True)
class StoredEvent:
    id: int
    device_id: str
    resident_id: int | None
    type: str
    occurred_at: datetime
    received_at: datetime
    lat: float | None
    lon: float | None
    # Repairs made to store an emergency despite faults (ingest/contract/events.py: Repair), if any.
    problems: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "device_id": self.device_id,
            "resident_id": self.resident_id,
            "type": self.type,
            "occurred_at": self.occurred_at.isoformat(),
            "received_at": self.received_at.isoformat(),
            "location": None if self.lat is None else {"lat": self.lat, "lon": self.lon},
            "problems": list(self.problems),
        }


EventHook = Callable[[StoredEvent], None]
_hooks: list[EventHook] = []


def on_device_event(hook: EventHook) -> EventHook:
    """Register `hook` to be called (on the ingestor's event thread) for every new event."""
    _hooks.append(hook)
    return hook


def remove_hook(hook: EventHook) -> None:
    _hooks.remove(hook)


def fire(event: StoredEvent) -> None:
    for hook in list(_hooks):
        try:
            hook(event)
        except Exception:
            log.exception("device-event hook %r failed for event %s", hook, event.id)
