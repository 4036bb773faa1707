"""Scenario tests: the simulator's episodes, published through the real broker with the devices'
credentials, stored by the ingestor, judged by the alert engine. Right alert, severity, recipient and
channel; nothing for a single noisy sample or for back-filled old data; "no data" that repeats."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from alerts import escalation
from alerts.channels.mqtt import doctor_topic
from alerts.clock import ManualClock
from alerts.engine import AlertEngine
from alerts.settings import AlertSettings
from devices.simulator.episodes import ScheduledEpisode, timeline
from devices.simulator.vitals import baseline
from tests.conftest import SERVICE_PASSWORD, SERVICE_USER
from tests.support import Subscriber, wait_for, wait_telemetry_stored

INTERVAL = timedelta(seconds=10)


def _play(
    device, kind, episode, *, starts_before, length=timedelta(minutes=15), until=None, seed=7
):
    """Publish a device's timeline (with one episode) ending now; returns the number of messages."""
    now = until or datetime.now(UTC)
    start = now - length
    scheduled = [ScheduledEpisode(episode, now - starts_before)] if episode else []
    messages = timeline(
        baseline(random.Random(seed)), kind, start, length, INTERVAL, scheduled, random.Random(seed)
    )
    for message in messages:
        device.publish(message.channel, message.payload)
    return messages


@pytest.fixture()
def engine(settings):
    instance = AlertEngine(settings, AlertSettings(), clock=ManualClock(datetime.now(UTC)))
    instance.connect()
    yield instance
    instance.close()


def _judge(engine, conn, resident_id):
    engine.clock = ManualClock(datetime.now(UTC))
    return {
        f.rule: f.severity for f in engine.evaluate_resident(conn, resident_id, engine.clock.now())
    }


def _recipients(conn, resident_id, rule):
    alert_id = conn.execute(
        "SELECT id FROM alert WHERE resident_id = %s AND rule = %s AND state <> 'resolved'",
        (resident_id, rule),
    ).fetchone()[0]
    return {
        (r[0], int(r[1]), r[2])
        for r in conn.execute(
            "SELECT recipient_kind, recipient_id, channel FROM notification WHERE alert_id = %s AND kind = 'raised' "
            "AND recipient_kind = 'doctor'",
            (alert_id,),
        )
    }


@pytest.mark.parametrize(
    ("episode", "kind", "starts_before", "expected"),
    [
        (
            "hypoxia",
            "wristband",
            timedelta(minutes=2, seconds=30),
            {"spo2_low": "critical", "news2": None},
        ),
        ("fever", "thermometer", timedelta(minutes=10), {"fever": None}),
        (
            "hypertensive_crisis",
            "bp_cuff",
            timedelta(minutes=5),
            {"hypertensive_crisis": "critical"},
        ),
        (
            "tachycardia",
            "wristband",
            timedelta(minutes=12),
            {"heart_rate_high": None, "news2": None},
        ),
        ("noisy_sample", "wristband", timedelta(minutes=3), {}),
        ("offline_backlog", "wristband", timedelta(minutes=8), {}),
        (None, "wristband", timedelta(0), {}),
    ],
)
def test_episode_raises_the_right_alert_for_the_contracted_doctor(
    episode, kind, starts_before, expected, register, ingestor, engine, circle, conn
):
    device = register(kind, resident_id=circle["resident"])
    messages = _play(device, kind, episode, starts_before=starts_before)
    wait_telemetry_stored(
        conn, device.device_id, sum(1 for m in messages if m.channel == "telemetry")
    )
    found = _judge(engine, conn, circle["resident"])
    assert set(found) == set(expected)
    for rule, severity in expected.items():
        if severity is not None:
            assert found[rule] == severity
        else:  # severity depends on the level reached (e.g. ≥ 39.5 °C is critical)
            assert found[rule] in ("warning", "critical")
        assert ("doctor", circle["a"], "mqtt") in _recipients(conn, circle["resident"], rule)


def test_back_filled_hypoxia_from_hours_ago_raises_nothing(
    register, ingestor, engine, circle, conn
):
    device = register("wristband", resident_id=circle["resident"])
    # Three hours of data with hypoxia two and a half hours ago, all uploaded only now.
    now = datetime.now(UTC)
    start = now - timedelta(hours=3)
    scheduled = [ScheduledEpisode("hypoxia", now - timedelta(hours=2, minutes=30))]
    messages = timeline(
        baseline(random.Random(3)),
        "wristband",
        start,
        timedelta(hours=3),
        timedelta(seconds=30),
        scheduled,
        random.Random(3),
    )
    objects = [m.payload for m in messages if m.channel == "telemetry"]
    for i in range(0, len(objects), 100):
        device.publish("telemetry", objects[i : i + 100])
    wait_for(
        lambda: (
            conn.execute(
                "SELECT count(*) FROM telemetry_message WHERE device_id = %s", (device.device_id,)
            ).fetchone()[0]
            >= len(objects)
        ),
        what="backlog stored",
    )
    assert (
        conn.execute(
            "SELECT min(value) FROM reading WHERE device_id = %s AND metric = 'spo2'",
            (device.device_id,),
        ).fetchone()[0]
        <= 90
    )
    assert _judge(engine, conn, circle["resident"]) == {}


def test_no_data_fires_for_a_device_that_goes_silent_forever_and_repeats(
    register, ingestor, engine, circle, conn
):
    device = register("wristband", resident_id=circle["resident"])
    _play(
        device,
        "wristband",
        "device_silent",
        starts_before=timedelta(minutes=1),
        length=timedelta(minutes=2),
    )
    wait_for(
        lambda: conn.execute(
            "SELECT last_seen_at FROM device WHERE device_id = %s", (device.device_id,)
        ).fetchone()[0],
        what="device seen",
    )
    rule = f"no_data:{device.device_id}"
    clock = ManualClock(datetime.now(UTC))
    engine.check_devices(conn, clock.advance(timedelta(minutes=4)))
    assert conn.execute("SELECT 1 FROM alert WHERE rule = %s", (rule,)).fetchone() is None, (
        "not yet: 5 minutes allowed"
    )
    engine.check_devices(conn, clock.advance(timedelta(minutes=2)))
    alert_id, severity = conn.execute(
        "SELECT id, severity FROM alert WHERE rule = %s AND state = 'open'", (rule,)
    ).fetchone()
    assert severity == "warning"
    for expected in (1, 2, 3):  # the warning policy reminds every 15 minutes until acknowledged
        now = clock.advance(timedelta(minutes=15))
        engine.check_devices(conn, now)
        escalation.run_due(conn, now)
        reminders = conn.execute(
            "SELECT count(DISTINCT idempotency_key) FROM notification WHERE alert_id = %s AND kind = 'reminder' "
            "AND recipient_id = %s AND channel = 'mqtt'",
            (alert_id, str(circle["a"])),
        ).fetchone()[0]
        assert reminders == expected
    assert conn.execute("SELECT occurrences > 1 FROM alert WHERE id = %s", (alert_id,)).fetchone()[
        0
    ]


def test_the_engine_itself_picks_the_residents_with_new_readings(
    register, ingestor, engine, circle, conn
):
    hypoxic = register("wristband", resident_id=circle["resident"])
    well = register("wristband")  # another resident, nothing wrong
    for device, episode in ((hypoxic, "hypoxia"), (well, None)):
        messages = _play(
            device, "wristband", episode, starts_before=timedelta(minutes=2, seconds=30)
        )
        wait_telemetry_stored(
            conn, device.device_id, sum(1 for m in messages if m.channel == "telemetry")
        )
    now = datetime.now(UTC)
    engine.clock = ManualClock(now)
    engine.evaluate_readings(conn, now)  # no resident named: its own selection

    def rules(resident_id):
        return {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT rule, severity FROM alert WHERE resident_id = %s AND state <> 'resolved'",
                (resident_id,),
            )
        }

    assert rules(circle["resident"]).get("spo2_low") == "critical"
    assert rules(well.resident_id) == {}


@pytest.fixture()
def live_engine(settings):
    """The engine running for real (its own threads and clock), short fall window."""
    instance = AlertEngine(settings, AlertSettings(tick_s=0.2, fall_cancel_window_s=2))
    instance.connect()
    instance.start()
    yield instance
    instance.close()


def _bodies(messages):
    return [orjson.loads(payload) for _topic, payload in messages]


@pytest.mark.parametrize(("episode", "kind"), [("sos", "sos_button"), ("fall", "fall_detector")])
def test_emergency_episodes_reach_the_doctor_and_the_device_hears_it(
    episode, kind, register, ingestor, live_engine, circle, conn, endpoint
):
    device = register(kind, resident_id=circle["resident"])
    acks = Subscriber(endpoint, device.device_id, device.password, device.topic("ack"))
    doctor = Subscriber(endpoint, SERVICE_USER, SERVICE_PASSWORD, doctor_topic(circle["a"]))
    try:
        _play(
            device, kind, episode, starts_before=timedelta(seconds=5), length=timedelta(minutes=1)
        )
        doctor.wait(
            lambda m: any(
                b["kind"] == "raised" and b["alert"]["rule"] == episode for b in _bodies(m)
            ),
            15,
        )
        raised = next(b for b in _bodies(doctor.messages) if b["alert"]["rule"] == episode)
        assert raised["alert"]["severity"] == "critical"
        assert raised["alert"]["resident"]["id"] == circle["resident"]
        acks.wait(lambda m: any(b.get("status") == "doctor_notified" for b in _bodies(m)))
        assert ("doctor", circle["desk"], "mqtt") in _recipients(conn, circle["resident"], episode)
    finally:
        acks.close()
        doctor.close()


def test_an_sos_pressed_by_mistake_and_cancelled_resolves_with_a_note(
    register, ingestor, live_engine, circle, conn
):
    button = register("sos_button", resident_id=circle["resident"])
    _play(
        button,
        "sos_button",
        "sos_cancelled",
        starts_before=timedelta(minutes=1),
        length=timedelta(minutes=2),
    )
    (note,) = wait_for(
        lambda: conn.execute(
            "SELECT resolution_note FROM alert WHERE resident_id = %s AND rule = 'sos' "
            "AND state = 'resolved'",
            (circle["resident"],),
        ).fetchone(),
        what="the SOS resolved by its cancel",
    )
    assert note == "cancelled on the device (sos_cancel)"
