"""At-least-once delivery with idempotent storage: kill -9 mid-stream, and shared-subscription scale-out."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from eldercare.mqtt import connect_blocking, new_client
from tests.support import Device, IngestProcess, wait_for


def _publish_many(
    device: Device, count: int, start: datetime, prefix: str, rate: float | None = None
) -> None:
    """QoS 1 telemetry, as fast as the broker takes it or paced at `rate` messages/s; returns when
    every PUBACK arrived."""
    client = new_client(
        f"pub-{device.device_id}", username=device.device_id, password=device.password
    )
    client.max_inflight_messages_set(500)
    connect_blocking(client, device.endpoint)
    try:
        infos = []
        began = time.monotonic()
        for i in range(count):
            if rate and i % 50 == 0:
                # Paced, so that the publishing is still going on when the test kills the ingestor.
                ahead = began + i / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            ts = start + timedelta(milliseconds=100 * i)
            payload = {
                "msg_id": f"{prefix}{i}",
                "ts": int(ts.timestamp() * 1000),
                "readings": {"heart_rate": 60 + i % 40},
            }
            infos.append(client.publish(device.topic("telemetry"), orjson.dumps(payload), qos=1))
        for info in infos:
            info.wait_for_publish(60)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def _stored(conn, device_ids) -> int:
    return conn.execute(
        "SELECT count(*) FROM reading WHERE device_id = ANY(%s)", (device_ids,)
    ).fetchone()[0]


@pytest.mark.timeout(240)
def test_kill_9_twice_while_publishing_loses_and_doubles_nothing(register, env, conn, tmp_path):
    devices = [register("wristband") for _ in range(4)]
    ids = [d.device_id for d in devices]
    per_device = 6_000
    total = per_device * len(devices)
    ingest = IngestProcess(env, "crash", tmp_path / "ingest.log").start()
    ingest.wait_subscribed()
    start = datetime.now(UTC) - timedelta(hours=1)
    # 4 × 750 messages/s for 8 s: both crashes (after about 1.3 s and 4 s) come mid-stream.
    publishers = [
        threading.Thread(target=_publish_many, args=(d, per_device, start, "m", 750))
        for d in devices
    ]
    for thread in publishers:
        thread.start()
    try:
        for round_, threshold in enumerate((total // 6, total // 2), start=1):
            wait_for(lambda t=threshold: _stored(conn, ids) >= t, 60, f"{threshold} stored")
            ingest.kill()
            assert any(t.is_alive() for t in publishers), "the crash must come while publishing"
            assert _stored(conn, ids) < total, "the crash must come while messages are in flight"
            ingest.start()
            ingest.wait_subscribed(times=round_ + 1)
        for thread in publishers:
            thread.join(120)
        wait_for(lambda: _stored(conn, ids) >= total, 90, "everything stored")
        assert _stored(conn, ids) == total
        messages = conn.execute(
            "SELECT count(*) FROM telemetry_message WHERE device_id = ANY(%s)", (ids,)
        ).fetchone()[0]
        assert messages == total
    finally:
        ingest.stop()


def _stored_by(log_text: str) -> int:
    match = re.search(r"telemetry: stored (\d+) messages", log_text)
    assert match, log_text[-2000:]
    return int(match.group(1))


@pytest.mark.timeout(180)
def test_two_ingestors_on_a_shared_subscription_store_everything_once(
    register, env, conn, tmp_path
):
    devices = [register("wristband") for _ in range(4)]
    ids = [d.device_id for d in devices]
    per_device = 2_500
    total = per_device * len(devices)
    first = IngestProcess(env, "share-a", tmp_path / "a.log").start()
    second = IngestProcess(env, "share-b", tmp_path / "b.log").start()
    try:
        first.wait_subscribed()
        second.wait_subscribed()
        start = datetime.now(UTC) - timedelta(hours=1)
        publishers = [
            threading.Thread(target=_publish_many, args=(d, per_device, start, "s"))
            for d in devices
        ]
        for thread in publishers:
            thread.start()
        for thread in publishers:
            thread.join(120)
        wait_for(lambda: _stored(conn, ids) >= total, 90, "everything stored")
    finally:
        first.stop()
        second.stop()
    assert _stored(conn, ids) == total
    by_first = _stored_by((tmp_path / "a.log").read_text())
    by_second = _stored_by((tmp_path / "b.log").read_text())
    assert by_first > 0 and by_second > 0, "the broker spreads the load over both"
    assert by_first + by_second == total
