"""Status messages: a device's last word on being online, its battery and firmware (often retained)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ingest.contract.envelope import (
    Invalid,
    Limits,
    Reason,
    check_device,
    decode_json,
    parse_timestamp,
)


@dataclass(frozen=True)
class DeviceStatus:
    device_id: str
    online: bool
    reported_at: datetime
    battery: int | None
    firmware: str | None


def parse_status(device_id: str, payload: bytes, now: datetime, limits: Limits) -> DeviceStatus:
    obj = decode_json(payload)
    if not isinstance(obj, dict) or not isinstance(obj.get("online"), bool):
        raise Invalid(Reason.INVALID_STRUCTURE, "status must be an object with a boolean 'online'")
    check_device(obj, device_id)
    battery = obj.get("battery")
    if battery is not None and (
        isinstance(battery, bool) or not isinstance(battery, int | float) or not 0 <= battery <= 100
    ):
        raise Invalid(Reason.OUT_OF_RANGE, "battery must be a number 0-100")
    firmware = obj.get("firmware")
    if firmware is not None and not isinstance(firmware, str):
        raise Invalid(Reason.INVALID_STRUCTURE, "firmware must be a string")
    # A retained status may be old; it is still the device's last word, so no backfill limit applies.
    reported_at = now
    if obj.get("ts") is not None:
        reported_at = parse_timestamp(
            obj["ts"], now, Limits(limits.future_tolerance, timedelta(days=36500))
        )
    return DeviceStatus(
        device_id,
        obj["online"],
        reported_at,
        None if battery is None else round(battery),
        firmware and firmware.replace("\x00", "")[:64],  # PostgreSQL text holds no NUL
    )
