"""Properties of the contract: an SOS or fall is never lost, whatever its other fields hold."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.contract.envelope import Invalid, Limits, Reason, topic_parts
from ingest.contract.events import parse_event
from ingest.contract.status import parse_status
from ingest.contract.telemetry import (
    MAX_ARRAY_ELEMENTS,
    MAX_REJECTIONS_PER_MESSAGE,
    parse_telemetry,
)

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
LIMITS = Limits()

# JSON text rather than Python values, so that what json.dumps cannot write is in it too: numbers
# beyond a double (and beyond Python's 4300-digit int parsing limit), NaN, Infinity.
_HUGE = st.integers(min_value=309, max_value=6000).map(lambda digits: "1" + "0" * digits)
_NUMBER_TEXT = st.one_of(
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: json.dumps(f)),
    _HUGE,
    _HUGE.map(lambda text: "-" + text),
    st.sampled_from(["1e400", "-1e400", "1E999", "123456789012345678901234567890", "0.0", "-0"]),
)
_STRING_TEXT = st.text(max_size=20).map(json.dumps) | st.sampled_from(
    ['"\\u0000"', '"\\ud800"', '"2026-11-22T08:00:00"', '"0001-01-01T00:00:00+14:00"', '""']
)
_SCALAR_TEXT = st.one_of(st.sampled_from(["null", "true", "false"]), _NUMBER_TEXT, _STRING_TEXT)
_VALUE_TEXT = st.recursive(
    _SCALAR_TEXT,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
        st.dictionaries(_STRING_TEXT, children, max_size=4).map(
            lambda d: "{" + ",".join(f"{k}:{v}" for k, v in d.items()) + "}"
        ),
    ),
    max_leaves=8,
)
_LOCATION_TEXT = _VALUE_TEXT | st.tuples(_VALUE_TEXT, _VALUE_TEXT).map(
    lambda ll: '{"lat":' + ll[0] + ',"lon":' + ll[1] + "}"
)
_FIELDS = ("msg_id", "ts", "device_id", "note")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["sos", "fall", "SOS", " Fall "]),
    values=st.fixed_dictionaries({name: _VALUE_TEXT for name in _FIELDS}),
    location=_LOCATION_TEXT,
    left_out=st.sets(st.sampled_from(_FIELDS)),
)
def test_an_emergency_is_never_lost_whatever_its_other_fields_hold(
    kind, values, location, left_out
):
    fields = {f'"{name}"': text for name, text in values.items() if name not in left_out}
    fields['"location"'] = location
    fields['"type"'] = json.dumps(kind)
    raw = ("{" + ",".join(f"{k}:{v}" for k, v in fields.items()) + "}").encode()
    event = parse_event("sos-1", raw, NOW, LIMITS)  # never raises, so never quarantined
    assert event.is_emergency and event.type == kind.strip().lower()
    assert 0 < len(event.msg_id) <= 64 and event.msg_id.isascii() and event.msg_id.isprintable()
    assert event.lat is None or -90 <= event.lat <= 90
    assert event.lon is None or -180 <= event.lon <= 180
    assert event.occurred_at.tzinfo is not None
    # What is stored as jsonb: encodable, without NUL.
    assert "\\u0000" not in json.dumps(event.payload)


@pytest.mark.parametrize("number", ["1" + "0" * 400, "-1" + "0" * 400, "1" + "0" * 5000, "1e400"])
def test_telemetry_with_a_huge_number_is_refused_with_a_reason_not_a_parser_bug(number):
    for raw in (
        '{"msg_id": "m", "ts": 1795334400000, "readings": {"heart_rate": ' + number + "}}",
        '{"msg_id": "m", "ts": ' + number + ', "readings": {"heart_rate": 70}}',
    ):
        parsed = parse_telemetry("wb-1", raw.encode(), NOW, LIMITS)
        assert parsed.objects == []
        assert [r.reason for r in parsed.rejections] == [Reason.NON_FINITE]
        assert "double" in parsed.rejections[0].detail


def test_status_and_ordinary_events_with_a_huge_number_are_refused_with_a_reason():
    huge = "1" + "0" * 400
    with pytest.raises(Invalid) as exc:
        parse_status("wb-1", ('{"online": true, "battery": ' + huge + "}").encode(), NOW, LIMITS)
    assert exc.value.reason is Reason.NON_FINITE
    with pytest.raises(Invalid) as exc:
        parse_event(
            "wb-1",
            ('{"msg_id": "e", "type": "sos_cancel", "x": ' + huge + "}").encode(),
            NOW,
            LIMITS,
        )
    assert exc.value.reason is Reason.NON_FINITE


@pytest.mark.parametrize("msg_id", ["abc\n", "abc\r\n", "\nabc", "a b"])
def test_a_msg_id_with_a_newline_or_space_is_refused(msg_id):
    raw = json.dumps({"msg_id": msg_id, "ts": 1795334400000, "readings": {"heart_rate": 70}})
    parsed = parse_telemetry("wb-1", raw.encode(), NOW, LIMITS)
    assert [r.reason for r in parsed.rejections] == [Reason.INVALID_STRUCTURE]
    event = parse_event(
        "sos-1", json.dumps({"msg_id": msg_id, "type": "sos"}).encode(), NOW, LIMITS
    )
    assert event.msg_id.startswith("derived-")


def test_an_event_type_or_topic_with_a_final_newline_is_refused():
    with pytest.raises(Invalid) as exc:
        parse_event("wb-1", b'{"msg_id": "e", "type": "sos_cancel\\n"}', NOW, LIMITS)
    assert exc.value.reason is Reason.INVALID_STRUCTURE
    assert topic_parts("eldercare/v1/devices/wb-1/events\n") is None
    assert topic_parts("eldercare/v1/devices/wb-1/events") == ("wb-1", "events")


def test_an_array_of_empty_objects_is_quarantined_once_with_its_count():
    raw = b"[" + b",".join([b"{}"] * 20_000) + b"]"  # 60 KB: was 20,000 quarantine rows
    parsed = parse_telemetry("wb-1", raw, NOW, LIMITS)
    assert parsed.objects == []
    assert len(parsed.rejections) == 1
    (rejection,) = parsed.rejections
    assert rejection.reason is Reason.TOO_LARGE and "20000" in rejection.detail
    assert rejection.payload == raw


def test_many_bad_objects_in_a_backlog_are_summarised_and_the_good_ones_kept():
    good = [
        {"msg_id": f"g{i}", "ts": 1795334400000 - i * 1000, "readings": {"spo2": 96}}
        for i in range(100)
    ]
    bad = [{"msg_id": f"b{i}", "ts": 1795334400000, "readings": {"spo2": 9999}} for i in range(500)]
    raw = json.dumps(good + bad).encode()
    parsed = parse_telemetry("wb-1", raw, NOW, LIMITS)
    assert len(parsed.objects) == 100
    assert len(parsed.rejections) <= MAX_REJECTIONS_PER_MESSAGE
    kept = parsed.rejections[:-1]
    assert all(r.reason is Reason.OUT_OF_RANGE and r.payload != raw for r in kept)
    summary = parsed.rejections[-1]
    assert summary.payload == raw and str(500 - len(kept)) in summary.detail


def test_the_longest_valid_backlog_fits_under_the_element_cap():
    shortest = {"msg_id": "a", "ts": 1795334400000, "readings": {"spo2": 96}}
    count = 64 * 1024 // (len(json.dumps(shortest, separators=(",", ":"))) + 1)
    raw = json.dumps([shortest] * count, separators=(",", ":")).encode()
    assert len(raw) <= 64 * 1024 and count <= MAX_ARRAY_ELEMENTS
    assert len(parse_telemetry("wb-1", raw, NOW, LIMITS).objects) == count


def test_an_emergency_nested_too_deeply_to_parse_is_still_stored():
    raw = b'{"msg_id": "e-1", "type": "SOS", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    event = parse_event("sos-1", raw, NOW, LIMITS)
    assert (event.type, event.msg_id, event.payload, event.occurred_at) == ("sos", "e-1", {}, NOW)
    assert "payload_refused" in [p.repair.value for p in event.problems]
    unnamed = parse_event("sos-1", b'{"type": "fall", "x": ' + b"[" * 5000 + b"}", NOW, LIMITS)
    assert unnamed.type == "fall" and unnamed.msg_id.startswith("derived-")
