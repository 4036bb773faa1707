"""Event messages (sos, fall, sos_cancel …): strict for ordinary events, repaired for emergencies
(see parse_event)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from ingest.contract.envelope import (
    Invalid,
    Limits,
    Reason,
    check_device,
    decode_json,
    finite_number,
    parse_timestamp,
    valid_msg_id,
)

_EVENT_TYPE_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
EMERGENCY_EVENTS = frozenset({"sos", "fall"})


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
        check_device(obj, device_id)
    except Invalid as exc:
        checks.fail(exc, Repair.DEVICE_MISMATCH, "stored for the topic's device")
    try:
        msg_id = valid_msg_id(obj)
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
    lat, lon = (
        finite_number("location.lat", value.get("lat")),
        finite_number("location.lon", value.get("lon")),
    )
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
