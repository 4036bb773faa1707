"""What every device message shares: its topic, size and JSON, msg_id, device_id and timestamps.

Pure like the rest of the contract (now_utc is the clock its callers hand in); the telemetry,
events and status modules build on these checks.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson

TOPIC_PREFIX = "eldercare/v1/devices/"
MAX_PAYLOAD_BYTES = 64 * 1024
# Used with fullmatch: `$` would also match before a final "\n".
_TOPIC_RE = re.compile(
    r"eldercare/v1/devices/([A-Za-z0-9][A-Za-z0-9_.-]{0,63})/(telemetry|events|status)"
)
_MSG_ID_RE = re.compile(r"[\x21-\x7e]{1,64}")


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


@dataclass(frozen=True)
class Limits:
    future_tolerance: timedelta = timedelta(minutes=5)
    backfill_window: timedelta = timedelta(days=7)


@dataclass(frozen=True)
class Rejection:
    reason: Reason
    detail: str
    payload: bytes  # the raw bytes of the message, or of the one rejected object of an array


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


def valid_msg_id(obj: dict[str, Any]) -> str:
    """The object's msg_id, when it has the contract's form."""
    msg_id = obj.get("msg_id")
    if not isinstance(msg_id, str) or not _MSG_ID_RE.fullmatch(msg_id):
        raise Invalid(
            Reason.INVALID_STRUCTURE, "msg_id must be a string of 1-64 printable ASCII characters"
        )
    return msg_id


def check_device(obj: dict[str, Any], device_id: str) -> None:
    """Refuses a payload that names another device than its topic (naming none is fine)."""
    claimed = obj.get("device_id")
    if claimed is not None and claimed != device_id:
        raise Invalid(
            Reason.DEVICE_MISMATCH,
            f"payload says device {str(claimed)[:64]!r}, topic says {device_id!r}",
        )


def finite_number(metric: str, value: Any) -> float:
    """`value` as a finite float; `metric` names the field in the refusal."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(
            Reason.INVALID_STRUCTURE, f"{metric} must be a number, got {type(value).__name__}"
        )
    try:
        return _as_float(value)
    except Invalid as exc:
        raise Invalid(exc.reason, f"{metric}: {exc.detail}") from None


def claimed_msg_id(payload: bytes) -> str | None:
    """The msg_id a refused message claims, to answer it on the ack topic."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    msg_id = obj.get("msg_id") if isinstance(obj, dict) else None
    return msg_id[:64] if isinstance(msg_id, str) else None


def now_utc() -> datetime:
    """The arrival time the parsers are given (they never read the clock themselves)."""
    return datetime.now(UTC)
