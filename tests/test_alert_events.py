"""Emergency events end to end: device → broker → ingest → alert engine → doctor's topic and back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from alerts import escalation, lifecycle, transitions
from alerts.channels.mqtt import doctor_topic
from alerts.clock import ManualClock
from alerts.engine import AlertEngine
from alerts.settings import AlertSettings
from tests.conftest import SERVICE_PASSWORD, SERVICE_USER
from tests.support import DoctorApp, Subscriber, new_msg_id, now_ms, wait_for


@pytest.fixture()
def engine(settings):
    instance = AlertEngine(settings, AlertSettings(tick_s=0.2, fall_cancel_window_s=2))
    instance.connect()
    instance.start()
    yield instance
    instance.close()


def _bodies_of(messages):
    return [orjson.loads(payload) for _topic, payload in messages]


def _bodies(subscriber):
    return _bodies_of(subscriber.messages)


def test_sos_reaches_the_doctor_and_the_device_hears_help_is_coming(
    register, ingestor, engine, circle, endpoint, conn
):
    button = register("sos_button", resident_id=circle["resident"])
    doctor = Subscriber(endpoint, SERVICE_USER, SERVICE_PASSWORD, doctor_topic(circle["a"]))
    desk = Subscriber(endpoint, SERVICE_USER, SERVICE_PASSWORD, doctor_topic(circle["desk"]))
    device = Subscriber(endpoint, button.device_id, button.password, button.topic("ack"))
    try:
        button.publish("events", {"msg_id": new_msg_id(), "ts": now_ms(), "type": "sos"})
        # Other alerts (the button's own "no data" since yesterday) may come too: look for the SOS.
        doctor.wait(lambda m: any(b["alert"]["rule"] == "sos" for b in _bodies_of(m)))
        desk.wait(lambda m: any(b["alert"]["rule"] == "sos" for b in _bodies_of(m)))
        raised = next(b for b in _bodies(doctor) if b["alert"]["rule"] == "sos")
        assert raised["kind"] == "raised" and raised["alert"]["rule"] == "sos"
        assert (
            raised["alert"]["severity"] == "critical"
            and raised["alert"]["resident"]["id"] == circle["resident"]
        )
        device.wait(
            lambda m: any(
                b.get("status") == "doctor_notified" for b in map(orjson.loads, (p for _, p in m))
            )
        )

        lifecycle.acknowledge(
            conn, raised["alert"]["id"], actor=f"doctor:{circle['a']}", now=datetime.now(UTC)
        )
        device.wait(
            lambda m: any(
                b.get("status") == "help_coming" for b in map(orjson.loads, (p for _, p in m))
            )
        )
        statuses = [b.get("status") for b in _bodies(device)]
        assert statuses[0] == "received", "the ingestor's receipt comes first"
        assert statuses.count("help_coming") == 1
    finally:
        for sub in (doctor, desk, device):
            sub.close()


def test_a_cancelled_fall_and_a_cancelled_sos_resolve_with_a_note(
    register, ingestor, engine, circle, conn
):
    detector = register("fall_detector", resident_id=circle["resident"])
    detector.publish("events", {"msg_id": new_msg_id(), "ts": now_ms(), "type": "fall"})
    wait_for(
        lambda: conn.execute(
            "SELECT 1 FROM alert WHERE resident_id = %s AND rule = 'fall'", (circle["resident"],)
        ).fetchone(),
        what="fall alert",
    )
    detector.publish("events", {"msg_id": new_msg_id(), "ts": now_ms(), "type": "fall_cancel"})
    row = wait_for(
        lambda: conn.execute(
            "SELECT state, resolution_note FROM alert WHERE resident_id = %s AND rule = 'fall' AND state = 'resolved'",
            (circle["resident"],),
        ).fetchone(),
        what="fall resolved",
    )
    assert "cancelled on the device" in row[1]
    fall_id = conn.execute(
        "SELECT id FROM alert WHERE resident_id = %s AND rule = 'fall'", (circle["resident"],)
    ).fetchone()[0]
    sent = conn.execute(
        "SELECT count(*) FROM notification WHERE alert_id = %s AND kind = 'raised'", (fall_id,)
    ).fetchone()[0]
    assert sent == 0, "cancelled within its window: nobody was alarmed"

    button = register("sos_button", resident_id=circle["resident"])
    button.publish("events", {"msg_id": new_msg_id(), "ts": now_ms(), "type": "sos"})
    wait_for(
        lambda: conn.execute(
            "SELECT 1 FROM alert WHERE resident_id = %s AND rule = 'sos'", (circle["resident"],)
        ).fetchone(),
        what="sos alert",
    )
    button.publish("events", {"msg_id": new_msg_id(), "ts": now_ms(), "type": "sos_cancel"})
    row = wait_for(
        lambda: conn.execute(
            "SELECT resolution_note FROM alert WHERE resident_id = %s AND rule = 'sos' AND state = 'resolved'",
            (circle["resident"],),
        ).fetchone(),
        what="sos resolved",
    )
    assert "sos_cancel" in row[0]
    assert (
        conn.execute(
            "SELECT count(*) FROM device_event WHERE device_id = %s", (button.device_id,)
        ).fetchone()[0]
        == 2
    ), "never deleted"


def test_an_uncancelled_fall_becomes_critical_after_its_window(
    register, ingestor, engine, circle, conn
):
    detector = register("fall_detector", resident_id=circle["resident"])
    detector.publish("events", {"msg_id": new_msg_id(), "ts": now_ms(), "type": "fall"})
    row = wait_for(
        lambda: conn.execute(
            "SELECT id, state FROM alert WHERE resident_id = %s AND rule = 'fall' AND state = 'open'",
            (circle["resident"],),
        ).fetchone(),
        15,
        "fall alert opened after the cancel window",
    )
    wait_for(
        lambda: conn.execute(
            "SELECT 1 FROM notification WHERE alert_id = %s AND kind = 'raised' AND state = 'sent'",
            (row[0],),
        ).fetchone(),
        what="sent",
    )


# --- life cycle of events, time moved by hand --------------------------------------------------


@pytest.fixture()
def clock():
    return ManualClock(datetime.now(UTC))


@pytest.fixture()
def hand_engine(settings, clock):
    """The engine's event handling with a hand-moved clock (not started: no threads)."""
    return AlertEngine(settings, AlertSettings(fall_cancel_window_s=30), clock=clock)


def _event(conn, device, kind, occurred_at, received_at=None):
    return conn.execute(
        "INSERT INTO device_event (device_id, msg_id, type, occurred_at, received_at, resident_id, "
        "payload) VALUES (%s, %s, %s, %s, %s, %s, '{}') RETURNING id",
        (
            device.device_id,
            new_msg_id(),
            kind,
            occurred_at,
            received_at or occurred_at,
            device.resident_id,
        ),
    ).fetchone()[0]


def _rows(conn, alert_id, kind=None):
    return conn.execute(
        "SELECT kind, recipient_kind, recipient_id, channel, payload FROM notification "
        "WHERE alert_id = %s AND (%s::text IS NULL OR kind = %s) ORDER BY id",
        (alert_id, kind, kind),
    ).fetchall()


def _doctor_ids(rows):
    return sorted({int(r[2]) for r in rows if r[1] == "doctor"})


def _device_statuses(conn, alert_id, device_id):
    return [
        r[4]["status"] for r in _rows(conn, alert_id) if r[3] == "device_ack" and r[2] == device_id
    ]


def test_a_late_sos_is_shown_to_a_doctor_but_not_treated_as_a_live_emergency(
    register, circle, conn, hand_engine, clock
):
    button = register("sos_button", resident_id=circle["resident"])
    now = clock.now()
    alert_id = hand_engine.handle_event(
        conn, _event(conn, button, "sos", now - timedelta(days=2), received_at=now)
    )
    alert = transitions.get_alert(conn, alert_id)
    assert alert.state == "open" and alert.severity == "critical"
    assert alert.detail["late"] is True and alert.detail["late_by_s"] >= 2 * 86400
    assert "reported late" in alert.title and "2 d" in alert.title
    # A doctor must see it: the first tier at once, reminders until acknowledged ...
    assert _doctor_ids(_rows(conn, alert_id, "raised")) == sorted([circle["a"], circle["desk"]])
    assert _device_statuses(conn, alert_id, button.device_id) == [], "no 'doctor_notified'"
    escalation.run_due(conn, clock.advance(timedelta(minutes=11)))
    assert _doctor_ids(_rows(conn, alert_id, "reminder"))
    # ... but it is history: no team, no family called about it.
    assert _rows(conn, alert_id, "escalation") == []


def test_an_sos_from_minutes_ago_is_a_live_emergency(register, circle, conn, hand_engine, clock):
    button = register("sos_button", resident_id=circle["resident"])
    now = clock.now()
    alert_id = hand_engine.handle_event(
        conn, _event(conn, button, "sos", now - timedelta(minutes=3), received_at=now)
    )
    alert = transitions.get_alert(conn, alert_id)
    assert "late" not in alert.detail and "late" not in alert.title
    assert _device_statuses(conn, alert_id, button.device_id) == ["doctor_notified"]
    escalation.run_due(conn, clock.advance(timedelta(minutes=5)))
    assert _doctor_ids(_rows(conn, alert_id, "escalation")) == [circle["b"]]


def test_a_live_sos_on_an_alert_that_only_held_a_late_one_escalates_in_full(
    register, circle, conn, hand_engine, clock
):
    button = register("sos_button", resident_id=circle["resident"])
    now = clock.now()
    late_id = hand_engine.handle_event(
        conn, _event(conn, button, "sos", now - timedelta(days=1), received_at=now)
    )
    pressed = clock.advance(timedelta(minutes=1))
    live_id = hand_engine.handle_event(conn, _event(conn, button, "sos", pressed))
    assert live_id == late_id
    alert = transitions.get_alert(conn, live_id)
    assert not alert.late and "reported late" not in alert.title
    assert _device_statuses(conn, live_id, button.device_id) == ["doctor_notified"]
    assert _doctor_ids(_rows(conn, live_id, "repeated")) == sorted([circle["a"], circle["desk"]])
    escalation.run_due(conn, pressed + timedelta(minutes=5))
    assert _doctor_ids(_rows(conn, live_id, "escalation")) == [circle["b"]]


def test_a_new_sos_press_on_an_acknowledged_alert_reopens_it_and_tells_everyone(
    register, circle, conn, hand_engine, clock
):
    button = register("sos_button", resident_id=circle["resident"])
    first = hand_engine.handle_event(conn, _event(conn, button, "sos", clock.now()))
    lifecycle.acknowledge(conn, first, actor=f"doctor:{circle['a']}", now=clock.now())
    pressed = clock.advance(timedelta(hours=2))
    again = hand_engine.handle_event(conn, _event(conn, button, "sos", pressed))
    assert again == first
    alert = transitions.get_alert(conn, again)
    assert alert.state == "open" and alert.occurrences == 2
    assert _doctor_ids(_rows(conn, again, "repeated")) == sorted([circle["a"], circle["desk"]])
    assert _device_statuses(conn, again, button.device_id) == [
        "doctor_notified",
        "help_coming",
        "doctor_notified",
    ]
    # Nobody acknowledges the new press: reminders, then the team 5 minutes after it.
    escalation.run_due(conn, pressed + timedelta(minutes=5))
    assert _doctor_ids(_rows(conn, again, "reminder"))
    assert _doctor_ids(_rows(conn, again, "escalation")) == [circle["b"]]


def test_a_new_sos_press_on_an_open_alert_renotifies_without_delaying_escalation(
    register, circle, conn, hand_engine, clock
):
    button = register("sos_button", resident_id=circle["resident"])
    pressed = clock.now()
    first = hand_engine.handle_event(conn, _event(conn, button, "sos", pressed))
    again = hand_engine.handle_event(
        conn, _event(conn, button, "sos", clock.advance(timedelta(minutes=2)))
    )
    assert again == first
    assert _doctor_ids(_rows(conn, first, "repeated")) == sorted([circle["a"], circle["desk"]])
    assert _device_statuses(conn, first, button.device_id) == ["doctor_notified"] * 2
    assert transitions.get_alert(conn, first).next_tier_at == pressed + timedelta(minutes=5)


def test_sos_from_two_unbound_devices_are_two_alerts(register, conn, hand_engine, clock):
    one, two = register("sos_button", bound=False), register("sos_button", bound=False)
    a = hand_engine.handle_event(conn, _event(conn, one, "sos", clock.now()))
    b = hand_engine.handle_event(conn, _event(conn, two, "sos", clock.now()))
    assert a != b
    for alert_id, device in ((a, one), (b, two)):
        assert transitions.get_alert(conn, alert_id).device_id == device.device_id
        assert _device_statuses(conn, alert_id, device.device_id) == ["doctor_notified"]
        assert _doctor_ids(_rows(conn, alert_id, "raised")), "the default duty desk"
    again = hand_engine.handle_event(conn, _event(conn, one, "sos", clock.now()))
    assert again == a, "the same unbound device again: the same alert"


def test_a_fall_waits_out_its_cancel_window_before_anybody_is_alarmed(
    register, circle, conn, hand_engine, clock
):
    detector = register("fall_detector", resident_id=circle["resident"])
    fell = clock.now()
    alert_id = hand_engine.handle_event(conn, _event(conn, detector, "fall", fell))
    assert transitions.get_alert(conn, alert_id).state == "pending"
    escalation.run_due(conn, fell + timedelta(seconds=29))
    assert transitions.get_alert(conn, alert_id).state == "pending"
    assert _rows(conn, alert_id) == [], "nobody alarmed inside the window"
    escalation.run_due(conn, fell + timedelta(seconds=30))
    assert transitions.get_alert(conn, alert_id).state == "open"
    assert _doctor_ids(_rows(conn, alert_id, "raised")) == sorted([circle["a"], circle["desk"]])


def test_a_fall_cancelled_after_its_window_is_only_a_note(
    register, circle, conn, hand_engine, clock
):
    detector = register("fall_detector", resident_id=circle["resident"])
    fell = clock.now()
    alert_id = hand_engine.handle_event(conn, _event(conn, detector, "fall", fell))
    escalation.run_due(conn, clock.advance(timedelta(minutes=3)))
    assert hand_engine.handle_event(conn, _event(conn, detector, "fall_cancel", clock.now())) == (
        alert_id
    )
    alert = transitions.get_alert(conn, alert_id)
    assert alert.state == "open", "people were alarmed: a person must check and resolve it"
    note = conn.execute(
        "SELECT note FROM alert_transition WHERE alert_id = %s AND action = 'device_cancel'",
        (alert_id,),
    ).fetchone()[0]
    assert "fall_cancel" in note and "a person must check" in note


def test_a_backlog_fall_and_its_prompt_cancel_alarm_nobody(
    register, circle, conn, hand_engine, clock
):
    detector = register("fall_detector", resident_id=circle["resident"])
    now = clock.now()
    fell = now - timedelta(hours=3)  # both sent in one burst when the device is back
    alert_id = hand_engine.handle_event(conn, _event(conn, detector, "fall", fell, now))
    hand_engine.handle_event(
        conn, _event(conn, detector, "fall_cancel", fell + timedelta(seconds=10), now)
    )
    assert transitions.get_alert(conn, alert_id).state == "resolved"
    assert _rows(conn, alert_id) == []


def test_a_late_sos_through_the_broker_is_stored_and_shown_without_doctor_notified(
    register, ingestor, engine, circle, endpoint, conn, app_login
):
    button = register("sos_button", resident_id=circle["resident"])
    device = Subscriber(endpoint, button.device_id, button.password, button.topic("ack"))
    # The doctor's app: "told" is its acknowledgement of the notification (docs/alerts.md).
    app = DoctorApp(endpoint, *app_login(circle["a"]), circle["a"])
    try:
        # Pressed 20 hours ago (the button is worn since yesterday), sent only now.
        pressed = now_ms() - 20 * 3600 * 1000
        button.publish("events", {"msg_id": new_msg_id(), "ts": pressed, "type": "sos"})
        alert_id = wait_for(
            lambda: conn.execute(
                "SELECT id FROM alert WHERE resident_id = %s AND rule = 'sos'",
                (circle["resident"],),
            ).fetchone(),
            what="late SOS alert",
        )[0]
        wait_for(
            lambda: conn.execute(
                "SELECT 1 FROM notification WHERE alert_id = %s AND kind = 'raised' "
                "AND recipient_id = %s AND channel = 'mqtt' AND state = 'sent'",
                (alert_id, str(circle["a"])),
            ).fetchone(),
            what="the doctor told",
        )
        assert transitions.get_alert(conn, alert_id).detail["late"] is True
        # The ingestor's receipt may still be on its way: await it, then look at everything heard.
        device.wait(lambda m: "received" in [b.get("status") for b in _bodies_of(m)])
        statuses = [b.get("status") for b in _bodies(device)]
        assert "doctor_notified" not in statuses
        assert _device_statuses(conn, alert_id, button.device_id) == []
    finally:
        device.close()
        app.close()


# --- cancels: only the device that raised it, not older than the latest press, never after a person
# took the alert on (docs/alerts.md) --------------------------------------------------------------


def _device_cancel_notes(conn, alert_id):
    return [
        r[0]
        for r in conn.execute(
            "SELECT note FROM alert_transition WHERE alert_id = %s AND action = 'device_cancel' "
            "ORDER BY id",
            (alert_id,),
        )
    ]


def test_an_sos_cancel_from_the_same_device_before_anybody_acknowledged_resolves_it(
    register, circle, conn, hand_engine, clock
):
    button = register("sos_button", resident_id=circle["resident"])
    pressed = clock.now()
    alert_id = hand_engine.handle_event(conn, _event(conn, button, "sos", pressed))
    cancelled = clock.advance(timedelta(seconds=20))
    assert hand_engine.handle_event(conn, _event(conn, button, "sos_cancel", cancelled)) == alert_id
    alert = transitions.get_alert(conn, alert_id)
    assert alert.state == "resolved" and alert.resolved_by == f"device:{button.device_id}"
    assert alert.resolution_note == "cancelled on the device (sos_cancel)"
    # Everyone alarmed hears that it is over.
    assert _doctor_ids(_rows(conn, alert_id, "resolved")) == sorted([circle["a"], circle["desk"]])


def test_an_sos_cancel_from_another_device_of_the_resident_leaves_the_sos_open(
    register, circle, conn, hand_engine, clock
):
    button = register("sos_button", resident_id=circle["resident"])
    other = register("sos_button", resident_id=circle["resident"])
    alert_id = hand_engine.handle_event(conn, _event(conn, button, "sos", clock.now()))
    cancelled = clock.advance(timedelta(seconds=20))
    assert hand_engine.handle_event(conn, _event(conn, other, "sos_cancel", cancelled)) == alert_id
    assert transitions.get_alert(conn, alert_id).state == "open"
    (note,) = _device_cancel_notes(conn, alert_id)
    assert other.device_id in note and button.device_id in note and "a person must" in note


def test_a_cancel_does_not_close_a_press_of_another_device_on_the_same_alert(
    register, circle, conn, hand_engine, clock
):
    bedroom = register("sos_button", resident_id=circle["resident"])
    bathroom = register("sos_button", resident_id=circle["resident"])
    alert_id = hand_engine.handle_event(conn, _event(conn, bedroom, "sos", clock.now()))
    again = hand_engine.handle_event(
        conn, _event(conn, bathroom, "sos", clock.advance(timedelta(seconds=30)))
    )
    assert again == alert_id
    cancelled = clock.advance(timedelta(seconds=10))
    hand_engine.handle_event(conn, _event(conn, bedroom, "sos_cancel", cancelled))
    assert transitions.get_alert(conn, alert_id).state == "open", "the bathroom press still stands"
    (note,) = _device_cancel_notes(conn, alert_id)
    assert bathroom.device_id in note


def test_an_sos_cancel_older_than_the_latest_press_leaves_the_sos_open(
    register, circle, conn, hand_engine, clock
):
    button = register("sos_button", resident_id=circle["resident"])
    first = clock.now()
    alert_id = hand_engine.handle_event(conn, _event(conn, button, "sos", first))
    latest = clock.advance(timedelta(minutes=2))
    hand_engine.handle_event(conn, _event(conn, button, "sos", latest))
    # The cancel of the first press, stamped before the second one, arrives only now (a backlog).
    stale = first + timedelta(seconds=30)
    hand_engine.handle_event(conn, _event(conn, button, "sos_cancel", stale, received_at=latest))
    assert transitions.get_alert(conn, alert_id).state == "open"
    # A day-old cancel from the backlog of a device that was out of reach, likewise.
    day_old = latest - timedelta(days=1)
    hand_engine.handle_event(conn, _event(conn, button, "sos_cancel", day_old, received_at=latest))
    assert transitions.get_alert(conn, alert_id).state == "open"
    notes = _device_cancel_notes(conn, alert_id)
    assert len(notes) == 2 and all("older than the latest sos" in n for n in notes)


def test_an_sos_cancel_after_a_person_acknowledged_only_adds_a_note(
    register, circle, conn, hand_engine, clock
):
    button = register("sos_button", resident_id=circle["resident"])
    alert_id = hand_engine.handle_event(conn, _event(conn, button, "sos", clock.now()))
    lifecycle.acknowledge(
        conn, alert_id, actor=f"doctor:{circle['a']}", now=clock.advance(timedelta(seconds=30))
    )
    cancelled = clock.advance(timedelta(seconds=30))
    assert hand_engine.handle_event(conn, _event(conn, button, "sos_cancel", cancelled)) == alert_id
    alert = transitions.get_alert(conn, alert_id)
    assert alert.state == "acknowledged" and alert.resolved_at is None
    (note,) = _device_cancel_notes(conn, alert_id)
    assert "sos_cancel" in note and "acknowledged" in note and "a person must" in note
    assert _rows(conn, alert_id, "resolved") == [], "nobody is told it is over"


def test_a_cancel_after_an_acknowledgement_counts_as_a_note_even_once_a_new_press_reopened_it(
    register, circle, conn, hand_engine, clock
):
    button = register("sos_button", resident_id=circle["resident"])
    alert_id = hand_engine.handle_event(conn, _event(conn, button, "sos", clock.now()))
    lifecycle.acknowledge(conn, alert_id, actor=f"doctor:{circle['a']}", now=clock.now())
    hand_engine.handle_event(conn, _event(conn, button, "sos", clock.advance(timedelta(minutes=1))))
    assert transitions.get_alert(conn, alert_id).state == "open", "reopened by the new press"
    cancelled = clock.advance(timedelta(seconds=10))
    hand_engine.handle_event(conn, _event(conn, button, "sos_cancel", cancelled))
    assert transitions.get_alert(conn, alert_id).state == "open", (
        "a person took it on: a person ends it"
    )


def test_a_fall_cancel_from_another_device_does_not_cancel_the_fall(
    register, circle, conn, hand_engine, clock
):
    detector = register("fall_detector", resident_id=circle["resident"])
    other = register("fall_detector", resident_id=circle["resident"])
    fell = clock.now()
    alert_id = hand_engine.handle_event(conn, _event(conn, detector, "fall", fell))
    hand_engine.handle_event(
        conn, _event(conn, other, "fall_cancel", clock.advance(timedelta(seconds=5)))
    )
    assert transitions.get_alert(conn, alert_id).state == "pending"
    escalation.run_due(conn, fell + timedelta(seconds=30))
    assert transitions.get_alert(conn, alert_id).state == "open", "alarmed when its window ends"
    assert _doctor_ids(_rows(conn, alert_id, "raised")) == sorted([circle["a"], circle["desk"]])


def test_a_fall_cancel_stamped_before_the_fall_does_not_cancel_it(
    register, circle, conn, hand_engine, clock
):
    detector = register("fall_detector", resident_id=circle["resident"])
    fell = clock.now()
    alert_id = hand_engine.handle_event(conn, _event(conn, detector, "fall", fell))
    # A cancel of an earlier fall, from the device's backlog, arriving inside this fall's window.
    earlier = fell - timedelta(minutes=10)
    hand_engine.handle_event(
        conn,
        _event(conn, detector, "fall_cancel", earlier, received_at=fell + timedelta(seconds=5)),
    )
    assert transitions.get_alert(conn, alert_id).state == "pending"
    (note,) = _device_cancel_notes(conn, alert_id)
    assert "older than the latest fall" in note
