"""The MQTT contract as pure functions: every rejection reason, without a broker or database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from ingest.contract.envelope import Invalid, Limits, Reason, topic_parts
from ingest.contract.events import parse_event
from ingest.contract.status import parse_status
from ingest.contract.telemetry import parse_telemetry
from ingest.metrics import METRICS
from ingest.pipeline import Incoming, build_batch
from ingest.registry import DeviceRegistry, _Entry

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
LIMITS = Limits()


def telemetry(payload: object) -> tuple[list, list[Reason]]:
    parsed = parse_telemetry("wb-1", orjson.dumps(payload), NOW, LIMITS)
    return parsed.objects, [r.reason for r in parsed.rejections]


def test_topic_parts():
    assert topic_parts("eldercare/v1/devices/wb-1/telemetry") == ("wb-1", "telemetry")
    assert topic_parts("eldercare/v1/devices/wb-1/events") == ("wb-1", "events")
    assert topic_parts("eldercare/v1/devices/wb-1/other") is None
    assert topic_parts("eldercare/v2/devices/wb-1/telemetry") is None


@pytest.mark.parametrize("ts", [NOW_MS, "2026-11-22T16:00:00+08:00", "2026-11-22T08:00:00Z"])
def test_accepts_both_timestamp_forms(ts):
    objects, reasons = telemetry(
        {"msg_id": "a", "ts": ts, "readings": {"heart_rate": 72, "spo2": 97}}
    )
    assert reasons == []
    assert objects[0].measured_at == NOW
    assert {r.metric: r.value for r in objects[0].readings} == {"heart_rate": 72.0, "spo2": 97.0}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"ts": NOW_MS, "readings": {"spo2": 97}}, Reason.INVALID_STRUCTURE),  # no msg_id
        ({"msg_id": "a", "ts": NOW_MS, "readings": []}, Reason.INVALID_STRUCTURE),
        ({"msg_id": "a", "ts": NOW_MS, "readings": {}}, Reason.EMPTY_READINGS),
        ({"msg_id": "a", "ts": NOW_MS, "readings": {"spo2": True}}, Reason.INVALID_STRUCTURE),
        ({"msg_id": "a", "ts": NOW_MS, "readings": {"blood_sugar": 5}}, Reason.UNKNOWN_METRIC),
        ({"msg_id": "a", "ts": NOW_MS, "readings": {"heart_rate": 400}}, Reason.OUT_OF_RANGE),
        ({"msg_id": "a", "ts": NOW_MS, "readings": {"body_temp": 29.9}}, Reason.OUT_OF_RANGE),
        (
            {"msg_id": "a", "ts": NOW_MS + 6 * 60_000, "readings": {"spo2": 97}},
            Reason.FUTURE_TIMESTAMP,
        ),
        ({"msg_id": "a", "ts": NOW_MS - 8 * 86_400_000, "readings": {"spo2": 97}}, Reason.TOO_OLD),
        (
            {"msg_id": "a", "ts": "2026-11-22T08:00:00", "readings": {"spo2": 97}},
            Reason.BAD_TIMESTAMP,
        ),
        ({"msg_id": "a", "ts": "yesterday", "readings": {"spo2": 97}}, Reason.BAD_TIMESTAMP),
        ({"msg_id": "a", "readings": {"spo2": 97}}, Reason.BAD_TIMESTAMP),
        (
            {"msg_id": "a", "device_id": "wb-2", "ts": NOW_MS, "readings": {"spo2": 97}},
            Reason.DEVICE_MISMATCH,
        ),
    ],
)
def test_rejections_say_why(payload, reason):
    objects, reasons = telemetry(payload)
    assert objects == []
    assert reasons == [reason]


@pytest.mark.parametrize("metric", list(METRICS))
def test_plausible_range_bounds_are_inclusive(metric):
    spec = METRICS[metric]
    for value in (spec.low, spec.high):
        _, reasons = telemetry({"msg_id": "a", "ts": NOW_MS, "readings": {metric: value}})
        assert reasons == []


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"msg_id": "a", "ts": 1, "readings": {"spo2": NaN}}', Reason.NON_FINITE),
        (b'{"msg_id": "a", "ts": 1, "readings": {"spo2": -Infinity}}', Reason.NON_FINITE),
        (b'{"msg_id": "a", "ts": 1, "readings": {"spo2": 1e999}}', Reason.NON_FINITE),
        (b"{nope", Reason.INVALID_JSON),
        (b"\xff\xfe{}", Reason.INVALID_UTF8),
        (b"x" * (64 * 1024 + 1), Reason.TOO_LARGE),
    ],
)
def test_message_level_rejections(raw, reason):
    parsed = parse_telemetry("wb-1", raw, NOW, LIMITS)
    assert [r.reason for r in parsed.rejections] == [reason]
    assert parsed.rejections[0].payload == raw


def test_backlog_array_keeps_good_objects_and_rejects_bad_ones_individually():
    good = {"msg_id": "a", "ts": NOW_MS - 60_000, "readings": {"spo2": 96}}
    bad = {"msg_id": "b", "ts": NOW_MS, "readings": {"spo2": 140}}
    parsed = parse_telemetry("wb-1", orjson.dumps([good, bad]), NOW, LIMITS)
    assert [o.msg_id for o in parsed.objects] == ["a"]
    assert [(r.reason, orjson.loads(r.payload)) for r in parsed.rejections] == [
        (Reason.OUT_OF_RANGE, bad)
    ]
    assert parsed.rejections[0].detail.startswith("[1] ")


def test_events_and_status():
    event = parse_event(
        "sos-1",
        orjson.dumps({"msg_id": "e", "type": "sos", "location": {"lat": 31.2, "lon": 121.4}}),
        NOW,
        LIMITS,
    )
    assert (
        event.is_emergency and event.occurred_at == NOW and (event.lat, event.lon) == (31.2, 121.4)
    )
    assert not parse_event(
        "sos-1", b'{"msg_id": "e", "type": "sos_cancel"}', NOW, LIMITS
    ).is_emergency
    with pytest.raises(Invalid) as exc:
        parse_event("sos-1", b'{"msg_id": "e", "type": "SOS!"}', NOW, LIMITS)
    assert exc.value.reason is Reason.INVALID_STRUCTURE
    status = parse_status("wb-1", b'{"online": false, "battery": 12.4}', NOW, LIMITS)
    assert (status.online, status.battery, status.reported_at) == (False, 12, NOW)
    with pytest.raises(Invalid):
        parse_status("wb-1", b'{"online": "yes"}', NOW, LIMITS)


def _registry() -> DeviceRegistry:
    registry = DeviceRegistry()
    registry._devices = {
        "wb-1": _Entry(
            "active",
            [
                (NOW - timedelta(days=2), NOW - timedelta(hours=1), 7),
                (NOW - timedelta(hours=1), None, 8),
            ],
        ),
        "wb-old": _Entry("retired", []),
    }
    return registry


def test_readings_are_attributed_to_the_resident_bound_at_measurement_time():
    registry = _registry()
    assert registry.resident_at("wb-1", NOW - timedelta(hours=2)) == 7
    assert registry.resident_at("wb-1", NOW - timedelta(minutes=5)) == 8
    assert registry.resident_at("wb-1", NOW - timedelta(days=3)) is None
    assert registry.device_problem("wb-old") is Reason.RETIRED_DEVICE
    assert registry.device_problem("nobody") is Reason.UNKNOWN_DEVICE


def test_build_batch_splits_a_reassigned_devices_backlog_between_residents():
    payload = orjson.dumps(
        [
            {"msg_id": "x", "ts": NOW_MS - 2 * 3_600_000, "readings": {"heart_rate": 70}},
            {"msg_id": "y", "ts": NOW_MS - 60_000, "readings": {"heart_rate": 71}},
            {"msg_id": "z", "ts": NOW_MS - 5 * 86_400_000, "readings": {"heart_rate": 72}},
        ]
    )
    batch = build_batch(
        [Incoming("eldercare/v1/devices/wb-1/telemetry", payload, NOW)], _registry(), LIMITS, NOW
    )
    assert [(row[1], row[4]) for row in batch.rows] == [("x", 7), ("y", 8)]
    assert [q.reason for q in batch.quarantined] == ["unbound_device"]


def test_a_rejected_array_element_keeps_its_original_bytes():
    # Spacing, escapes and key order as the device sent them: a re-encoding would change all three.
    good = b'{"msg_id": "a", "ts": %d, "readings": {"spo2": 96}}' % (NOW_MS - 60_000)
    bad = b'{ "readings" : {"spo2": 140},\n  "msg_id":"b\\u00e9", "ts": %d }' % NOW_MS
    payload = b" [ " + good + b" ,\n\t" + bad + b"  ] "
    parsed = parse_telemetry("wb-1", payload, NOW, LIMITS)
    assert [o.msg_id for o in parsed.objects] == ["a"]
    assert [(r.reason, r.payload) for r in parsed.rejections] == [
        (Reason.INVALID_STRUCTURE, bad)  # the msg_id is not ASCII
    ]


EMERGENCY_REPAIRS = [
    ({"msg_id": "e", "type": "sos", "ts": 0}, "clock_skew"),
    ({"msg_id": "e", "type": "fall", "ts": NOW_MS + 3_600_000}, "clock_skew"),
    ({"msg_id": "e", "type": "sos", "ts": "2026-11-22 08:00"}, "clock_skew"),
    ({"msg_id": "e", "type": "sos", "location": {"lat": 0, "lon": None}}, "invalid_location"),
    ({"msg_id": "e", "type": "sos", "location": {"lat": 95, "lon": 10}}, "invalid_location"),
    ({"msg_id": "e", "type": "sos", "location": "home"}, "invalid_location"),
    ({"msg_id": "e", "type": "sos", "note": "a\u0000b"}, "nul_removed"),
    ({"msg_id": "e", "type": "sos", "device_id": "other"}, "device_mismatch"),
    ({"type": "sos"}, "invalid_msg_id"),
    ({"msg_id": "x" * 65, "type": "fall"}, "invalid_msg_id"),
    ({"msg_id": "e", "type": "SOS"}, "type_normalised"),
]


@pytest.mark.parametrize(("payload", "code"), EMERGENCY_REPAIRS)
def test_an_emergency_is_repaired_not_refused(payload, code):
    event = parse_event("sos-1", orjson.dumps(payload), NOW, LIMITS)
    assert event.is_emergency
    assert [p.repair.value for p in event.problems] == [code]
    assert all(p.detail for p in event.problems)
    if code == "clock_skew":
        assert event.occurred_at == NOW  # the arrival time stands in for the device's clock
    if code == "invalid_location":
        assert (event.lat, event.lon) == (None, None)
    if code == "nul_removed":
        assert event.payload["note"] == "ab"


def test_an_emergency_that_only_a_lenient_parser_reads_is_stored_with_the_reason():
    raw = b'{"msg_id": "e", "type": "sos", "battery": NaN, "note": "\xff"}'
    event = parse_event("sos-1", raw, NOW, LIMITS)
    assert event.type == "sos" and event.msg_id == "e"
    assert [p.repair.value for p in event.problems] == ["invalid_utf8"]
    assert event.payload["battery"] is None and event.payload["note"] == "\ufffd"
    lone = parse_event("sos-1", b'{"msg_id": "e", "type": "sos", "note": "\\ud800"}', NOW, LIMITS)
    assert [p.repair.value for p in lone.problems] == ["invalid_json"]
    assert lone.payload["note"].isascii()  # the lone surrogate, which jsonb cannot hold, replaced


def test_a_derived_msg_id_is_stable_across_re_sends():
    first = parse_event("sos-1", b'{"type": "sos", "msg_id": 17, "ts": 1}', NOW, LIMITS)
    again = parse_event("sos-1", b'{"type": "sos", "msg_id": 17, "ts": 2}', NOW, LIMITS)
    other = parse_event("sos-1", b'{"type": "sos", "msg_id": 18, "ts": 1}', NOW, LIMITS)
    assert first.msg_id == again.msg_id != other.msg_id
    assert first.msg_id.startswith("derived-") and len(first.msg_id) <= 64


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"msg_id": "e", "type": "sos_cancel", "ts": 0}', Reason.TOO_OLD),
        (b'{"msg_id": "e", "type": "sos_cancel", "note": "a\\u0000b"}', Reason.INVALID_STRUCTURE),
        (b'{"msg_id": "e", "type": "fall_cancel", "x": NaN}', Reason.NON_FINITE),
        (b'{"msg_id": "e", "type": "sos_cancel", "note": "\xff"}', Reason.INVALID_UTF8),
        (b'{"msg_id": "e", "type": "sos", ', Reason.INVALID_JSON),  # nothing usable is left
        (b'["sos"]', Reason.INVALID_STRUCTURE),
        (b'{"msg_id": "e", "type": "help!"}', Reason.INVALID_STRUCTURE),
    ],
)
def test_other_events_follow_the_contract_strictly(raw, reason):
    with pytest.raises(Invalid) as exc:
        parse_event("sos-1", raw, NOW, LIMITS)
    assert exc.value.reason is reason


def test_absurd_nesting_is_refused_not_raised():
    parsed = parse_telemetry("wb-1", b"[" * 5000, NOW, LIMITS)
    assert [r.reason for r in parsed.rejections] == [Reason.INVALID_JSON]
    for raw in (b"[" * 5000, b'{"type": "sos_cancel", "x": ' + b"[" * 5000 + b"}"):
        with pytest.raises(Invalid):
            parse_event("sos-1", raw, NOW, LIMITS)
    # Deep but valid JSON in an emergency: the sos counts, its payload is left out.
    deep = b'{"msg_id": "e", "type": "sos", "x": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    event = parse_event("sos-1", deep, NOW, LIMITS)
    assert (event.type, event.payload) == ("sos", {})
    assert [p.repair.value for p in event.problems] == ["payload_refused"]
