"""Doctors' apps on the real broker: a login of their own that reads only their own alerts topic, and
a notification counted as delivered only when the app acknowledges it (docs/alerts.md)."""

from __future__ import annotations

import subprocess
import threading
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest

from alerts import lifecycle, outbox
from alerts.channels.mqtt import doctor_topic
from alerts.clock import ManualClock
from alerts.engine import AlertEngine
from alerts.models import Finding
from alerts.settings import AlertSettings
from care import service as care
from devices import broker_auth
from devices import service as devices
from eldercare.mqtt import accepts_login, connect_blocking, new_client
from store import db
from tests.conftest import SERVICE_PASSWORD, SERVICE_USER
from tests.support import ELDERCARE, DoctorApp, Subscriber, cli, cli_json, wait_for


@pytest.fixture()
def clock():
    return ManualClock(datetime.now(UTC))


@pytest.fixture()
def engine(settings, clock):
    instance = AlertEngine(settings, AlertSettings(), clock=clock)
    instance.connect()
    yield instance
    instance.close()


def _finding():
    return Finding(rule="spo2_low", severity="warning", title="血氧过低 / Low SpO2")


def _app_row(conn, alert_id, doctor_id):
    return conn.execute(
        "SELECT id, state, attempts, last_error, sent_at FROM notification WHERE alert_id = %s "
        "AND kind = 'raised' AND recipient_kind = 'doctor' AND recipient_id = %s "
        "AND channel = 'mqtt'",
        (alert_id, str(doctor_id)),
    ).fetchone()


def _publisher(endpoint, username, password):
    client = new_client(f"pub-{uuid.uuid4().hex[:8]}", username=username, password=password)
    connect_blocking(client, endpoint)
    return client


def _publish(client, topic, body):
    info = client.publish(topic, orjson.dumps(body), qos=1)
    info.wait_for_publish(10)


def test_a_notification_nobody_receives_is_not_marked_delivered(conn, circle, clock, engine):
    """Doctor A has no app connected (nor a login): the broker takes the publish, nobody gets it."""
    alert = lifecycle.raise_finding(
        conn, resident_id=circle["resident"], finding=_finding(), now=clock.now()
    )
    outbox.dispatch(conn, engine.fast, clock.now(), alert_id=alert.id)
    _id, state, attempts, error, sent_at = _app_row(conn, alert.id, circle["a"])
    assert state != "sent" and sent_at is None, "the broker's PUBACK is not the doctor's app"
    assert attempts == 1 and "app login" in error


def test_the_apps_acknowledgement_marks_the_notification_delivered(
    conn, circle, clock, engine, app_acks, app_login, endpoint
):
    app_acks(clock)
    username, password = app_login(circle["a"])
    alert = lifecycle.raise_finding(
        conn, resident_id=circle["resident"], finding=_finding(), now=clock.now()
    )
    # The app is not connected yet: published, not delivered; it goes out again later.
    outbox.dispatch(conn, engine.fast, clock.now(), alert_id=alert.id)
    row_id, state, attempts, error, _sent = _app_row(conn, alert.id, circle["a"])
    assert (state, attempts) == ("pending", 1) and "awaiting" in error
    app = DoctorApp(endpoint, username, password, circle["a"])
    try:
        assert outbox.dispatch(conn, engine.fast, clock.now(), alert_id=alert.id) == 0, "not yet"
        clock.advance(outbox.ACK_WAIT)
        outbox.dispatch(conn, engine.fast, clock.now(), alert_id=alert.id)
        (body,) = [b for b in app.wait(lambda m: len(m) >= 1) and app.bodies()]
        assert body["notification_id"] == row_id and body["alert"]["id"] == alert.id
        wait_for(
            lambda: _app_row(conn, alert.id, circle["a"])[1] == "sent",
            10,
            "acknowledged by the app",
        )
        _id, _state, attempts, error, sent_at = _app_row(conn, alert.id, circle["a"])
        assert attempts == 2 and error is None and sent_at == clock.now()
        # Delivered: never sent again.
        clock.advance(timedelta(minutes=10))
        outbox.dispatch(conn, engine.fast, clock.now(), alert_id=alert.id)
        assert len(app.messages) == 1
    finally:
        app.close()


def test_an_app_acknowledges_only_its_own_doctors_notifications(
    conn, circle, clock, engine, app_acks, app_login, endpoint
):
    app_acks(clock)
    user_a, password_a = app_login(circle["a"])
    user_b, password_b = app_login(circle["b"])
    alert = lifecycle.raise_finding(
        conn, resident_id=circle["resident"], finding=_finding(), now=clock.now()
    )
    outbox.dispatch(conn, engine.fast, clock.now(), alert_id=alert.id)
    mine = _app_row(conn, alert.id, circle["a"])[0]
    other = conn.execute(
        "SELECT id FROM notification WHERE alert_id = %s AND channel <> 'mqtt' LIMIT 1",
        (alert.id,),
    ).fetchone()[0]
    app_a = DoctorApp(endpoint, user_a, password_a, circle["a"], acks=False)
    app_b = DoctorApp(endpoint, user_b, password_b, circle["b"], acks=False)
    try:
        app_b.ack(mine)  # B's app, on its own acks topic, names A's notification
        app_b.ack(mine, doctor_id=circle["a"])  # on A's acks topic: refused by the broker
        app_a.ack(other)  # A's app names a row of another channel (the e-mail)
        app_a.ack("not a number")
        app_a.ack(mine + 10**9)
        # Handled in order: once the real one counts, the ones before it were looked at.
        app_a.ack(mine)
        wait_for(lambda: _app_row(conn, alert.id, circle["a"])[1] == "sent", 10, "A's own ack")
        assert conn.execute("SELECT state FROM notification WHERE id = %s", (other,)).fetchone()[
            0
        ] not in ("sent",)
    finally:
        app_a.close()
        app_b.close()


def test_a_doctors_app_login_reads_only_its_own_topic_and_writes_only_its_acks(
    conn, circle, app_login, register, endpoint
):
    a, b = circle["a"], circle["b"]
    user_a, password_a = app_login(a)
    app_login(b)
    device = register("sos_button", resident_id=circle["resident"])
    foreign = [
        doctor_topic(b),
        "eldercare/v1/doctors/+/alerts",
        device.topic("ack"),
        device.topic("status"),
        "eldercare/v1/devices/+/events",
        "eldercare/#",
    ]
    spy = DoctorApp(endpoint, user_a, password_a, a, topics=[doctor_topic(a), *foreign], acks=False)
    backend = _publisher(endpoint, SERVICE_USER, SERVICE_PASSWORD)
    watcher = Subscriber(endpoint, SERVICE_USER, SERVICE_PASSWORD, "eldercare/v1/#")
    try:
        assert spy.suback[doctor_topic(a)], "its own alerts topic"
        # Mosquitto 2.0 grants any subscription and applies the ACL to each message it would
        # deliver: what counts is that nothing but its own topic's messages arrive.
        for topic in (doctor_topic(b), device.topic("ack"), device.topic("status")):
            _publish(backend, topic, {"for": topic})
        _publish(backend, doctor_topic(a), {"marker": 1})
        spy.wait(lambda m: any(t == doctor_topic(a) for t, _p in m))
        # (Its own message comes once per matching subscription: the overlapping filters.)
        assert {t for t, _p in spy.messages} == {doctor_topic(a)}, "only its own topic"
        assert all(orjson.loads(p) == {"marker": 1} for _t, p in spy.messages)

        # Its writes: only its own acks topic (not B's, not a device's events, not its own alerts).
        for topic in (
            f"eldercare/v1/doctors/{b}/acks",
            device.topic("events"),
            doctor_topic(a),
            doctor_topic(b),
        ):
            _publish(spy.client, topic, {"msg_id": "x", "type": "sos", "notification_id": 1})
        spy.ack(12345)
        own_acks = f"eldercare/v1/doctors/{a}/acks"
        watcher.wait(lambda m: any(t == own_acks for t, _p in m))
        from_spy = [t for t, p in watcher.messages if b'"notification_id"' in p]
        assert from_spy == [own_acks]
    finally:
        for closing in (spy, watcher):
            closing.close()
        backend.disconnect()
        backend.loop_stop()


def _sync(conn, broker):
    if broker_auth.sync(conn, broker.passwd_path, broker.acl_path, None):
        broker.reload()


def test_app_logins_are_created_rotated_and_revoked_from_the_cli(
    conn, circle, env, broker, endpoint
):
    doctor = circle["b"]
    created = cli_json("care", "app-login", str(doctor), env=env)
    username, password = created["mqtt_username"], created["mqtt_password"]
    assert username == f"eldercare-doctor-{doctor}"
    assert created["alerts_topic"] == doctor_topic(doctor)
    assert created["acks_topic"] == f"eldercare/v1/doctors/{doctor}/acks"
    stored = conn.execute(
        "SELECT password_hash FROM broker_account WHERE username = %s", (username,)
    ).fetchone()[0]
    assert stored.startswith("$7$") and password not in stored, "only its hash is stored"
    _sync(conn, broker)
    wait_for(lambda: accepts_login(endpoint, username, password), 10, "the app logs in")

    again = cli("care", "app-login", str(doctor), env=env, check=False)
    assert again.returncode != 0 and "--rotate" in again.stderr, "never replaced by accident"

    rotated = cli_json("care", "app-login", str(doctor), "--rotate", env=env)
    assert rotated["mqtt_password"] != password
    _sync(conn, broker)
    wait_for(lambda: not accepts_login(endpoint, username, password), 10, "old password refused")
    assert accepts_login(endpoint, username, rotated["mqtt_password"])

    revoked = cli("care", "app-login", str(doctor), "--revoke", env=env)
    assert rotated["mqtt_password"] not in revoked.stdout + revoked.stderr
    _sync(conn, broker)
    wait_for(lambda: not accepts_login(endpoint, username, rotated["mqtt_password"]), 10, "revoked")
    missing = cli("care", "app-login", "999999999", env=env, check=False)
    assert missing.returncode != 0 and "no doctor 999999999" in missing.stderr


def test_a_doctor_who_leaves_loses_the_app_login_at_the_next_sync(
    conn, circle, app_login, broker, endpoint
):
    leaving = care.add_doctor(conn, name="离职医生", institution_id=circle["centre"])["id"]
    username, password = app_login(leaving)
    version = conn.execute("SELECT version FROM registry_change").fetchone()[0]
    conn.execute("UPDATE doctor SET active = false WHERE id = %s", (leaving,))
    # broker sync --watch follows registry changes: this one is one.
    assert conn.execute("SELECT version FROM registry_change").fetchone()[0] > version
    _sync(conn, broker)
    wait_for(lambda: not accepts_login(endpoint, username, password), 10, "login refused")
    with pytest.raises(devices.RegistryError, match="no longer active"):
        devices.create_doctor_login(conn, doctor_id=leaving, rotate=True)


def test_an_ack_that_overtakes_the_record_of_its_publish_still_counts(
    conn, circle, clock, database_url
):
    """An app answers within milliseconds, while the dispatcher that published the row may still
    hold it, not yet having recorded the publish: the ack waits for that, and counts."""
    alert = lifecycle.raise_finding(
        conn, resident_id=circle["resident"], finding=_finding(), now=clock.now()
    )
    row_id = _app_row(conn, alert.id, circle["a"])[0]
    result: list[bool] = []
    name = f"ack-{uuid.uuid4().hex[:8]}"
    with (
        db.connection(database_url, autocommit=True) as dispatcher,
        psycopg.connect(database_url, autocommit=True, application_name=name) as acks,
    ):
        waiter = threading.Thread(
            target=lambda: result.append(
                outbox.confirm(acks, doctor_id=circle["a"], notification_id=row_id, now=clock.now())
            )
        )
        with dispatcher.transaction():
            # The dispatcher's claim, then (after the publish) its record of it, not yet committed.
            dispatcher.execute(
                "SELECT 1 FROM notification WHERE id = %s FOR UPDATE SKIP LOCKED", (row_id,)
            )
            dispatcher.execute(
                "UPDATE notification SET attempts = attempts + 1 WHERE id = %s", (row_id,)
            )
            waiter.start()
            wait_for(
                lambda: conn.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE application_name = %s "
                    "AND wait_event_type = 'Lock'",
                    (name,),
                ).fetchone(),
                10,
                "the ack waiting for the dispatcher's row",
            )
        waiter.join(10)  # the dispatcher committed: the publish is recorded
    assert result == [True]
    assert _app_row(conn, alert.id, circle["a"])[1] == "sent"


@pytest.mark.parametrize(
    ("topic", "payload", "expected"),
    [
        ("eldercare/v1/doctors/7/acks", b'{"notification_id": 12}', (7, 12)),
        ("eldercare/v1/doctors/7/acks", b'{"notification_id": "12"}', "notification_id"),
        ("eldercare/v1/doctors/7/acks", b'{"notification_id": true}', "notification_id"),
        ("eldercare/v1/doctors/7/acks", b'{"notification_id": 0}', "notification_id"),
        (
            "eldercare/v1/doctors/7/acks",
            b'{"notification_id": 9223372036854775808}',
            "notification",
        ),
        ("eldercare/v1/doctors/7/acks", b"[12]", "notification_id"),
        ("eldercare/v1/doctors/7/acks", b"\xff", "not JSON"),
        ("eldercare/v1/doctors/x/acks", b'{"notification_id": 12}', "not a doctor's acks topic"),
        (
            "eldercare/v1/doctors/\u0663/acks",
            b'{"notification_id": 12}',
            "not a doctor's acks topic",
        ),
        ("eldercare/v1/doctors/7/alerts", b'{"notification_id": 12}', "not a doctor's acks topic"),
    ],
)
def test_parse_ack(topic, payload, expected):
    from alerts.app_acks import parse_ack

    result = parse_ack(topic, payload)
    if isinstance(expected, tuple):
        assert result == expected
    else:
        assert isinstance(result, str) and expected in result


def test_alerts_show_says_why_a_notification_to_the_app_is_not_delivered(
    conn, circle, clock, engine, env
):
    alert = lifecycle.raise_finding(
        conn, resident_id=circle["resident"], finding=_finding(), now=clock.now()
    )
    outbox.dispatch(conn, engine.fast, clock.now(), alert_id=alert.id)
    shown = cli_json("alerts", "show", str(alert.id), env=env)
    (app,) = [
        n
        for n in shown["notifications"]
        if n["channel"] == "mqtt" and n["recipient_id"] == str(circle["a"])
    ]
    assert app["state"] == "failed" and "no app login" in app["last_error"]


def test_the_reference_app_prints_and_acknowledges_each_notification(
    conn, circle, clock, engine, app_acks, app_login, env
):
    """`eldercare care app-listen` (the demo doctors' phones in `make run`): what it receives is
    delivered; the password comes from the environment, never the command line."""
    app_acks(clock)
    _username, password = app_login(circle["a"])
    listener = subprocess.Popen(
        [ELDERCARE, "care", "app-listen", str(circle["a"]), "--json"],
        env={**env, "ELDERCARE_APP_PASSWORD": password},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        alert = lifecycle.raise_finding(
            conn, resident_id=circle["resident"], finding=_finding(), now=clock.now()
        )

        def delivered() -> bool:
            # Published again after ACK_WAIT until acknowledged: the app may still be connecting.
            outbox.dispatch(conn, engine.fast, clock.now(), alert_id=alert.id)
            clock.advance(outbox.ACK_WAIT)
            return bool(_app_row(conn, alert.id, circle["a"])[1] == "sent")

        wait_for(delivered, 30, "delivered to the app and acknowledged by it")
        body = orjson.loads(listener.stdout.readline() if listener.stdout else "")
        assert body["alert"]["id"] == alert.id and body["kind"] == "raised"
    finally:
        listener.terminate()
        _out, err = listener.communicate(timeout=10)
    assert password not in err
    assert listener.returncode == 0, err


def test_the_reference_app_says_what_to_do_with_a_wrong_password(circle, app_login, env):
    app_login(circle["a"])
    refused = cli(
        "care",
        "app-listen",
        str(circle["a"]),
        env={**env, "ELDERCARE_APP_PASSWORD": "wrong"},
        check=False,
    )
    assert refused.returncode != 0
    assert f"eldercare care app-login {circle['a']}" in refused.stderr
