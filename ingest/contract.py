"""The device → backend MQTT contract as pure parsing functions (docs/mqtt.md is its public form).

Nothing here does I/O: a topic and raw payload go in, accepted records or rejections with a reason
come out. The pipeline decides what to store and what to quarantine.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson

from ingest.metrics import METRICS

TOPIC_PREFIX = "eldercare/v1/devices/"
MAX_PAYLOAD_BYTES = 64 * 1024
_TOPIC_RE = re.compile(
    r"^eldercare/v1/devices/([A-Za-z0-9][A-Za-z0-9_.-]{0,63})/(telemetry|events|status)$"
)
_MSG_ID_RE = re.compile(r"^[\x21-\x7e]{1,64}$")
_EVENT_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
EMERGENCY_EVENTS = frozenset({"sos", "fall"})


class Reason(StrEnum):
    """Why a message (or one object in a backlog array) was not accepted."""

    BAD_TOPIC = "bad_topic"
    TOO_LARGE = "too_large"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NON_FINITE = "non_finite"
    INVALID_STRUCTURE = "invalid_structure"
    DEVICE_MISMATCH = "device_mismatch"
    BAD_TIMESTAMP = "bad_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    TOO_OLD = "too_old"
    UNKNOWN_METRIC = "unknown_metric"
    OUT_OF_RANGE = "out_of_range"
    EMPTY_READINGS = "empty_readings"
    UNKNOWN_DEVICE = "unknown_device"
    RETIRED_DEVICE = "retired_device"
    UNBOUND_DEVICE = "unbound_device"
    STORAGE_ERROR = "storage_error"


@dataclass(frozen=True)
class Limits:
    future_tolerance: timedelta = timedelta(minutes=5)
    backfill_window: timedelta = timedelta(days=7)


@dataclass(frozen=True)
class Rejection:
    reason: Reason
    detail: str
    payload: bytes  # the raw bytes of the message, or of the one rejected object of an array


@dataclass(slots=True)
class Reading:
    metric: str
    value: float
    measured_at: datetime


@dataclass(slots=True)
class TelemetryObject:
    msg_id: str
    measured_at: datetime
    readings: tuple[Reading, ...]


@dataclass
class ParsedTelemetry:
    device_id: str
    objects: list[TelemetryObject] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True)
class DeviceEvent:
    device_id: str
    msg_id: str
    type: str
    occurred_at: datetime
    lat: float | None
    lon: float | None
    payload: dict[str, Any]

    @property
    def is_emergency(self) -> bool:
        return self.type in EMERGENCY_EVENTS


@dataclass(frozen=True)
class DeviceStatus:
    device_id: str
    online: bool
    reported_at: datetime
    battery: int | None
    firmware: str | None


class Invalid(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def topic_parts(topic: str) -> tuple[str, str] | None:
    """(device_id, channel) for a device topic, None when the topic is not in the contract."""
    match = _TOPIC_RE.match(topic)
    return (match.group(1), match.group(2)) if match else None


def decode_json(payload: bytes) -> Any:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Invalid(
            Reason.TOO_LARGE, f"payload is {len(payload)} bytes, limit {MAX_PAYLOAD_BYTES}"
        )
    try:
        return orjson.loads(payload)  # validates UTF-8 too: the hot path decodes once
    except orjson.JSONDecodeError as exc:
        orjson_error = str(exc)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid(
            Reason.INVALID_UTF8, f"payload is not UTF-8: {exc.reason} at byte {exc.start}"
        ) from None
    # orjson refuses NaN/Infinity like any other syntax error; say precisely what was wrong.
    try:
        json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except Invalid:
        raise
    except ValueError:
        pass
    raise Invalid(Reason.INVALID_JSON, f"not valid JSON: {orjson_error}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise Invalid(Reason.NON_FINITE, f"{text[:40]} overflows a double; send finite values only")
    return value


def _refuse_constant(name: str) -> Any:
    raise Invalid(Reason.NON_FINITE, f"{name} is not a number JSON allows; send finite values only")


def parse_timestamp(value: Any, now: datetime, limits: Limits, what: str = "ts") -> datetime:
    if isinstance(value, bool) or value is None:
        raise Invalid(
            Reason.BAD_TIMESTAMP, f"{what} must be RFC 3339 with offset or epoch milliseconds"
        )
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise Invalid(Reason.NON_FINITE, f"{what} is not finite")
        try:
            moment = datetime.fromtimestamp(value / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise Invalid(
                Reason.BAD_TIMESTAMP, f"{what} {value} is not a valid epoch-milliseconds time"
            ) from None
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise Invalid(Reason.BAD_TIMESTAMP, f"{what} {value[:40]!r} is not RFC 3339") from None
        if moment.tzinfo is None:
            raise Invalid(
                Reason.BAD_TIMESTAMP, f"{what} {value[:40]!r} has no UTC offset (add Z or +08:00)"
            )
    else:
        raise Invalid(
            Reason.BAD_TIMESTAMP, f"{what} must be RFC 3339 with offset or epoch milliseconds"
        )
    if moment > now + limits.future_tolerance:
        raise Invalid(
            Reason.FUTURE_TIMESTAMP,
            f"{what} {moment.isoformat()} is in the future (now {now.isoformat()})",
        )
    if moment < now - limits.backfill_window:
        raise Invalid(
            Reason.TOO_OLD,
            f"{what} {moment.isoformat()} is older than the backfill window of {limits.backfill_window}",
        )
    return moment


def _msg_id(obj: dict[str, Any]) -> str:
    msg_id = obj.get("msg_id")
    if not isinstance(msg_id, str) or not _MSG_ID_RE.match(msg_id):
        raise Invalid(
            Reason.INVALID_STRUCTURE, "msg_id must be a string of 1-64 printable ASCII characters"
        )
    return msg_id


def _check_device(obj: dict[str, Any], device_id: str) -> None:
    claimed = obj.get("device_id")
    if claimed is not None and claimed != device_id:
        raise Invalid(
            Reason.DEVICE_MISMATCH,
            f"payload says device {str(claimed)[:64]!r}, topic says {device_id!r}",
        )


def _number(metric: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(
            Reason.INVALID_STRUCTURE, f"{metric} must be a number, got {type(value).__name__}"
        )
    if not math.isfinite(value):
        raise Invalid(Reason.NON_FINITE, f"{metric} is not finite")
    return float(value)


def parse_telemetry_object(
    obj: Any, device_id: str, now: datetime, limits: Limits
) -> TelemetryObject:
    if not isinstance(obj, dict):
        raise Invalid(
            Reason.INVALID_STRUCTURE, "telemetry must be a JSON object or an array of objects"
        )
    _check_device(obj, device_id)
    msg_id = _msg_id(obj)
    measured_at = parse_timestamp(obj.get("ts"), now, limits)
    values = obj.get("readings")
    if not isinstance(values, dict):
        raise Invalid(Reason.INVALID_STRUCTURE, "readings must be an object of metric: number")
    if not values:
        raise Invalid(Reason.EMPTY_READINGS, "readings is empty")
    readings = []
    for metric, raw in values.items():
        spec = METRICS.get(metric)
        if spec is None:
            raise Invalid(
                Reason.UNKNOWN_METRIC,
                f"unknown metric {metric[:40]!r}; known: {', '.join(METRICS)}",
            )
        value = _number(metric, raw)
        if not spec.low <= value <= spec.high:
            raise Invalid(
                Reason.OUT_OF_RANGE,
                f"{metric} {value:g} {spec.unit} is outside the plausible range {spec.low:g}-{spec.high:g}",
            )
        readings.append(Reading(metric, value, measured_at))
    return TelemetryObject(msg_id, measured_at, tuple(readings))


def parse_telemetry(
    device_id: str, payload: bytes, now: datetime, limits: Limits
) -> ParsedTelemetry:
    """Accepted objects and per-object rejections; a message-level error rejects the whole message."""
    parsed = ParsedTelemetry(device_id)
    try:
        document = decode_json(payload)
    except Invalid as exc:
        parsed.rejections.append(Rejection(exc.reason, exc.detail, payload))
        return parsed
    objects = document if isinstance(document, list) else [document]
    if not objects:
        parsed.rejections.append(Rejection(Reason.EMPTY_READINGS, "empty array", payload))
    for index, obj in enumerate(objects):
        try:
            parsed.objects.append(parse_telemetry_object(obj, device_id, now, limits))
        except Invalid as exc:
            raw = payload if len(objects) == 1 else orjson.dumps(obj)
            where = f"[{index}] " if isinstance(document, list) else ""
            parsed.rejections.append(Rejection(exc.reason, where + exc.detail, raw))
    return parsed


def parse_event(device_id: str, payload: bytes, now: datetime, limits: Limits) -> DeviceEvent:
    """An emergency call or device-detected event; `ts` may be left out (then: received now)."""
    obj = decode_json(payload)
    if not isinstance(obj, dict):
        raise Invalid(Reason.INVALID_STRUCTURE, "an event must be a JSON object")
    _check_device(obj, device_id)
    msg_id = _msg_id(obj)
    kind = obj.get("type")
    if not isinstance(kind, str) or not _EVENT_TYPE_RE.match(kind):
        raise Invalid(
            Reason.INVALID_STRUCTURE, "type must be a lower-case word such as sos, fall, sos_cancel"
        )
    occurred_at = now if obj.get("ts") is None else parse_timestamp(obj["ts"], now, limits)
    lat = lon = None
    location = obj.get("location")
    if location is not None:
        if not isinstance(location, dict):
            raise Invalid(
                Reason.INVALID_STRUCTURE, 'location must be {"lat": number, "lon": number}'
            )
        lat, lon = (
            _number("location.lat", location.get("lat")),
            _number("location.lon", location.get("lon")),
        )
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise Invalid(Reason.OUT_OF_RANGE, f"location {lat},{lon} is not on Earth")
    return DeviceEvent(device_id, msg_id, kind, occurred_at, lat, lon, obj)


def parse_status(device_id: str, payload: bytes, now: datetime, limits: Limits) -> DeviceStatus:
    obj = decode_json(payload)
    if not isinstance(obj, dict) or not isinstance(obj.get("online"), bool):
        raise Invalid(Reason.INVALID_STRUCTURE, "status must be an object with a boolean 'online'")
    _check_device(obj, device_id)
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
        firmware and firmware[:64],
    )


def now_utc() -> datetime:
    return datetime.now(UTC)
