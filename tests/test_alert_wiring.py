"""The engine's wiring of what the rules need: the resident's own temperature baseline, air or oxygen
from the doctor's record, spot measurements' look-backs, lone readings confirmed by the clock; and
the tables that must cover every rule, notification kind and timeline action."""

from __future__ import annotations

import ast
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from alerts import escalation, facts, lifecycle
from alerts.channels.email import KIND_WORDS, render
from alerts.clearing import EVIDENCE
from alerts.clock import ManualClock
from alerts.engine import AlertEngine
from alerts.models import Finding
from alerts.rules.table import READING_RULE_KEYS, RULES, evaluate
from alerts.rules.window import LOOKBACKS, Sample, Window
from alerts.settings import AlertSettings
from devices import service as devices
from ingest.metrics import METRICS
from tests.support import ROOT, cli, cli_json

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@pytest.fixture()
def clock():
    return ManualClock(datetime.now(UTC))


@pytest.fixture()
def engine(settings, clock):
    return AlertEngine(settings, AlertSettings(), clock=clock)


def _resident(conn, **kw):
    return devices.add_resident(conn, name=f"住户-{uuid.uuid4().hex[:6]}", **kw).id


def _insert(conn, resident_id, metric, readings, *, device="thermo", received_at=None):
    """readings: (measured_at, value); received when measured unless `received_at` is given."""
    device_id = f"{device}-{resident_id}"
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO reading (resident_id, measured_at, value, received_at, metric, msg_id, "
            "device_id) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [
                (resident_id, at, value, received_at or at, metric, uuid.uuid4().hex, device_id)
                for at, value in readings
            ],
        )


def _twice_daily(now, days, value, *, skip_last=DAY + HOUR):
    """A thermometer check at 08:00 and 20:00 (relative to `now`) for `days` days before skip_last."""
    end = now - skip_last
    return [(end - timedelta(hours=12 * i), value) for i in range(days * 2)]


def _open_rules(conn, resident_id):
    return {
        rule: detail
        for rule, detail in conn.execute(
            "SELECT rule, detail FROM alert WHERE resident_id = %s AND state <> 'resolved'",
            (resident_id,),
        )
    }


# --- 1. the temperature baseline --------------------------------------------------------------


def _fever_episode(conn, resident_id, start, end):
    """A fever alert that was open from `start` to `end`, with its hot readings."""
    alert = lifecycle.raise_finding(
        conn,
        resident_id=resident_id,
        finding=Finding(rule="fever", severity="warning", title="发热 / Fever"),
        now=start,
    )
    lifecycle.resolve(conn, alert.id, actor="doctor:1", now=end, note="退热")
    hours = int((end - start) / HOUR)
    _insert(conn, resident_id, "body_temp", [(start + HOUR * i, 38.5) for i in range(hours)])


def test_the_baseline_is_the_residents_own_usual_temperature_without_episodes(conn, clock):
    now = clock.now()
    resident = _resident(conn)
    _insert(conn, resident, "body_temp", _twice_daily(now, 4, 35.9))  # 8 checks in days 1-5
    # Ten hot hours during a fever alert six days ago: more than the usual readings, left out.
    _fever_episode(conn, resident, now - 6 * DAY - 10 * HOUR, now - 6 * DAY)
    _insert(conn, resident, "body_temp", [(now - 2 * HOUR, 37.1)])  # the last day: left out
    found = facts.baseline(conn, resident, now)
    assert found is not None and found.value == 35.9 and found.hours == 8
    assert "median of 8 hourly means" in found.source()
    assert facts.baseline(conn, _resident(conn), now) is None, "no readings, no baseline"
    few = _resident(conn)
    _insert(conn, few, "body_temp", _twice_daily(now, 2, 36.0))  # 4 checks: too few to tell
    assert facts.baseline(conn, few, now) is None


def test_two_checks_11_above_the_residents_baseline_raise_fever_through_the_engine(
    conn, engine, clock
):
    # IDSA: > 1.1 °C above baseline. 37.1 °C is below both fixed limits (37.8 single, 37.2
    # repeated): only the resident's own baseline of 35.9 °C makes it a fever.
    now = clock.now()
    cool, usual = _resident(conn), _resident(conn)
    for resident in (cool, usual):
        _insert(
            conn, resident, "body_temp", _twice_daily(now, 5, 35.9 if resident == cool else 36.6)
        )
        # Last night's check and this morning's, the second just taken.
        _insert(
            conn,
            resident,
            "body_temp",
            [(now - 12 * HOUR, 37.1), (now - timedelta(minutes=2), 37.1)],
        )
    engine.evaluate_readings(conn, now)
    fever = _open_rules(conn, cool).get("fever")
    assert fever is not None and fever["criterion"] == "above_baseline"
    assert fever["baseline"]["value"] == 35.9 and "own readings" in fever["baseline"]["source"]
    assert "fever" not in _open_rules(conn, usual), "37.1 is within 1.1 of a 36.6 baseline"


# --- 1. air or oxygen, consciousness -----------------------------------------------------------


def _wristband_minutes(conn, resident_id, now, values, minutes=5):
    for metric, value in values.items():
        readings = [(now - timedelta(minutes=m), value) for m in range(minutes)]
        _insert(conn, resident_id, metric, readings, device="wb")


def test_news2_uses_the_doctors_oxygen_record_and_says_where_it_came_from(conn, engine, clock, env):
    now = clock.now()
    resident = _resident(conn, spo2_scale=2)  # hypercapnic: scale 2, where oxygen matters
    _wristband_minutes(conn, resident, now, {"spo2": 95, "resp_rate": 25})  # resp 25 scores 3
    before = {f.rule: f for f in engine.evaluate_resident(conn, resident, now)}
    assert before["news2"].detail["score"] == 3
    assert "spo2" in before["news2"].detail["unscored"], "oxygen unknown: not scored, not guessed"
    assert before["news2"].detail["facts"]["air_or_oxygen"].startswith("not known")
    assert before["news2"].detail["facts"]["consciousness"].startswith("not known")

    recorded = cli_json(
        "care",
        "oxygen",
        "--resident",
        str(resident),
        "--breathing",
        "oxygen",
        "--by",
        "doctor:7",
        env=env,
    )
    assert recorded["on_oxygen"] is True
    after = {f.rule: f for f in engine.evaluate_resident(conn, resident, now)}
    news2 = after["news2"].detail
    # 95 % on oxygen on scale 2 scores 2, oxygen itself 2, respiration 3: high (7).
    assert news2["parameters"]["spo2"]["score"] == 2
    assert news2["parameters"]["air_or_oxygen"]["value"] == "oxygen"
    assert news2["score"] == 7 and after["news2"].severity == "critical"
    assert "unscored" not in news2
    source = news2["facts"]["air_or_oxygen"]
    assert "record" in source and "doctor:7" in source and "not measured" in source

    cli("care", "oxygen", "--resident", str(resident), "--breathing", "air", env=env)
    on_air = {f.rule: f for f in engine.evaluate_resident(conn, resident, now)}["news2"].detail
    assert on_air["score"] == 3 and on_air["parameters"]["spo2"]["band"] == "≥93 on air"
    bad = cli(
        "care",
        "oxygen",
        "--resident",
        str(resident),
        "--breathing",
        "maybe",
        env=env,
        check=False,
    )
    assert bad.returncode == 1 and "breathing must be one of" in bad.stderr


# --- 2. spot measurements' look-backs ----------------------------------------------------------


def test_twice_daily_checks_meet_repeated_fever_and_old_ones_raise_nothing(conn, engine, clock):
    now = clock.now()
    checked, backfilled = _resident(conn), _resident(conn)
    # IDSA's "repeated > 37.2 °C" from last night's and this morning's thermometer checks.
    _insert(
        conn, checked, "body_temp", [(now - 12 * HOUR, 37.4), (now - timedelta(minutes=1), 37.5)]
    )
    # The same two checks, but uploaded now from a meter last synced hours ago: history.
    _insert(
        conn,
        backfilled,
        "body_temp",
        [(now - 14 * HOUR, 37.4), (now - 2 * HOUR, 37.5)],
        received_at=now,
    )
    engine.evaluate_readings(conn, now)
    fever = _open_rules(conn, checked).get("fever")
    assert fever is not None and fever["criterion"] == "repeated"
    assert not _open_rules(conn, backfilled)
    engine.evaluate_resident(conn, backfilled, now)  # even when judged (another device reported)
    assert not _open_rules(conn, backfilled), "the newest reading is not fresh"


def test_a_cuff_reading_synced_late_is_judged_and_one_synced_next_day_is_not(conn, engine, clock):
    now = clock.now()
    late, next_day = _resident(conn), _resident(conn)
    # Through a phone that synced 20 minutes after the measurement: the wearables' 15 minutes
    # would never have picked this resident.
    _insert(
        conn,
        late,
        "systolic_bp",
        [(now - timedelta(minutes=20), 86)],
        device="cuff",
        received_at=now,
    )
    _insert(conn, next_day, "systolic_bp", [(now - 20 * HOUR, 86)], device="cuff", received_at=now)
    engine.evaluate_readings(conn, now)
    assert "hypotension" in _open_rules(conn, late)
    assert not _open_rules(conn, next_day)


def test_news2_keeps_this_mornings_blood_pressure_with_its_age(conn, engine, clock):
    now = clock.now()
    resident = _resident(conn)
    _insert(conn, resident, "systolic_bp", [(now - 10 * HOUR, 88)], device="cuff")  # scores 3
    _insert(
        conn,
        resident,
        "heart_rate",
        [(now - timedelta(minutes=m), 70) for m in range(5)],
        device="wb",
    )
    news2 = {f.rule: f for f in engine.evaluate_resident(conn, resident, now)}["news2"].detail
    assert news2["parameters"]["systolic_bp"]["score"] == 3
    assert news2["parameters"]["systolic_bp"]["age_s"] == 10 * 3600
    # Without anything fresh, the old reading alone is history: no NEWS2 from it.
    alone = _resident(conn)
    _insert(conn, alone, "systolic_bp", [(now - 10 * HOUR, 88)], device="cuff")
    assert "news2" not in {f.rule for f in engine.evaluate_resident(conn, alone, now)}


def test_a_cuff_reading_12_hours_after_another_is_judged_on_its_own():
    # Two cuff readings half a day apart are two measurements, not one noisy pair: the evening's
    # low blood pressure is not outvoted by the morning's normal one.
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    samples = {
        "systolic_bp": [Sample(120, now - 12 * HOUR), Sample(88, now - timedelta(minutes=6))],
        "heart_rate": [Sample(70, now - timedelta(minutes=m)) for m in (2, 1, 0)],
    }
    (news2,) = [f for f in evaluate(Window(1, now, samples)) if f.rule == "news2"]
    assert news2.detail["parameters"]["systolic_bp"]["value"] == 88


# --- 3. a lone reading confirmed by the clock ---------------------------------------------------


def test_a_lone_cuff_reading_is_confirmed_for_news2_without_another_reading(conn, engine, clock):
    now = clock.now()
    resident = _resident(conn)  # a cuff, no wearable: nothing else will arrive
    # Received before the engine's previous pass, so only the clock can bring it back.
    _insert(
        conn,
        resident,
        "systolic_bp",
        [(now - timedelta(minutes=1), 88)],
        device="cuff",
        received_at=datetime.now(UTC) - timedelta(seconds=30),
    )
    engine.evaluate_readings(conn, now)
    assert set(_open_rules(conn, resident)) == {"hypotension"}, "NEWS2 waits for confirmation"
    engine.evaluate_readings(conn, clock.advance(timedelta(minutes=3)))
    assert "news2" not in _open_rules(conn, resident), "stood 4 minutes only"
    engine.evaluate_readings(conn, clock.advance(timedelta(minutes=1, seconds=5)))
    news2 = _open_rules(conn, resident).get("news2")
    assert news2 is not None and news2["parameters"]["systolic_bp"]["score"] == 3


# --- 4-5. tables that must cover every rule, kind and action -----------------------------------


def test_every_reading_rule_has_clearing_evidence_and_every_metric_a_lookback():
    missing = READING_RULE_KEYS - set(EVIDENCE)
    assert not missing, f"never resolve themselves: add to alerts/clearing.py EVIDENCE: {missing}"
    assert set(EVIDENCE) <= READING_RULE_KEYS, "evidence for a rule that no longer exists"
    for rule, evidence in EVIDENCE.items():
        assert evidence.metrics and set(evidence.metrics) <= set(LOOKBACKS), rule
    assert set(LOOKBACKS) <= set(METRICS)
    assert {k for r in RULES for k in r.produces} == READING_RULE_KEYS


def _service_literals():
    """Notification kinds and timeline actions written by the alert life cycle (lifecycle.py,
    fanout.py, escalation.py), from their source."""
    modules = ("lifecycle.py", "fanout.py", "escalation.py", "transitions.py")
    tree = ast.Module(
        body=[ast.parse((ROOT / "alerts" / m).read_text()) for m in modules], type_ignores=[]
    )
    kinds: set[str] = set()
    actions: set[str] = set()

    def constants(node):
        return {
            n.value
            for n in ast.walk(node)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        }

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute):
            # fanout.to_people(...) from other modules, to_people(...) inside fanout.py
            name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            args = node.args
            if name in ("to_people", "to_webhooks", "to_contacts", "to_device") and len(args) > 2:
                kinds |= constants(args[2])
            if name == "record" and len(args) > 4:
                actions |= constants(args[4])
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "kind" for t in node.targets
        ):
            kinds |= constants(node.value)
    return kinds, actions


def test_every_notification_kind_has_words_in_the_email():
    kinds, _ = _service_literals()
    assert {"raised", "escalation", "repeated", "contacts_unreached"} <= kinds, "parsed the source"
    assert not kinds - set(KIND_WORDS), "e-mails would show the bare kind"


def test_every_timeline_action_has_a_label_in_both_languages():
    _, actions = _service_literals()
    assert {"raised", "reopened", "device_cancel"} <= actions, "parsed the source"
    source = (ROOT / "api" / "static" / "js" / "i18n.js").read_text()
    zh, _, en = source.partition("\n  en: {")
    for table in (zh, en):
        labelled = set(re.findall(r"'action\.(\w+)':", table))
        assert not actions - labelled, f"unlabelled timeline actions: {actions - labelled}"


def test_a_contacts_unreached_email_lists_the_people_to_call():
    payload = {
        "kind": "contacts_unreached",
        "alert": {"id": 5, "rule": "sos", "severity": "critical", "title": "SOS 呼救 / SOS"},
        "reason": "no platform authorised for institution 3 reaches emergency contacts",
        "notify_contacts": [{"name": "王小明", "phone": "13800000000"}],
    }
    subject, body = render(payload)
    assert subject.startswith("[eldercare] 请联系家属 call the contacts · 紧急 critical")
    zh, _, en = body.partition("—— English ——")
    assert "未能通知紧急联系人，请致电" in zh and "王小明 13800000000" in zh
    assert "Emergency contacts to call:" in en and "王小明 13800000000" in en
    assert "Reason: no platform authorised" in en
    assert "同一告警再次发生" in render({"kind": "repeated", "alert": {}})[1]


# --- 6. webhooks scoped to an institution -------------------------------------------------------


def test_a_webhook_for_one_institution_from_the_cli_receives_its_contacts(conn, circle, env, clock):
    hook = cli_json(
        "care",
        "webhook",
        "--name",
        "12349",
        "--url",
        "http://127.0.0.1:9/hook",
        "--secret",
        "s",
        "--institution",
        str(circle["centre"]),
        env=env,
    )
    try:
        assert hook["institution_id"] == circle["centre"] and "secret" not in hook
        alert = lifecycle.raise_finding(
            conn,
            resident_id=circle["resident"],
            finding=Finding(rule="sos", severity="critical", title="SOS 呼救 / SOS"),
            now=clock.now(),
        )
        escalation.run_due(conn, clock.advance(timedelta(minutes=10)))  # the contacts' tier
        rows = conn.execute(
            "SELECT payload FROM notification WHERE alert_id = %s AND recipient_kind = 'webhook' "
            "AND recipient_id = %s AND idempotency_key LIKE %s",
            (alert.id, str(hook["id"]), "%:contacts:%"),
        ).fetchall()
        assert rows and rows[0][0]["notify_contacts"][0]["phone"] == "13800000000"
        unknown = cli(
            "care",
            "webhook",
            "--name",
            "x",
            "--url",
            "http://127.0.0.1:9/",
            "--secret",
            "s",
            "--institution",
            "999999999",
            env=env,
            check=False,
        )
        assert unknown.returncode == 1 and "no institution 999999999" in unknown.stderr
    finally:
        conn.execute("UPDATE webhook_subscription SET active = false WHERE id = %s", (hook["id"],))
