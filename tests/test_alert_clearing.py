"""Automatic resolution: only fresh readings that no longer meet the condition clear an alert;
readings that stop (a sensor off the finger, a wristband taken off) leave it open."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from alerts.clearing import CONTINUOUS, clearing_evidence
from alerts.engine import AlertEngine
from alerts.settings import AlertSettings

EVERY = timedelta(seconds=10)


@pytest.fixture()
def engine(settings):
    return AlertEngine(settings, AlertSettings())


@pytest.fixture()
def wristband(register, circle):
    return register("wristband", resident_id=circle["resident"])


def _readings(conn, resident_id, device_id, start, end, values):
    """One reading per metric every 10 s in [start, end)."""
    rows = []
    at = start
    while at < end:
        for metric, value in values.items():
            rows.append((resident_id, at, value, at, metric, f"m-{uuid.uuid4().hex}", device_id))
        at += EVERY
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO reading (resident_id, measured_at, value, received_at, metric, msg_id, "
            "device_id) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            rows,
        )


def _spo2_alert(conn, resident_id):
    return conn.execute(
        "SELECT id, state, cleared_since, resolution_note, resolved_at FROM alert "
        "WHERE resident_id = %s AND rule = 'spo2_low' ORDER BY id DESC LIMIT 1",
        (resident_id,),
    ).fetchone()


def _hypoxia(conn, engine, circle, device_id, t0):
    """Two minutes of SpO2 88 %: a critical spo2_low alert at t0 + 2 min."""
    _readings(
        conn,
        circle["resident"],
        device_id,
        t0,
        t0 + timedelta(minutes=2),
        {"spo2": 88, "heart_rate": 80},
    )
    found = engine.evaluate_resident(conn, circle["resident"], t0 + timedelta(minutes=2))
    assert ("spo2_low", "critical") in {(f.rule, f.severity) for f in found}


def _minutes(conn, engine, circle, device_id, start, minutes, values):
    """Readings minute by minute, the engine evaluating after each minute."""
    for m in range(minutes):
        begin = start + timedelta(minutes=m)
        if values:
            _readings(
                conn, circle["resident"], device_id, begin, begin + timedelta(minutes=1), values
            )
        engine.evaluate_resident(conn, circle["resident"], begin + timedelta(minutes=1))


def test_an_alert_whose_readings_stopped_stays_open(conn, engine, circle, wristband):
    t0 = datetime.now(UTC) - timedelta(hours=1)
    _hypoxia(conn, engine, circle, wristband.device_id, t0)
    # The SpO2 sensor lost contact; the heart rate keeps coming.
    _minutes(
        conn, engine, circle, wristband.device_id, t0 + timedelta(minutes=2), 40, {"heart_rate": 80}
    )
    _id, state, cleared_since, _note, _at = _spo2_alert(conn, circle["resident"])
    assert state == "open" and cleared_since is None, "no SpO2 is not a normal SpO2"


def test_a_cleared_alert_resolves_after_its_clear_period_with_a_note(
    conn, engine, circle, wristband
):
    t0 = datetime.now(UTC) - timedelta(hours=1)
    _hypoxia(conn, engine, circle, wristband.device_id, t0)
    recovered = t0 + timedelta(minutes=2)
    _minutes(
        conn, engine, circle, wristband.device_id, recovered, 9, {"spo2": 97, "heart_rate": 75}
    )
    assert _spo2_alert(conn, circle["resident"])[1] == "open", "not clear for 10 minutes yet"
    _minutes(
        conn,
        engine,
        circle,
        wristband.device_id,
        recovered + timedelta(minutes=9),
        3,
        {"spo2": 97, "heart_rate": 75},
    )
    _id, state, _since, note, resolved_at = _spo2_alert(conn, circle["resident"])
    assert state == "resolved"
    assert resolved_at - recovered <= timedelta(minutes=12)
    assert "condition cleared for 0:10:00" in note and "spo2" in note


def test_a_clear_period_interrupted_by_missing_readings_starts_again(
    conn, engine, circle, wristband
):
    t0 = datetime.now(UTC) - timedelta(hours=1)
    _hypoxia(conn, engine, circle, wristband.device_id, t0)
    recovered = t0 + timedelta(minutes=2)
    _minutes(conn, engine, circle, wristband.device_id, recovered, 5, {"spo2": 97})
    assert _spo2_alert(conn, circle["resident"])[2] is not None, "clearing"
    # Nothing at all for 20 minutes: the evidence is gone, the clear period with it.
    _minutes(conn, engine, circle, wristband.device_id, recovered + timedelta(minutes=5), 20, {})
    assert _spo2_alert(conn, circle["resident"])[1:3] == ("open", None)
    back = recovered + timedelta(minutes=25)
    _minutes(conn, engine, circle, wristband.device_id, back, 2, {"spo2": 97})
    assert _spo2_alert(conn, circle["resident"])[1] == "open", "ten fresh minutes needed again"


NOW = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)


def test_evidence_is_a_fresh_reading_of_the_rules_own_metric_after_it_last_fired():
    fired = NOW - timedelta(minutes=3)
    ten = timedelta(minutes=10)
    fresh = {"spo2": NOW - timedelta(seconds=10)}
    assert clearing_evidence("spo2_low", fresh, fired, NOW, ten) == ("spo2", fresh["spo2"])
    assert clearing_evidence("spo2_low", {"heart_rate": NOW}, fired, NOW, ten) is None
    assert clearing_evidence("spo2_low", {"spo2": fired - EVERY}, fired, NOW, ten) is None
    stale = {"spo2": NOW - CONTINUOUS - EVERY}
    assert clearing_evidence("spo2_low", stale, stale["spo2"] - EVERY, NOW, ten) is None
    # A cuff reading taken when the crisis ended carries it through its clear period.
    cuff = {"systolic_bp": NOW - ten}
    assert clearing_evidence("hypertensive_crisis", cuff, NOW - ten - EVERY, NOW, ten)
    assert clearing_evidence("some_new_rule", fresh, fired, NOW, ten) is None, "a person resolves"
