"""End to end through the real broker: stored readings, quarantine reasons, ACLs, emergency events."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime

import orjson

from eldercare.mqtt import Will, connect_blocking, new_client
from tests.conftest import SERVICE_PASSWORD, SERVICE_USER
from tests.support import Subscriber, cli_json, mosquitto_pub, new_msg_id, now_ms, wait_for


def _readings(conn, resident_id):
    return conn.execute(
        "SELECT metric, value, device_id, resident_id FROM reading WHERE resident_id = %s ORDER BY metric",
        (resident_id,),
    ).fetchall()


def _quarantine(conn, device_id):
    return conn.execute(
        "SELECT reason, detail, payload FROM quarantine WHERE device_id = %s OR topic LIKE %s ORDER BY id",
        (device_id, f"%/{device_id}/%"),
    ).fetchall()


def test_mosquitto_pub_reading_is_stored_and_listed(register, ingestor, endpoint, env, conn):
    device = register("wristband")
    payload = json.dumps(
        {
            "msg_id": "m-1",
            "ts": datetime.now(UTC).isoformat(),
            "readings": {"heart_rate": 71, "spo2": 97},
        }
    ).encode()
    result = mosquitto_pub(
        endpoint, device.device_id, device.password, device.topic("telemetry"), payload
    )
    assert result.returncode == 0, result.stderr
    wait_for(lambda: len(_readings(conn, device.resident_id)) == 2, what="two readings stored")
    rows = cli_json("readings", "--resident", str(device.resident_id), "--since", "10m", env=env)
    assert {(r["metric"], r["value"]) for r in rows} == {("heart_rate", 71.0), ("spo2", 97.0)}
    assert all(r["device_id"] == device.device_id for r in rows)


def test_backlog_array_and_resent_message_are_stored_once(register, ingestor, conn):
    device = register("spo2_clip")
    start = now_ms() - 30 * 60_000
    backlog = [
        {"msg_id": f"b{i}", "ts": start + i * 60_000, "readings": {"spo2": 95 + i % 3}}
        for i in range(20)
    ]
    device.publish("telemetry", backlog)
    device.publish("telemetry", backlog[:5])  # the device re-sends part of it
    device.publish(
        "telemetry", {"msg_id": "other-id", "ts": start, "readings": {"spo2": 95}}
    )  # same time
    marker = device.telemetry({"heart_rate": 60})
    wait_for(
        lambda: conn.execute("SELECT 1 FROM reading WHERE msg_id = %s", (marker,)).fetchone(),
        what="marker",
    )
    count = conn.execute(
        "SELECT count(*) FROM reading WHERE device_id = %s AND metric = 'spo2'", (device.device_id,)
    ).fetchone()[0]
    assert count == 20


BAD_CORPUS = [
    ("invalid_json", b'{"msg_id": "x", "ts": '),
    ("invalid_structure", b'{"msg_id": "x", "ts": NOW, "readings": {"heart_rate": "fast"}}'),
    ("invalid_structure", b'"just a string"'),
    ("non_finite", b'{"msg_id": "x", "ts": NOW, "readings": {"heart_rate": NaN}}'),
    ("non_finite", b'{"msg_id": "x", "ts": NOW, "readings": {"spo2": Infinity}}'),
    ("unknown_metric", b'{"msg_id": "x", "ts": NOW, "readings": {"mood": 3}}'),
    ("out_of_range", b'{"msg_id": "x", "ts": NOW, "readings": {"spo2": 140}}'),
    ("future_timestamp", b'{"msg_id": "x", "ts": FUTURE, "readings": {"spo2": 97}}'),
    ("too_old", b'{"msg_id": "x", "ts": "2001-01-01T00:00:00Z", "readings": {"spo2": 97}}'),
    ("bad_timestamp", b'{"msg_id": "x", "ts": "2026-01-01 10:00", "readings": {"spo2": 97}}'),
    (
        "device_mismatch",
        b'{"device_id": "someone-else", "msg_id": "x", "ts": NOW, "readings": {"spo2": 97}}',
    ),
    (
        "invalid_utf8",
        b'{"msg_id": "x", "ts": NOW, "readings": {"heart_rate": 70}, "note": "\xff\xfe"}',
    ),
    ("invalid_json", b"[" * 5000),  # deeper than any parser's recursion: must not kill ingest
]


def test_bad_messages_are_quarantined_with_reasons_and_good_ones_stored(register, ingestor, conn):
    device = register("wristband")
    now = now_ms()
    expected = []
    for index, (reason, template) in enumerate(BAD_CORPUS):
        payload = template.replace(b"NOW", str(now).encode()).replace(
            b"FUTURE", str(now + 3_600_000).encode()
        )
        device.publish("telemetry", payload, raw=True)
        device.telemetry(
            {"heart_rate": 60 + index}, ts=now - index
        )  # a valid one after each bad one
        expected.append((reason, payload))
    wait_for(
        lambda: len(_quarantine(conn, device.device_id)) >= len(BAD_CORPUS), what="all quarantined"
    )
    wait_for(
        lambda: len(_readings(conn, device.resident_id)) == len(BAD_CORPUS), what="valid readings"
    )
    assert all(c.connection.connected.is_set() for c in ingestor.consumers), "it keeps running"
    rows = _quarantine(conn, device.device_id)
    assert [(r[0], bytes(r[2])) for r in rows] == expected
    assert all(r[1] for r in rows), "every rejection says why"


def test_unknown_retired_and_unbound_devices_are_quarantined(
    register, ingestor, endpoint, conn, env
):
    stranger = mosquitto_pub(
        endpoint,
        SERVICE_USER,
        SERVICE_PASSWORD,
        "eldercare/v1/devices/ghost-1/telemetry",
        orjson.dumps({"msg_id": "g", "ts": now_ms(), "readings": {"spo2": 97}}),
    )
    assert stranger.returncode == 0
    unbound = register("wristband", bound=False)
    unbound.telemetry({"heart_rate": 70})
    retired = register("wristband")
    cli_json("devices", "retire", retired.device_id, env=env)
    retired.telemetry({"heart_rate": 70})  # still connected: the broker keeps the old session
    wait_for(lambda: _quarantine(conn, "ghost-1"), what="ghost quarantined")
    wait_for(lambda: _quarantine(conn, unbound.device_id), what="unbound quarantined")
    wait_for(lambda: _quarantine(conn, retired.device_id), what="retired quarantined")
    assert _quarantine(conn, "ghost-1")[0][0] == "unknown_device"
    assert _quarantine(conn, unbound.device_id)[0][0] == "unbound_device"
    assert _quarantine(conn, retired.device_id)[0][0] == "retired_device"
    listed = cli_json("quarantine", "list", "--reason", "unknown_device", env=env)
    assert any(r["topic"] == "eldercare/v1/devices/ghost-1/telemetry" for r in listed)


def test_oversized_payload_is_refused_by_the_broker(register, ingestor, endpoint, conn):
    device = register("wristband")
    big = b'{"msg_id": "big", "ts": 1, "readings": {}, "pad": "' + b"x" * 70_000 + b'"}'
    result = mosquitto_pub(
        endpoint, device.device_id, device.password, device.topic("telemetry"), big
    )
    # MQTT 5: the broker answers the PUBLISH with reason code 0x95, which the sender reports.
    assert b"Publish 1 failed: Packet too large" in result.stderr, result.stderr
    device.telemetry({"heart_rate": 66})  # the connection and the device still work
    wait_for(lambda: _readings(conn, device.resident_id), what="the next reading")
    assert _quarantine(conn, device.device_id) == [], "the broker refused it before ingest saw it"


def test_a_device_cannot_publish_into_another_devices_topics(register, endpoint, conn, ingestor):
    alice, bob = register("wristband"), register("wristband")
    attempts = {
        "telemetry": {"msg_id": "evil", "ts": now_ms(), "readings": {"heart_rate": 180}},
        "events": {"msg_id": "evil", "type": "sos"},
        "status": {"online": False, "battery": 1},
    }
    for channel, body in attempts.items():
        result = mosquitto_pub(
            endpoint, alice.device_id, alice.password, bob.topic(channel), orjson.dumps(body)
        )
        assert b"Publish 1 failed: Not authorized" in result.stderr, (channel, result.stderr)
    alice.telemetry({"heart_rate": 64})
    wait_for(lambda: _readings(conn, alice.resident_id), what="alice's own reading")
    assert _readings(conn, bob.resident_id) == []
    assert conn.execute(
        "SELECT count(*) FROM device_event WHERE device_id = %s", (bob.device_id,)
    ).fetchone() == (0,)
    assert conn.execute(
        "SELECT count(*) FROM device_presence WHERE device_id = %s", (bob.device_id,)
    ).fetchone() == (0,)


def test_a_device_cannot_read_another_devices_acks(register, endpoint):
    alice, bob = register("sos_button"), register("sos_button")
    spy = Subscriber(endpoint, alice.device_id, alice.password, bob.topic("ack"))
    spy.client.subscribe("eldercare/v1/devices/+/ack", qos=1)
    spy.client.subscribe(alice.topic("ack"), qos=1)
    backend = new_client(
        f"svc-{new_msg_id()[:8]}", username=SERVICE_USER, password=SERVICE_PASSWORD
    )
    connect_blocking(backend, endpoint)
    try:
        # Mosquitto grants the subscriptions but checks every delivery against the ACL. In order,
        # from one publisher: once Alice has her own ack, Bob's would have reached her before.
        for topic, body in (
            (bob.topic("ack"), b'{"for": "bob"}'),
            (alice.topic("ack"), b'{"for": "alice"}'),
        ):
            backend.publish(topic, body, qos=1).wait_for_publish(10)
        messages = spy.wait(lambda m: any(p == b'{"for": "alice"}' for _, p in m))
        assert {p for _, p in messages} == {b'{"for": "alice"}'}
    finally:
        spy.close()
        backend.disconnect()
        backend.loop_stop()


def test_wrong_password_is_refused(register, endpoint):
    device = register("wristband")
    result = mosquitto_pub(endpoint, device.device_id, "wrong", device.topic("telemetry"), b"{}")
    assert result.returncode != 0


def test_sos_is_stored_at_once_and_the_device_gets_an_ack(register, ingestor, endpoint, conn):
    device = register("sos_button")
    acks = Subscriber(endpoint, device.device_id, device.password, device.topic("ack"))
    try:
        msg_id = new_msg_id()
        device.publish(
            "events",
            {
                "msg_id": msg_id,
                "ts": now_ms(),
                "type": "sos",
                "location": {"lat": 31.2, "lon": 121.5},
            },
        )
        messages = acks.wait(lambda m: len(m) >= 1)
        ack = orjson.loads(messages[0][1])
        assert ack["msg_id"] == msg_id and ack["type"] == "sos" and ack["status"] == "received"
        row = conn.execute(
            "SELECT type, resident_id, lat FROM device_event WHERE msg_id = %s", (msg_id,)
        ).fetchone()
        assert row == ("sos", device.resident_id, 31.2)
    finally:
        acks.close()


def test_status_and_last_will_update_presence(register, ingestor, conn):
    device = register("wristband")
    device.publish("status", {"online": True, "battery": 64, "firmware": "1.2.3"}, retain=True)
    wait_for(
        lambda: (
            conn.execute(
                "SELECT online, battery, firmware FROM device WHERE device_id = %s",
                (device.device_id,),
            ).fetchone()
            == (True, 64, "1.2.3")
        ),
        what="online",
    )
    device.publish("status", {"online": False}, retain=True)
    wait_for(
        lambda: (
            conn.execute(
                "SELECT online FROM device WHERE device_id = %s", (device.device_id,)
            ).fetchone()
            == (False,)
        ),
        what="offline",
    )
    assert (
        conn.execute(
            "SELECT count(*) FROM device_presence WHERE device_id = %s", (device.device_id,)
        ).fetchone()[0]
        == 2
    )


def _online(conn, device_id):
    return conn.execute("SELECT online FROM device WHERE device_id = %s", (device_id,)).fetchone()[
        0
    ]


def test_a_dropped_connection_fires_the_last_will_and_the_device_shows_offline(
    register, ingestor, conn
):
    device = register("wristband")
    status = device.topic("status")
    client = new_client(
        f"will-{device.device_id}",
        username=device.device_id,
        password=device.password,
        will=Will(status, b'{"online": false}'),
    )
    connect_blocking(client, device.endpoint)
    try:
        client.publish(status, b'{"online": true, "battery": 80}', qos=1, retain=True)
        wait_for(lambda: _online(conn, device.device_id) is True, what="online")
        # The device loses power: no DISCONNECT, the TCP connection just ends.
        client.loop_stop()
        sock = client.socket()
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        wait_for(lambda: _online(conn, device.device_id) is False, what="offline by the will")
        history = conn.execute(
            "SELECT online FROM device_presence WHERE device_id = %s ORDER BY reported_at",
            (device.device_id,),
        ).fetchall()
        assert history == [(True,), (False,)]
    finally:
        client.loop_stop()


def test_qos0_messages_are_stored_too(register, ingestor, endpoint, conn):
    """QoS 0 has no PUBACK and no redelivery, but what reaches the ingestor is stored (docs/mqtt.md)."""
    wristband, button = register("wristband"), register("sos_button")
    acks = Subscriber(endpoint, button.device_id, button.password, button.topic("ack"))
    try:
        reading, sos = new_msg_id(), new_msg_id()
        body = {"msg_id": reading, "ts": now_ms(), "readings": {"heart_rate": 72, "spo2": 97}}
        wristband.client().publish(wristband.topic("telemetry"), orjson.dumps(body), qos=0)
        button.client().publish(
            button.topic("events"), orjson.dumps({"msg_id": sos, "type": "sos"}), qos=0
        )
        wait_for(lambda: len(_readings(conn, wristband.resident_id)) == 2, what="qos 0 readings")
        try:
            ack = orjson.loads(acks.wait(lambda m: len(m) >= 1)[0][1])
        except AssertionError as exc:
            # Say where it stopped: never stored (lost before ingest), or stored but not acked.
            stored = conn.execute(
                "SELECT msg_id, received_at FROM device_event WHERE device_id = %s",
                (button.device_id,),
            ).fetchall()
            raise AssertionError(f"{exc}; events stored for the button: {stored}") from None
        assert (ack["msg_id"], ack["status"]) == (sos, "received")
        # The QoS 0 messages did not disturb the QoS 1 acknowledgements around them.
        marker = wristband.telemetry({"heart_rate": 75})
        wait_for(
            lambda: conn.execute("SELECT 1 FROM reading WHERE msg_id = %s", (marker,)).fetchone(),
            what="the next qos 1 reading",
        )
        assert _quarantine(conn, wristband.device_id) == []
    finally:
        acks.close()
