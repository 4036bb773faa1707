"""Routing against the real database: who gets an alert, on which channel, from the care circle as
stored (contracts, institutions, cooperation agreements, doctors' channel preferences), and the
notifications reaching real receivers (the broker, aiosmtpd)."""

from __future__ import annotations

import email
import email.policy
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiosmtpd.controller import Controller

from alerts import escalation, lifecycle, outbox
from alerts.clock import ManualClock
from alerts.engine import AlertEngine
from alerts.models import Finding
from alerts.settings import AlertSettings
from care import service as care
from devices import service as devices
from eldercare.ports import free_port
from tests.support import DoctorApp, MailInbox, wait_for

CRITICAL_TIERS = [
    {"after_s": 0, "notify": ["contracted_doctor", "duty_desk"]},
    {"after_s": 300, "notify": ["team", "partner_duty_desk"]},
]


def _finding(rule: str = "fever", severity: str = "warning") -> Finding:
    return Finding(rule=rule, severity=severity, title=f"{rule} / {rule}")  # type: ignore[arg-type]


def _to(conn, alert_id: int, kind: str) -> set[tuple[int, str]]:
    """(doctor or desk id, channel) of the alert's notifications of this kind."""
    rows = conn.execute(
        "SELECT recipient_id, channel FROM notification WHERE alert_id = %s AND kind = %s "
        "AND recipient_kind = 'doctor'",
        (alert_id, kind),
    ).fetchall()
    return {(int(r[0]), r[1]) for r in rows}


def _ids(pairs: set[tuple[int, str]], channel: str = "mqtt") -> set[int]:
    return {who for who, ch in pairs if ch == channel}


@pytest.fixture()
def tag() -> str:
    return uuid.uuid4().hex[:6]


def test_without_a_contract_the_institutions_duty_desk_takes_the_doctors_place(conn, tag):
    centre = care.add_institution(conn, name=f"中心 {tag}", kind="community_health_centre")
    care.set_policy(
        conn,
        institution_id=centre["id"],
        severity="warning",
        tiers=[{"after_s": 0, "notify": ["contracted_doctor"]}],
        reminder_every_s=None,
    )
    resident = devices.add_resident(conn, name="未签约老人").id
    care.set_resident_institution(conn, resident_id=resident, institution_id=centre["id"])
    now = datetime.now(UTC)
    alert = lifecycle.raise_finding(conn, resident_id=resident, now=now, finding=_finding())
    assert _ids(_to(conn, alert.id, "raised")) == {centre["duty_desk_id"]}

    # An expired contract is no contract either.
    doctor = care.add_doctor(conn, name="前任医生", institution_id=centre["id"])
    care.add_contract(
        conn,
        resident_id=resident,
        doctor_id=doctor["id"],
        valid_from=now - timedelta(days=60),
        valid_to=now - timedelta(days=1),
    )
    second = lifecycle.raise_finding(
        conn, resident_id=resident, now=now, finding=_finding("glucose_low")
    )
    assert _ids(_to(conn, second.id, "raised")) == {centre["duty_desk_id"]}


def test_without_contract_or_institution_the_default_duty_desk_is_told(conn):
    default_desk = conn.execute(
        "SELECT d.id FROM doctor d JOIN institution i ON i.id = d.institution_id "
        "WHERE d.role = 'duty_desk' AND i.kind = 'duty_desk' AND d.active ORDER BY d.id LIMIT 1"
    ).fetchone()[0]
    resident = devices.add_resident(conn, name="无人照看").id
    alert = lifecycle.raise_finding(
        conn, resident_id=resident, now=datetime.now(UTC), finding=_finding()
    )
    assert _ids(_to(conn, alert.id, "raised")) == {default_desk}


def _care_home(conn, tag: str, name: str) -> dict[str, Any]:
    home = care.add_institution(conn, name=f"{name} {tag}", kind="care_home")
    care.set_policy(
        conn,
        institution_id=home["id"],
        severity="critical",
        tiers=CRITICAL_TIERS,
        reminder_every_s=None,
    )
    return home


def test_a_care_homes_partner_hospital_desk_is_the_second_tier(conn, tag):
    centre = care.add_institution(conn, name=f"中心 {tag}", kind="community_health_centre")
    doctor = care.add_doctor(conn, name="王医生", institution_id=centre["id"], team=f"t-{tag}")
    colleague = care.add_doctor(conn, name="赵医生", institution_id=centre["id"], team=f"t-{tag}")
    hospital = care.add_institution(conn, name=f"合作医院 {tag}", kind="partner_hospital")
    homes = {
        "agreed": _care_home(conn, tag, "养老院甲"),
        "none": _care_home(conn, tag, "养老院乙"),
        "expired": _care_home(conn, tag, "养老院丙"),
    }
    care.add_agreement(
        conn, care_home_id=homes["agreed"]["id"], medical_institution_id=hospital["id"]
    )
    old = care.add_agreement(
        conn, care_home_id=homes["expired"]["id"], medical_institution_id=hospital["id"]
    )
    conn.execute(
        "UPDATE cooperation_agreement SET valid_from = now() - interval '2 years', "
        "valid_to = now() - interval '1 day' WHERE id = %s",
        (old["id"],),
    )
    clock = ManualClock(datetime.now(UTC))
    alerts = {}
    for key, home in homes.items():
        resident = devices.add_resident(conn, name=f"住户 {key}").id
        care.set_resident_institution(conn, resident_id=resident, institution_id=home["id"])
        care.add_contract(
            conn,
            resident_id=resident,
            doctor_id=doctor["id"],
            valid_from=clock.now() - timedelta(days=30),
        )
        alerts[key] = lifecycle.raise_finding(
            conn, resident_id=resident, now=clock.now(), finding=_finding("sos", "critical")
        )
    for key, home in homes.items():
        # Tier 0: the contracted doctor and the care home's own desk, never the partner yet.
        assert _ids(_to(conn, alerts[key].id, "raised")) == {doctor["id"], home["duty_desk_id"]}

    escalation.run_due(conn, clock.advance(timedelta(seconds=299)))
    assert all(not _to(conn, a.id, "escalation") for a in alerts.values()), "not before 5 min"
    escalation.run_due(conn, clock.advance(timedelta(seconds=2)))
    partner_desk = hospital["duty_desk_id"]
    assert _ids(_to(conn, alerts["agreed"].id, "escalation")) == {colleague["id"], partner_desk}
    assert _ids(_to(conn, alerts["none"].id, "escalation")) == {colleague["id"]}
    assert _ids(_to(conn, alerts["expired"].id, "escalation")) == {colleague["id"]}


def _alert_of(envelope: Any) -> int:
    """The alert id from the mail's idempotency key (a<alert>:…)."""
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    return int(str(message["X-Eldercare-Idempotency-Key"]).split(":")[0][1:])


def test_per_severity_channel_preferences_decide_what_reaches_the_app_and_the_mailbox(
    conn, tag, settings, endpoint, app_login, app_acks
):
    centre = care.add_institution(conn, name=f"中心 {tag}", kind="community_health_centre")
    address = f"doctor-{tag}@example.org"
    doctor = care.add_doctor(conn, name="孙医生", institution_id=centre["id"], email=address)
    care.set_preferences(
        conn,
        doctor_id=doctor["id"],
        channels={"critical": ["mqtt", "email"], "warning": ["mqtt"], "info": ["email"]},
    )
    resident = devices.add_resident(conn, name="偏好测试").id
    care.set_resident_institution(conn, resident_id=resident, institution_id=centre["id"])
    now = datetime.now(UTC)
    care.add_contract(
        conn, resident_id=resident, doctor_id=doctor["id"], valid_from=now - timedelta(days=1)
    )
    alerts = {
        severity: lifecycle.raise_finding(
            conn, resident_id=resident, now=now, finding=_finding(rule, severity)
        )
        for rule, severity in (("sos", "critical"), ("fever", "warning"), ("low_battery", "info"))
    }
    mine = {
        s: {ch for who, ch in _to(conn, a.id, "raised") if who == doctor["id"]}
        for s, a in alerts.items()
    }
    assert mine == {"critical": {"mqtt", "email"}, "warning": {"mqtt"}, "info": {"email"}}

    inbox = MailInbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    app_acks()
    # The doctor's app, with its own login, acknowledging what it receives.
    app = DoctorApp(endpoint, *app_login(doctor["id"]), doctor["id"])
    engine = AlertEngine(settings, AlertSettings(smtp_host="127.0.0.1", smtp_port=port))
    engine.connect()
    try:
        channels = {**engine.fast, **engine.slow}
        for alert in alerts.values():
            outbox.dispatch(conn, channels, now, alert_id=alert.id)
        app.wait(lambda m: len(m) >= 2)
        on_app = {orjson.loads(p)["alert"]["id"] for _t, p in app.messages}
        assert on_app == {alerts["critical"].id, alerts["warning"].id}
        mails = wait_for(lambda: len(inbox.to(address)) >= 2 and inbox.to(address), 10, "mail")
        assert {_alert_of(m) for m in mails} == {alerts["critical"].id, alerts["info"].id}

        def states():
            return conn.execute(
                "SELECT DISTINCT state FROM notification WHERE recipient_kind = 'doctor' "
                "AND recipient_id = %s",
                (str(doctor["id"]),),
            ).fetchall()

        wait_for(lambda: states() == [("sent",)], 10, "all delivered (the app's acknowledged)")
    finally:
        app.close()
        engine.close()
        controller.stop()
