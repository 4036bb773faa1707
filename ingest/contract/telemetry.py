"""Telemetry messages: one reading object or a backlog array of them, checked against the metric table.

Accepted objects and per-object rejections come out; a message-level error rejects the whole message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ingest.contract.envelope import (
    Invalid,
    Limits,
    Reason,
    Rejection,
    check_device,
    decode_json,
    finite_number,
    parse_timestamp,
    valid_msg_id,
)
from ingest.metrics import METRICS

# The shortest valid telemetry object is 55 bytes, so no valid 64 KiB backlog has more elements;
# more is junk (e.g. `[{},{},…]`), quarantined once rather than as thousands of rows.
MAX_ARRAY_ELEMENTS = 1200
# Rejections quarantined one by one per message; the rest as one row with the whole message.
MAX_REJECTIONS_PER_MESSAGE = 10


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


def parse_telemetry_object(
    obj: Any, device_id: str, now: datetime, limits: Limits
) -> TelemetryObject:
    if not isinstance(obj, dict):
        raise Invalid(
            Reason.INVALID_STRUCTURE, "telemetry must be a JSON object or an array of objects"
        )
    check_device(obj, device_id)
    msg_id = valid_msg_id(obj)
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
        value = finite_number(metric, raw)
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
