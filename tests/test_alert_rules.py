"""Alert rules, timers and routing as pure functions: no database, no broker, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from alerts.channels.base import Recipient
from alerts.routing import CareCircle, Person, Tier, channels_for, tier_people
from alerts.rules import Limits, Sample, Window, evaluate, sustained
from alerts.timers import DeviceState, battery, silence

NOW = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


def series(values, every_s=10, end=NOW):
    """Samples ending at `end`, one every `every_s` seconds."""
    n = len(values)
    return [
        Sample(v, end - timedelta(seconds=every_s * (n - 1 - i)), "wb-1")
        for i, v in enumerate(values)
    ]


def rules_for(samples, overrides=None):
    """The threshold rules' findings (NEWS2, which also sees these values, is tested on its own)."""
    found = evaluate(Window(1, NOW, samples, overrides or {}))
    return {f.rule: f.severity for f in found if f.rule != "news2"}


def test_sustained_needs_the_whole_duration():
    assert sustained(series([91] * 7), lambda v: v <= 92, timedelta(seconds=60))
    assert not sustained(series([91] * 6), lambda v: v <= 92, timedelta(seconds=60)), "only 50 s"
    assert not sustained(
        series([91, 91, 91, 97, 91, 91, 91]), lambda v: v <= 92, timedelta(seconds=60)
    )


def test_spo2_severity_by_level_and_a_single_noisy_sample_raises_nothing():
    assert rules_for({"spo2": series([91] * 8)}) == {"spo2_low": "critical"}
    assert rules_for({"spo2": series([94] * 8)}) == {"spo2_low": "warning"}
    assert rules_for({"spo2": series([97, 97, 97, 88, 97, 97, 97, 97])}) == {}


def test_back_filled_episode_that_has_ended_raises_nothing():
    old_end = NOW - timedelta(hours=2)
    samples = {"spo2": series([86] * 30, end=old_end) + series([97] * 3)}
    assert rules_for(samples) == {}


def test_tachycardia_needs_ten_minutes():
    assert rules_for({"heart_rate": series([135] * 61, every_s=10)}) == {
        "heart_rate_high": "warning"
    }
    assert rules_for({"heart_rate": series([135] * 30, every_s=10)}) == {}
    assert rules_for({"heart_rate": series([145] * 61, every_s=10)}) == {
        "heart_rate_high": "critical"
    }


def test_per_resident_override_changes_the_threshold():
    samples = {"systolic_bp": series([185])}
    assert rules_for(samples) == {"hypertensive_crisis": "critical"}
    assert rules_for(samples, {"systolic_bp": Limits(low=90, high=200)}) == {}


@pytest.mark.parametrize(
    ("metric", "value", "expected"),
    [
        ("diastolic_bp", 125, {"hypertensive_crisis": "critical"}),
        ("systolic_bp", 88, {"hypotension": "warning"}),
        ("body_temp", 38.2, {"fever": "warning"}),
        ("body_temp", 39.6, {"fever": "critical"}),
        ("body_temp", 37.6, {}),
        ("blood_glucose", 3.5, {"glucose_low": "warning"}),
        ("blood_glucose", 2.8, {"glucose_low": "critical"}),
    ],
)
def test_single_reading_rules(metric, value, expected):
    assert rules_for({metric: series([value])}) == expected


def _device(**kw):
    base = dict(
        device_id="wb-1",
        kind="wristband",
        resident_id=1,
        online=True,
        battery=80,
        last_seen_at=NOW - timedelta(minutes=1),
        bound_at=NOW - timedelta(days=1),
    )
    return DeviceState(**{**base, **kw})


def test_no_data_is_driven_by_the_clock_and_the_last_will():
    assert silence(_device(), NOW) is None
    silent = silence(_device(last_seen_at=NOW - timedelta(minutes=6)), NOW)
    assert silent is not None and silent.rule == "no_data:wb-1" and silent.severity == "warning"
    assert silence(_device(last_seen_at=NOW - timedelta(minutes=3), online=False), NOW) is not None
    assert (
        silence(_device(last_seen_at=None, bound_at=NOW - timedelta(minutes=10)), NOW) is not None
    ), "never spoke"
    cuff = _device(kind="bp_cuff", last_seen_at=NOW - timedelta(hours=13))
    assert silence(cuff, NOW) is None, "a cuff reports twice a day"


def test_low_battery():
    assert battery(_device(battery=50), NOW) is None
    assert battery(_device(battery=12), NOW).severity == "info"
    assert battery(_device(battery=4), NOW).severity == "warning"


DOCTOR = Person(
    1, "张医生", channels={"warning": ["mqtt", "email"]}, quiet_start=time(22), quiet_end=time(7)
)
DESK = Person(9, "值班台")


def test_routing_falls_back_to_the_duty_desk_and_never_is_empty():
    with_doctor = CareCircle(
        DOCTOR, (Person(2, "李医生"),), DESK, None, (Recipient("contact", "5", "李明"),)
    )
    without = CareCircle(None, (), DESK, None, ())
    assert [
        p.id for p in tier_people(with_doctor, Tier(0, ("contracted_doctor", "duty_desk")))
    ] == [1, 9]
    assert [p.id for p in tier_people(without, Tier(0, ("contracted_doctor",)))] == [9]
    assert [p.id for p in tier_people(with_doctor, Tier(300, ("team", "partner_duty_desk")))] == [2]
    assert [p.id for p in tier_people(with_doctor, Tier(600, ("emergency_contacts",)))] == ["5"]


def test_quiet_hours_never_apply_to_critical():
    night = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)  # 23:00 in Shanghai
    assert channels_for(DOCTOR, "warning", night) == (["mqtt", "email"], True)
    assert channels_for(DOCTOR, "critical", night)[1] is False
    assert channels_for(DOCTOR, "warning", NOW) == (["mqtt", "email"], False)


def test_news2_rule_uses_the_latest_values_and_says_it_is_partial():
    samples = {
        "resp_rate": series([26]),  # 3
        "spo2": series([93]),  # 2
        "heart_rate": series([115]),  # 2
        "body_temp": series([38.5]),  # 1
    }
    found = {f.rule: f for f in evaluate(Window(1, NOW, samples))}
    news2 = found["news2"]
    assert (
        news2.severity == "critical"
        and news2.detail["score"] == 8
        and news2.detail["band"] == "high"
    )
    assert set(news2.detail["missing"]) == {"air_or_oxygen", "systolic_bp", "consciousness"}
    assert news2.detail["complete"] is False
    calm = {"resp_rate": series([16]), "spo2": series([97]), "heart_rate": series([70])}
    assert "news2" not in {f.rule for f in evaluate(Window(1, NOW, calm))}
    noisy = {
        "resp_rate": series([16] * 3),
        "spo2": series([97, 97, 84]),
        "heart_rate": series([70] * 3),
    }
    assert "news2" not in {f.rule for f in evaluate(Window(1, NOW, noisy))}, "one noisy sample"
