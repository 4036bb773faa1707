"""Emergency events end to end: device → broker → ingest → alert engine → doctor's topic and back."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from alerts import service
from alerts.channels.mqtt import doctor_topic
from alerts.engine import AlertEngine
from alerts.settings import AlertSettings
from tests.conftest import SERVICE_PASSWORD, SERVICE_USER
from tests.support import Subscriber, new_msg_id, now_ms, wait_for


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

        service.acknowledge(
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
