"""Routing against the database (channel preferences, no contract, partner hospital) and device
alerts (Last Will through the broker, expected-interval override, retired and unbound devices)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from alerts import escalation, lifecycle
from alerts.clock import ManualClock
from alerts.engine import AlertEngine
from alerts.models import Finding
from alerts.settings import AlertSettings
from care import service as care
from devices import service as devices
from eldercare.mqtt import Will, connect_blocking, new_client
from tests.support import wait_for


@pytest.fixture()
def clock():
    return ManualClock(datetime.now(UTC))


def _finding(severity="warning", rule="fever"):
    return Finding(rule=rule, severity=severity, title="发热 / Fever")


def _rows(conn, alert_id, kind):
    return {
        (int(r[0]), r[1])
        for r in conn.execute(
            "SELECT recipient_id, channel FROM notification WHERE alert_id = %s AND kind = %s "
            "AND recipient_kind = 'doctor'",
            (alert_id, kind),
        )
    }


def test_a_doctors_channels_per_severity_take_effect(conn, circle, clock):
    care.set_preferences(
        conn,
        doctor_id=circle["a"],
        channels={"warning": ["mqtt"], "critical": ["mqtt", "email"], "info": ["email"]},
    )
    warning = lifecycle.raise_finding(
        conn, resident_id=circle["resident"], finding=_finding(), now=clock.now()
    )
    info = lifecycle.raise_finding(
        conn,
        resident_id=circle["resident"],
        finding=_finding("info", "low_battery:x"),
        now=clock.now(),
    )
    critical = lifecycle.raise_finding(
        conn, resident_id=circle["resident"], finding=_finding("critical", "sos"), now=clock.now()
    )
    a = circle["a"]
    assert _rows(conn, warning.id, "raised") == {(a, "mqtt")}
    assert _rows(conn, info.id, "raised") == {(a, "email")}
    assert {c for d, c in _rows(conn, critical.id, "raised") if d == a} == {"mqtt", "email"}


def _institution(conn, kind):
    return care.add_institution(conn, name=f"{kind} {uuid.uuid4().hex[:6]}", kind=kind)


def test_without_a_contract_the_duty_desk_takes_the_doctors_place(conn, clock):
    centre = _institution(conn, "community_health_centre")
    resident = devices.add_resident(conn, name="无签约老人")
    care.set_resident_institution(conn, resident_id=resident.id, institution_id=centre["id"])
    alert = lifecycle.raise_finding(
        conn, resident_id=resident.id, finding=_finding(), now=clock.now()
    )
    assert {d for d, _ in _rows(conn, alert.id, "raised")} == {centre["duty_desk_id"]}


def test_a_care_homes_partner_hospital_is_the_second_critical_tier(conn, clock):
    home = _institution(conn, "care_home")
    hospital = _institution(conn, "partner_hospital")
    care.add_agreement(conn, care_home_id=home["id"], medical_institution_id=hospital["id"])
    doctor = care.add_doctor(conn, name="养老院医生", institution_id=home["id"])
    resident = devices.add_resident(conn, name="养老院老人")
    care.set_resident_institution(conn, resident_id=resident.id, institution_id=home["id"])
    care.add_contract(
        conn,
        resident_id=resident.id,
        doctor_id=doctor["id"],
        valid_from=clock.now() - timedelta(days=1),
    )
    alert = lifecycle.raise_finding(
        conn, resident_id=resident.id, finding=_finding("critical", "sos"), now=clock.now()
    )
    assert {d for d, _ in _rows(conn, alert.id, "raised")} == {doctor["id"], home["duty_desk_id"]}
    escalation.run_due(conn, clock.advance(timedelta(minutes=5)))
    assert {d for d, _ in _rows(conn, alert.id, "escalation")} == {hospital["duty_desk_id"]}


@pytest.fixture()
def engine(settings, clock):
    return AlertEngine(settings, AlertSettings(), clock=clock)


def _no_data(conn, device_id):
    return conn.execute(
        "SELECT id, state, detail, resolution_note FROM alert WHERE rule = %s ORDER BY id DESC",
        (f"no_data:{device_id}",),
    ).fetchone()


def test_a_last_will_through_the_broker_raises_no_data_after_its_grace(
    register, ingestor, circle, conn, endpoint, engine, clock
):
    band = register("wristband", resident_id=circle["resident"])
    will = Will(band.topic("status"), orjson.dumps({"online": False}))
    client = new_client(f"{band.device_id}-will", username=band.device_id, password=band.password)
    client.will_set(will.topic, will.payload, qos=1, retain=True)
    connect_blocking(client, endpoint)
    band.publish("status", {"online": True, "battery": 80})
    wait_for(
        lambda: conn.execute(
            "SELECT online FROM device WHERE device_id = %s", (band.device_id,)
        ).fetchone()[0],
        what="online",
    )
    client.socket().close()  # the connection drops without a DISCONNECT: the broker sends the will
    try:
        wait_for(
            lambda: conn.execute(
                "SELECT online IS FALSE FROM device WHERE device_id = %s", (band.device_id,)
            ).fetchone()[0],
            what="the Last Will stored",
        )
    finally:
        client.loop_stop()
    heard = conn.execute(
        "SELECT last_seen_at FROM device WHERE device_id = %s", (band.device_id,)
    ).fetchone()[0]
    engine.check_devices(conn, heard + timedelta(minutes=1, seconds=59))
    assert _no_data(conn, band.device_id) is None, "a 2-minute grace for a reconnect"
    engine.check_devices(conn, heard + timedelta(minutes=2))
    _id, state, detail, _note = _no_data(conn, band.device_id)
    assert state == "open" and detail["offline"] is True


def test_an_expected_interval_override_sets_the_silence_allowed(register, circle, conn, engine):
    cuff = register("wristband", resident_id=circle["resident"])
    conn.execute(
        "UPDATE device SET expected_interval_s = 3600, last_seen_at = now() WHERE device_id = %s",
        (cuff.device_id,),
    )
    heard = conn.execute(
        "SELECT last_seen_at FROM device WHERE device_id = %s", (cuff.device_id,)
    ).fetchone()[0]
    engine.check_devices(conn, heard + timedelta(minutes=30))
    assert _no_data(conn, cuff.device_id) is None, "not after a wristband's 5 minutes"
    engine.check_devices(conn, heard + timedelta(hours=3))
    assert _no_data(conn, cuff.device_id)[1] == "open", "after three missed hourly reports"


@pytest.mark.parametrize(
    ("leave", "note"),
    [
        (devices.retire, "device retired: it no longer reports for this resident"),
        (devices.unbind, "device unbound from this resident"),
    ],
)
def test_a_silent_device_taken_out_of_service_resolves_its_alert_honestly(
    leave, note, register, circle, conn, engine
):
    band = register("wristband", resident_id=circle["resident"])
    later = datetime.now(UTC) + timedelta(minutes=10)
    engine.check_devices(conn, later)
    assert _no_data(conn, band.device_id)[1] == "open"
    leave(conn, device_id=band.device_id)
    engine.check_devices(conn, later + timedelta(seconds=30))
    _id, state, _detail, resolution = _no_data(conn, band.device_id)
    assert state == "resolved" and resolution == note
