"""Timer-driven rules: "no data" and low battery, pure functions of the devices' state at `now`.

"No data" is driven by the clock, never by the arrival of data, so it fires for a device that never
speaks again. A device's Last Will (offline) feeds the same rule after a short grace period.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from alerts.models import Finding
from alerts.rules.window import TITLES
from devices.models import DEVICE_KINDS

# Silence allowed before "no data": a few missed reports, never less than five minutes.
MISSED_REPORTS = 3
MIN_SILENCE = timedelta(minutes=5)
OFFLINE_GRACE = timedelta(minutes=2)
LOW_BATTERY = 15
VERY_LOW_BATTERY = 5


@dataclass(frozen=True)
class DeviceState:
    device_id: str
    kind: str
    resident_id: int
    online: bool | None  # None: it never reported a status
    battery: int | None
    last_seen_at: datetime | None
    bound_at: datetime
    expected_interval_s: int | None = None


def allowed_silence(device: DeviceState) -> timedelta:
    interval = device.expected_interval_s or DEVICE_KINDS[device.kind].expected_interval_s
    return max(MIN_SILENCE, timedelta(seconds=interval * MISSED_REPORTS))


def silence(device: DeviceState, now: datetime) -> Finding | None:
    heard = max(device.last_seen_at or device.bound_at, device.bound_at)
    silent_for = now - heard
    offline = device.online is False
    limit = OFFLINE_GRACE if offline else allowed_silence(device)
    if silent_for < limit:
        return None
    return Finding(
        rule=f"no_data:{device.device_id}",
        severity="warning",
        title=TITLES["no_data"],
        detail={
            "device_id": device.device_id,
            "kind": device.kind,
            "last_seen_at": device.last_seen_at.isoformat() if device.last_seen_at else None,
            "silent_s": int(silent_for.total_seconds()),
            "offline": offline,
        },
        device_id=device.device_id,
        at=now,
    )


def battery(device: DeviceState, now: datetime) -> Finding | None:
    if device.battery is None or device.battery > LOW_BATTERY:
        return None
    return Finding(
        rule=f"low_battery:{device.device_id}",
        severity="warning" if device.battery <= VERY_LOW_BATTERY else "info",
        title=TITLES["low_battery"],
        detail={"device_id": device.device_id, "battery": device.battery},
        device_id=device.device_id,
        at=now,
    )


def device_findings(devices: list[DeviceState], now: datetime) -> list[tuple[int, Finding]]:
    found: list[tuple[int, Finding]] = []
    for device in devices:
        for finding in (silence(device, now), battery(device, now)):
            if finding is not None:
                found.append((device.resident_id, finding))
    return found
