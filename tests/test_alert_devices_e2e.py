"""Device timers end to end: device → broker → ingest → database → alert engine, time moved by hand.
A device's own expected interval (overriding its kind's) decides "no data"; a Last Will that the
broker publishes after a dropped connection reaches the same rule."""

from __future__ import annotations

import uuid
from datetime import timedelta

import orjson
import pytest

from alerts.engine import AlertEngine
from alerts.settings import AlertSettings
from alerts.timers import OFFLINE_GRACE
from eldercare.mqtt import Will, connect_blocking, new_client
from tests.support import wait_for


@pytest.fixture()
def engine(settings):
    instance = AlertEngine(settings, AlertSettings())
    instance.connect()
    yield instance
    instance.close()


def _last_seen(conn, device_id):
    return conn.execute(
        "SELECT last_seen_at FROM device WHERE device_id = %s", (device_id,)
    ).fetchone()[0]


def _no_data(conn, device_id):
    return conn.execute(
        "SELECT severity, detail FROM alert WHERE rule = %s AND state <> 'resolved'",
        (f"no_data:{device_id}",),
    ).fetchone()


def test_a_devices_expected_interval_overrides_its_kinds_for_no_data(
    register, ingestor, engine, circle, conn
):
    usual = register("wristband", resident_id=circle["resident"])  # its kind: every 60 s
    sparse = register("wristband", resident_id=circle["resident"])  # set up to report every 10 min
    conn.execute(
        "UPDATE device SET expected_interval_s = 600 WHERE device_id = %s", (sparse.device_id,)
    )
    for device in (usual, sparse):
        device.telemetry({"heart_rate": 72})
    seen = max(
        wait_for(lambda d=d: _last_seen(conn, d.device_id), what="seen") for d in (usual, sparse)
    )
    # The kind allows 5 minutes (3 × 60 s, at least 5 min); the override 3 × 600 s = 30 minutes.
    engine.check_devices(conn, seen + timedelta(minutes=6))
    assert _no_data(conn, usual.device_id) is not None
    assert _no_data(conn, sparse.device_id) is None, "within its own interval"
    engine.check_devices(conn, seen + timedelta(minutes=29))
    assert _no_data(conn, sparse.device_id) is None
    engine.check_devices(conn, seen + timedelta(minutes=31))
    severity, detail = _no_data(conn, sparse.device_id)
    assert severity == "warning" and detail["offline"] is False


def test_a_last_will_after_a_dropped_connection_raises_no_data_after_the_grace(
    register, ingestor, engine, circle, conn, endpoint
):
    band = register("wristband", resident_id=circle["resident"])
    status = band.topic("status")
    client = new_client(
        f"lwt-{uuid.uuid4().hex[:6]}",
        username=band.device_id,
        password=band.password,
        will=Will(status, orjson.dumps({"online": False})),
    )
    connect_blocking(client, endpoint)
    client.publish(status, orjson.dumps({"online": True, "battery": 80}), qos=1, retain=True)
    wait_for(
        lambda: (
            conn.execute(
                "SELECT online FROM device WHERE device_id = %s", (band.device_id,)
            ).fetchone()
            == (True,)
        ),
        what="online",
    )
    seen = _last_seen(conn, band.device_id)
    # The connection drops without a DISCONNECT (battery out, out of range): the broker, not the
    # device, publishes the Last Will.
    client.loop_stop()
    client.socket().close()
    wait_for(
        lambda: (
            conn.execute(
                "SELECT online FROM device WHERE device_id = %s", (band.device_id,)
            ).fetchone()
            == (False,)
        ),
        what="the Last Will stored",
    )
    engine.check_devices(conn, seen + OFFLINE_GRACE - timedelta(seconds=10))
    assert _no_data(conn, band.device_id) is None, "a short drop is not an alert"
    engine.check_devices(conn, seen + OFFLINE_GRACE + timedelta(seconds=10))
    severity, detail = _no_data(conn, band.device_id)
    assert severity == "warning" and detail["offline"] is True
    # Well before the 5 minutes a silent but "online" device would be allowed.
    assert detail["silent_s"] < 5 * 60
