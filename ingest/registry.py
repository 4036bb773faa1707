"""The ingestor's cached view of the device registry.

Before each batch it compares the registry's version (bumped by triggers in every changing
transaction, migration 0013) and reloads when it moved, so a device registered, retired or rebound a
moment ago is judged correctly.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from devices import queries
from ingest.contract.envelope import Reason


@dataclass
class _Entry:
    status: str
    # (bound_at, unbound_at, resident_id), sorted by bound_at
    bindings: list[tuple[datetime, datetime | None, int]] = field(default_factory=list)


class DeviceRegistry:
    def __init__(self) -> None:
        self._devices: dict[str, _Entry] = {}
        self._version: tuple[int, bool] | None = None

    def refresh_if_changed(self, conn: psycopg.Connection, *, force: bool = False) -> bool:
        """Reload when the registry's version moved (or `force`); True when it reloaded."""
        row = conn.execute(queries.SELECT_REGISTRY_VERSION).fetchone()
        version = (int(row[0]), bool(row[1])) if row else (0, False)
        if version == self._version and not force:
            return False
        devices: dict[str, _Entry] = {}
        for device_id, _kind, status, resident_id, bound_at, unbound_at in conn.execute(
            queries.SELECT_REGISTRY
        ):
            entry = devices.setdefault(device_id, _Entry(status))
            if resident_id is not None:
                entry.bindings.append((bound_at, unbound_at, resident_id))
        self._devices = devices
        self._version = version
        return True

    def device_problem(self, device_id: str) -> Reason | None:
        entry = self._devices.get(device_id)
        if entry is None:
            return Reason.UNKNOWN_DEVICE
        if entry.status != "active":
            return Reason.RETIRED_DEVICE
        return None

    def resident_at(self, device_id: str, moment: datetime) -> int | None:
        """The resident the device was bound to at `moment`, None if it was not bound then."""
        entry = self._devices.get(device_id)
        if entry is None or not entry.bindings:
            return None
        index = bisect.bisect_right(entry.bindings, moment, key=lambda b: b[0]) - 1
        if index < 0:
            return None
        _bound_at, unbound_at, resident_id = entry.bindings[index]
        if unbound_at is not None and moment >= unbound_at:
            return None
        return resident_id
