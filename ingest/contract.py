"""The device → backend MQTT contract as pure parsing functions (docs/mqtt.md is its public form).

Nothing here does I/O: a topic and raw payload go in, accepted records or rejections with a reason
come out. The pipeline decides what to store and what to quarantine.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson

from ingest.metrics import METRICS

TOPIC_PREFIX = "eldercare/v1/devices/"
MAX_PAYLOAD_BYTES = 64 * 1024
# The shortest valid telemetry object is 55 bytes, so no valid 64 KiB backlog has more elements;
# more is junk (e.g. `[{},{},…]`), quarantined once rather than as thousands of rows.
MAX_ARRAY_ELEMENTS = 1200
# Rejections quarantined one by one per message; the rest as one row with the whole message.
MAX_REJECTIONS_PER_MESSAGE = 10
# Used with fullmatch: `$` would also match before a final "\n".
_TOPIC_RE = re.compile(
    r"eldercare/v1/devices/([A-Za-z0-9][A-Za-z0-9_.-]{0,63})/(telemetry|events|status)"
)
_MSG_ID_RE = re.compile(r"[\x21-\x7e]{1,64}")
_EVENT_TYPE_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
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
    PARSE_FAILURE = "parse_failure"  # the parser itself failed: a bug, logged with its traceback


class Repair(StrEnum):
    """What was wrong with an emergency (sos, fall) that was stored anyway, and repaired how."""

    CLOCK_SKEW = (
        "clock_skew"  # ts unusable (device clock unset, in the future …): arrival time used
    )
    INVALID_LOCATION = "invalid_location"  # location unusable: left out
    NUL_REMOVED = "nul_removed"  # NUL characters (which PostgreSQL cannot store) removed
    INVALID_UTF8 = "invalid_utf8"  # undecodable bytes replaced by U+FFFD
    INVALID_JSON = "invalid_json"  # JSON only a lenient parser accepts (e.g. lone surrogates)
    NON_FINITE = "non_finite"  # NaN / Infinity replaced by null
    DEVICE_MISMATCH = "device_mismatch"  # payload names another device: the topic's is used
    INVALID_MSG_ID = "invalid_msg_id"  # missing or malformed msg_id: one derived from the message
    TYPE_NORMALISED = "type_normalised"  # e.g. "SOS" stored as "sos"
    RETIRED_DEVICE = "retired_device"  # from a device retired in the registry
    PAYLOAD_REFUSED = "payload_refused"  # the database refused the JSON (or it nests absurdly deep)


@dataclass(frozen=True)
class Problem:
    repair: Repair
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"code": self.repair.value, "detail": self.detail}


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
    # Non-empty only for an emergency that was stored despite faults (its raw bytes are kept then).
    problems: tuple[Problem, ...] = ()

    @property
    def is_emergency(self) -> bool:
        return self.type in EMERGENCY_EVENTS

    def with_problem(self, problem: Problem, **changes: Any) -> DeviceEvent:
        return replace(self, problems=(*self.problems, problem), **changes)


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
    match = _TOPIC_RE.fullmatch(topic)
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
        json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_finite_float,
        )
    except Invalid:
        raise
    except (ValueError, RecursionError):  # nested deeper than orjson's 1024 levels: recursion
        pass
    raise Invalid(Reason.INVALID_JSON, f"not valid JSON: {orjson_error}")


def _finite_float(text: str) -> float:
    """Also for integers: one beyond a double's range is refused here, before int() (which refuses
    more than 4300 digits with a ValueError) or math.isfinite() (OverflowError) could see it."""
    value = float(text)
    if not math.isfinite(value):
        raise Invalid(Reason.NON_FINITE, f"{text[:40]} overflows a double; send finite values only")
    return value


def _as_float(value: int | float) -> float:
    """`value` as a finite float; an int beyond a double's range is NON_FINITE, not OverflowError."""
    try:
        result = float(value)
    except OverflowError:
        raise Invalid(
            Reason.NON_FINITE, "a number overflows a double; send finite values only"
        ) from None
    if not math.isfinite(result):
        raise Invalid(Reason.NON_FINITE, "a number is not finite; send finite values only")
    return result


def _refuse_constant(name: str) -> Any:
    raise Invalid(Reason.NON_FINITE, f"{name} is not a number JSON allows; send finite values only")


def parse_timestamp(value: Any, now: datetime, limits: Limits, what: str = "ts") -> datetime:
    if isinstance(value, bool) or value is None:
        raise Invalid(
            Reason.BAD_TIMESTAMP, f"{what} must be RFC 3339 with offset or epoch milliseconds"
        )
    if isinstance(value, int | float):
        try:
            millis = _as_float(value)
        except Invalid as exc:
            raise Invalid(exc.reason, f"{what}: {exc.detail}") from None
        try:
            moment = datetime.fromtimestamp(millis / 1000, tz=UTC)
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
    if not isinstance(msg_id, str) or not _MSG_ID_RE.fullmatch(msg_id):
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
    try:
        return _as_float(value)
    except Invalid as exc:
        raise Invalid(exc.reason, f"{metric}: {exc.detail}") from None


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
    if len(objects) > MAX_ARRAY_ELEMENTS:
        detail = (
            f"array of {len(objects)} elements, limit {MAX_ARRAY_ELEMENTS} "
            "(no valid backlog of 64 KiB has more)"
        )
        parsed.rejections.append(Rejection(Reason.TOO_LARGE, detail, payload))
        return parsed
    elements: list[bytes] | None = None
    for index, obj in enumerate(objects):
        try:
            parsed.objects.append(parse_telemetry_object(obj, device_id, now, limits))
        except Invalid as exc:
            where = f"[{index}] " if isinstance(document, list) else ""
            if len(objects) == 1:
                raw = payload
            else:
                # Rare (rejections only), so the array is scanned again only then.
                elements = _array_elements(payload) if elements is None else elements
                if len(elements) == len(objects):
                    raw = elements[index]
                else:
                    raw, where = payload, where + "(payload: the whole array) "
            parsed.rejections.append(Rejection(exc.reason, where + exc.detail, raw))
    if len(parsed.rejections) > MAX_REJECTIONS_PER_MESSAGE:
        parsed.rejections[MAX_REJECTIONS_PER_MESSAGE - 1 :] = [
            _summary(parsed.rejections[MAX_REJECTIONS_PER_MESSAGE - 1 :], payload)
        ]
    return parsed


def _summary(rejections: list[Rejection], payload: bytes) -> Rejection:
    """One rejection for many objects of one array, with their count per reason."""
    counts: dict[Reason, int] = {}
    for rejection in rejections:
        counts[rejection.reason] = counts.get(rejection.reason, 0) + 1
    by_reason = ", ".join(f"{reason.value}: {count}" for reason, count in counts.items())
    detail = (
        f"{len(rejections)} more objects of this array rejected ({by_reason}); "
        f"first: {rejections[0].detail} (payload: the whole array)"
    )
    return Rejection(max(counts, key=lambda reason: counts[reason]), detail, payload)


_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def _array_elements(payload: bytes) -> list[bytes]:
    """The exact bytes of each element of a top-level JSON array ([] when it cannot tell)."""
    try:
        text = payload.decode("utf-8")  # valid UTF-8 (already parsed): slices re-encode exactly
        decoder = json.JSONDecoder()
        pos = _skip_space(text, 0)
        if text[pos : pos + 1] != "[":
            return []
        pos = _skip_space(text, pos + 1)
        elements: list[bytes] = []
        while text[pos : pos + 1] not in ("]", ""):
            _value, end = decoder.raw_decode(text, pos)
            elements.append(text[pos:end].encode("utf-8"))
            pos = _skip_space(text, end)
            if text[pos : pos + 1] == ",":
                pos = _skip_space(text, pos + 1)
        return elements
    except (ValueError, RecursionError):
        return []


def _skip_space(text: str, pos: int) -> int:
    match = _JSON_SPACE.match(text, pos)
    return match.end() if match else pos


def parse_event(device_id: str, payload: bytes, now: datetime, limits: Limits) -> DeviceEvent:
    """An emergency call or device-detected event; `ts` may be left out (then: `now`, the arrival).

    An emergency (sos, fall) is refused only when nothing usable is left (not JSON even to a lenient
    parser, not an object, too large): everything else that is wrong with it is repaired and listed
    in `problems`, because a person pressed a button. Other events follow the contract strictly.
    """
    try:
        return _parse_event(device_id, payload, now, limits)
    except RecursionError:  # the lenient parser's or the NUL scan's, on absurdly nested JSON
        event = _deep_emergency(device_id, payload, now)
        if event is None:
            raise Invalid(Reason.INVALID_STRUCTURE, "nested too deeply to be an event") from None
        return event


# Read from the text when no parser can go deep enough: a false positive alerts, never loses.
_DEEP_TYPE_RE = re.compile(r'"type"\s*:\s*"\s*(sos|fall)\s*"', re.IGNORECASE)
_DEEP_MSG_ID_RE = re.compile(r'"msg_id"\s*:\s*"([\x21\x23-\x5b\x5d-\x7e]{1,64})"')


def _deep_emergency(device_id: str, payload: bytes, now: datetime) -> DeviceEvent | None:
    """An emergency nested too deeply for any parser: its type (and msg_id) from the text."""
    text = payload.decode("utf-8", errors="replace")
    kind = _DEEP_TYPE_RE.search(text)
    if kind is None:
        return None
    problems = [Problem(Repair.PAYLOAD_REFUSED, "nested too deeply to parse: stored without it")]
    msg_id = _DEEP_MSG_ID_RE.search(text)
    if msg_id is None:
        derived = _derived_msg_id(None, payload)
        problems.append(Problem(Repair.INVALID_MSG_ID, f"msg_id not found: stored as {derived}"))
    return DeviceEvent(
        device_id,
        msg_id.group(1) if msg_id else derived,
        kind.group(1).lower(),
        now,
        None,
        None,
        {},
        tuple(problems),
    )


def _parse_event(device_id: str, payload: bytes, now: datetime, limits: Limits) -> DeviceEvent:
    obj, lenient_read = _decode_event(payload)
    emergency = _emergency_type(obj.get("type")) if isinstance(obj, dict) else None
    if lenient_read is not None and emergency is None:
        raise lenient_read
    if not isinstance(obj, dict):
        raise Invalid(Reason.INVALID_STRUCTURE, "an event must be a JSON object")
    salvage = []
    if lenient_read is not None:
        salvage.append(
            Problem(Repair(lenient_read.reason.value), f"{lenient_read.detail}: read leniently")
        )
    checks = _Checks(lenient=emergency is not None, problems=salvage)
    try:
        _check_device(obj, device_id)
    except Invalid as exc:
        checks.fail(exc, Repair.DEVICE_MISMATCH, "stored for the topic's device")
    try:
        msg_id = _msg_id(obj)
    except Invalid as exc:
        msg_id = _derived_msg_id(obj.get("msg_id"), payload)
        checks.fail(exc, Repair.INVALID_MSG_ID, f"stored as {msg_id}")
    if emergency is not None:
        kind = emergency
        if obj.get("type") != kind:
            checks.problems.append(
                Problem(Repair.TYPE_NORMALISED, f"type {obj.get('type')!r} read as {kind!r}")
            )
    else:
        claimed = obj.get("type")
        if not isinstance(claimed, str) or not _EVENT_TYPE_RE.fullmatch(claimed):
            raise Invalid(
                Reason.INVALID_STRUCTURE,
                "type must be a lower-case word such as sos, fall, sos_cancel",
            )
        kind = claimed
    occurred_at = now
    if obj.get("ts") is not None:
        try:
            occurred_at = parse_timestamp(obj["ts"], now, limits)
        except Invalid as exc:
            checks.fail(
                exc, Repair.CLOCK_SKEW, "occurred_at set to the time it arrived; check its clock"
            )
    lat = lon = None
    try:
        lat, lon = _location(obj.get("location"))
    except Invalid as exc:
        checks.fail(exc, Repair.INVALID_LOCATION, "location left out")
    try:
        has_nul = _has_nul(obj)
    except RecursionError:
        checks.fail(
            Invalid(Reason.INVALID_STRUCTURE, "nested too deeply to be an event"),
            Repair.PAYLOAD_REFUSED,
            "stored without its payload",
        )
        obj, has_nul = {}, False
    if has_nul:
        checks.fail(
            Invalid(Reason.INVALID_STRUCTURE, "strings must not contain NUL (\\u0000)"),
            Repair.NUL_REMOVED,
            "removed",
        )
    if checks.problems:
        obj = _storable(obj)
    return DeviceEvent(device_id, msg_id, kind, occurred_at, lat, lon, obj, tuple(checks.problems))


@dataclass
class _Checks:
    """Contract violations: refused (strict), or recorded with their repair (an emergency)."""

    lenient: bool
    problems: list[Problem]

    def fail(self, exc: Invalid, repair: Repair, consequence: str) -> None:
        if not self.lenient:
            raise exc
        self.problems.append(Problem(repair, f"{exc.detail}: {consequence}"))


def _emergency_type(value: Any) -> str | None:
    if isinstance(value, str):
        word = value.strip().lower()
        if word in EMERGENCY_EVENTS:
            return word
    return None


def _decode_event(payload: bytes) -> tuple[Any, Invalid | None]:
    """Strict JSON; or what a lenient parser makes of it, with the strict refusal, which stands
    unless the message is an emergency."""
    try:
        return decode_json(payload), None
    except Invalid as exc:
        if exc.reason not in (Reason.INVALID_UTF8, Reason.INVALID_JSON, Reason.NON_FINITE):
            raise
        strict = exc
    text = payload.decode("utf-8", errors="replace")
    try:
        return json.loads(
            text,
            parse_constant=lambda _name: None,
            parse_float=_finite_or_none,
            parse_int=_finite_or_none,
        ), strict
    except ValueError:
        raise strict from None


def _finite_or_none(text: str) -> float | int | None:
    """For floats and ints alike (an int beyond a double would break int() or float() later)."""
    value = float(text)
    if not math.isfinite(value):
        return None
    return int(text) if text.lstrip("-").isdigit() else value


def _derived_msg_id(claimed: Any, payload: bytes) -> str:
    """Stable for a re-send of the same message, so that it is still stored only once."""
    if claimed is None or claimed == "":
        data = payload
    else:
        data = (claimed if isinstance(claimed, str) else repr(claimed)).encode(errors="replace")
    return "derived-" + hashlib.sha256(data).hexdigest()[:40]


def _location(value: Any) -> tuple[float | None, float | None]:
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise Invalid(Reason.INVALID_STRUCTURE, 'location must be {"lat": number, "lon": number}')
    lat, lon = _number("location.lat", value.get("lat")), _number("location.lon", value.get("lon"))
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise Invalid(Reason.OUT_OF_RANGE, f"location {lat},{lon} is not on Earth")
    return lat, lon


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _storable(value: Any) -> Any:
    """`value` without what PostgreSQL's jsonb cannot hold: NUL characters, lone surrogates."""
    if isinstance(value, str):
        value = value.replace("\x00", "")
        return value if value.isascii() else value.encode(errors="replace").decode()
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def claimed_msg_id(payload: bytes) -> str | None:
    """The msg_id a refused message claims, to answer it on the ack topic."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    msg_id = obj.get("msg_id") if isinstance(obj, dict) else None
    return msg_id[:64] if isinstance(msg_id, str) else None


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
        firmware and firmware.replace("\x00", "")[:64],  # PostgreSQL text holds no NUL
    )


def now_utc() -> datetime:
    return datetime.now(UTC)
