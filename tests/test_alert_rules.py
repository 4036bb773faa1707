"""Alert rules, timers and routing as pure functions: no database, no broker, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from alerts.channels.base import Recipient
from alerts.routing import CareCircle, Person, Tier, channels_for, tier_people
from alerts.rules.limits import DEFAULT_LIMITS, Limits, defaults_for, effective_limits
from alerts.rules.table import evaluate
from alerts.rules.window import Sample, Window, sustained
from alerts.timers import DeviceState, battery, silence

NOW = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


def series(values, every_s=10, end=NOW):
    """Samples ending at `end`, one every `every_s` seconds."""
    n = len(values)
    return [
        Sample(v, end - timedelta(seconds=every_s * (n - 1 - i)), "wb-1")
        for i, v in enumerate(values)
    ]


def rules_for(samples, overrides=None, **facts):
    """The threshold rules' findings (NEWS2, which also sees these values, is tested on its own)."""
    found = evaluate(Window(1, NOW, samples, overrides or {}, **facts))
    return {f.rule: f.severity for f in found if f.rule != "news2"}


def found_for(samples, **facts):
    return {f.rule: f for f in evaluate(Window(1, NOW, samples, **facts))}


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


def test_a_one_sided_override_keeps_the_other_sides_default():
    # `care threshold --metric systolic_bp --high 200` stores low NULL: hypotension must still alert.
    high_only = {"systolic_bp": Limits(high=200)}
    assert rules_for({"systolic_bp": series([185])}, high_only) == {}
    assert rules_for({"systolic_bp": series([88])}, high_only) == {"hypotension": "warning"}
    low_only = {"systolic_bp": Limits(low=80)}
    assert rules_for({"systolic_bp": series([88])}, low_only) == {}
    assert rules_for({"systolic_bp": series([185])}, low_only) == {
        "hypertensive_crisis": "critical"
    }
    heart_low_only = {"heart_rate": Limits(low=38)}
    assert rules_for({"heart_rate": series([135] * 61)}, heart_low_only) == {
        "heart_rate_high": "warning"
    }
    assert effective_limits(DEFAULT_LIMITS["systolic_bp"], Limits(high=200)) == Limits(90, 200)
    assert effective_limits(DEFAULT_LIMITS["systolic_bp"], None) == Limits(90, 180)
    assert effective_limits(Limits(low=94), Limits(high=99)) == Limits(94, 99)


def test_scale_2_residents_get_their_own_spo2_target_not_the_default_94():
    # CLINICAL.md: scale 2 = hypercapnic respiratory failure, prescribed target 88–92 %.
    on_target = {"spo2": series([90] * 8)}
    assert rules_for(on_target) == {"spo2_low": "critical"}, "scale 1: 90 % is severe"
    assert rules_for(on_target, spo2_scale=2) == {}
    assert rules_for({"spo2": series([92] * 8)}, spo2_scale=2) == {}
    assert rules_for({"spo2": series([87] * 8)}, spo2_scale=2) == {"spo2_low": "warning"}
    assert rules_for({"spo2": series([85] * 8)}, spo2_scale=2) == {"spo2_low": "critical"}
    assert rules_for({"spo2": series([86, 86, 86, 95, 86, 86, 86])}, spo2_scale=2) == {}
    found = found_for({"spo2": series([86] * 8)}, spo2_scale=2)["spo2_low"]
    assert "scale 2" in found.detail["condition"]
    # The doctor's own target still wins, merged with the scale-2 default.
    assert rules_for({"spo2": series([89] * 8)}, {"spo2": Limits(low=89)}, spo2_scale=2) == {
        "spo2_low": "warning"
    }
    assert rules_for({"spo2": series([87] * 8)}, {"spo2": Limits(high=99)}, spo2_scale=2) == {
        "spo2_low": "warning"
    }
    assert defaults_for(2)["spo2"] == Limits(low=87) and defaults_for(1)["spo2"] == Limits(low=94)


def test_fever_single_reading_repeated_readings_and_rise_above_baseline():
    # IDSA (CLINICAL.md): single > 37.8 °C, repeated > 37.2 °C, or > 1.1 °C above baseline.
    def fever(values, every_s=60, **facts):
        found = found_for({"body_temp": series(values, every_s=every_s)}, **facts).get("fever")
        return None if found is None else (found.severity, found.detail["criterion"])

    assert fever([37.9]) == ("warning", "single")
    assert fever([39.6]) == ("critical", "single")
    assert fever([37.4] * 31) == ("warning", "repeated"), "30 minutes above 37.2"
    assert fever([37.4] * 20) is None, "only 19 minutes"
    assert fever([37.2] * 31) is None, "37.2 is not above 37.2"
    assert fever([37.4] * 15 + [37.0] + [37.4] * 15) is None, "one normal reading in between"
    assert fever([37.3, 37.4], every_s=35 * 60) == ("warning", "repeated"), "two spot checks"
    baseline = {"body_temp": 36.1}
    assert fever([37.3, 37.3], every_s=600, baselines=baseline) == ("warning", "above_baseline")
    assert fever([37.2, 37.3], every_s=600, baselines=baseline) is None, "37.2 is 1.1 above"
    assert fever([37.3], baselines=baseline) is None, "one warm reading is not enough"
    assert fever([37.3, 37.3], every_s=600) is None, "no baseline known: criterion not used"
    # A doctor's single-reading limit moves the repeated limit with it (38.3 → 37.7).
    warm = {"body_temp": Limits(high=38.3)}
    assert rules_for({"body_temp": series([37.6] * 31, every_s=60)}, warm) == {}
    assert rules_for({"body_temp": series([37.8] * 31, every_s=60)}, warm) == {"fever": "warning"}


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


def test_news2_rule_uses_confirmed_values_and_says_it_is_partial():
    # Changed deliberately: single fresh readings no longer count (see the noisy-sample test below);
    # three readings per parameter, or lone spot checks that have stood for 5 minutes, do.
    samples = {
        "resp_rate": series([26] * 3),  # 3
        "spo2": series([93] * 3),  # 2
        "heart_rate": series([115] * 3),  # 2
        "body_temp": series([38.5], end=NOW - timedelta(minutes=6)),  # 1, a thermometer's reading
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
    assert news2.detail["parameters"]["body_temp"]["age_s"] == 360
    calm = {"resp_rate": series([16]), "spo2": series([97]), "heart_rate": series([70])}
    assert "news2" not in {f.rule for f in evaluate(Window(1, NOW, calm))}
    noisy = {
        "resp_rate": series([16] * 3),
        "spo2": series([97, 97, 84]),
        "heart_rate": series([70] * 3),
    }
    assert "news2" not in {f.rule for f in evaluate(Window(1, NOW, noisy))}, "one noisy sample"


def news2_of(samples, **facts):
    found = found_for(samples, **facts).get("news2")
    return None if found is None else found


def test_one_noisy_sample_among_one_or_two_does_not_raise_news2():
    assert news2_of({"heart_rate": series([135])}) is None, "a lone fresh reading"
    assert news2_of({"spo2": series([97, 84])}) is None, "two readings: the less alarming counts"
    assert news2_of({"spo2": series([84, 97])}) is None
    assert news2_of({"resp_rate": series([26, 16])}) is None
    # Two agreeing readings, a lone one that has stood 5 minutes, or the median of three do count.
    assert news2_of({"spo2": series([84, 85])}).severity == "warning"
    assert news2_of({"heart_rate": series([135], end=NOW - timedelta(minutes=5))}) is not None
    assert news2_of({"resp_rate": series([26, 26, 16])}).severity == "warning"
    # What was left out is said, not dropped: an unconfirmed reading is named in the finding.
    found = news2_of({"resp_rate": series([26] * 3), "heart_rate": series([135])})
    assert found.detail["score"] == 3 and "heart_rate" in found.detail["missing"]
    assert found.detail["unconfirmed"]["heart_rate"]["value"] == 135


def test_news2_on_scale_2_names_spo2_as_unscored_when_oxygen_is_unknown():
    samples = {"resp_rate": series([26] * 3), "spo2": series([95] * 3)}
    found = news2_of(samples, spo2_scale=2)
    assert found is not None and found.detail["score"] == 3
    assert "spo2" in found.detail["missing"]
    assert found.detail["unscored"]["spo2"]["value"] == 95
    assert "oxygen" in found.detail["unscored"]["spo2"]["reason"]
    assert "spo2 95 measured but not scored" in found.detail["note"]
    # When the facts are known the rule uses them: 95 % on oxygen scores 2, oxygen itself 2.
    on_oxygen = news2_of(samples, spo2_scale=2, on_oxygen=True)
    assert on_oxygen.detail["score"] == 7 and on_oxygen.severity == "critical"
    assert "unscored" not in on_oxygen.detail
    assert news2_of(samples, spo2_scale=2, on_oxygen=False).detail["score"] == 3
    confused = news2_of({"heart_rate": series([70] * 3)}, consciousness="V")
    assert confused.detail["parameters"]["consciousness"]["score"] == 3
    assert "consciousness" not in confused.detail["missing"]
