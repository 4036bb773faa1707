"""Backpressure: with the database unreachable, the ingestor holds at most its inbox bound in
memory (the broker holds the rest) and, once the database is back, stores every message once."""

from __future__ import annotations

import time
import uuid

import orjson
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from eldercare.mqtt import connect_blocking, new_client
from eldercare.settings import Settings
from ingest.consumer import Ingestor, TelemetryConsumer
from ingest.settings import IngestSettings
from tests.support import TcpProxy, now_ms, wait_for

BOUND = 100
QOS1, QOS0 = 800, 400  # far more than the bound


def test_an_unreachable_database_holds_the_inbox_at_its_bound_and_loses_nothing(
    settings, register, endpoint, conn
):
    params = conninfo_to_dict(settings.database_url or "")
    proxy = TcpProxy(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
    proxied = Settings(
        **{
            **settings.model_dump(),
            "database_url": make_conninfo(
                "", **{**params, "host": "127.0.0.1", "port": proxy.port}
            ),
        }
    )
    ingest = IngestSettings(
        instance=f"t{uuid.uuid4().hex[:6]}",
        share_group=f"g{uuid.uuid4().hex[:8]}",
        inbox_max_messages=BOUND,
        inbox_max_bytes=64 * 1024 * 1024,
        maintenance_interval_s=0,
    )
    device = register("wristband")
    ingestor = Ingestor(proxied, ingest, "telemetry")
    (consumer,) = ingestor.consumers
    assert isinstance(consumer, TelemetryConsumer)
    publisher = new_client(
        f"pub-{uuid.uuid4().hex[:6]}", username=device.device_id, password=device.password
    )
    publisher.max_inflight_messages_set(1000)
    try:
        ingestor.start()
        assert ingestor.wait_subscribed(20)
        proxy.down()
        connect_blocking(publisher, endpoint)
        start = now_ms() - 3_600_000
        infos = []
        for i in range(QOS1 + QOS0):
            body = {"msg_id": f"m{i}", "ts": start + i * 1000, "readings": {"heart_rate": 70}}
            infos.append(
                publisher.publish(device.topic("telemetry"), orjson.dumps(body), qos=int(i < QOS1))
            )
        for info in infos:
            info.wait_for_publish(30)
        # The writer has met the outage and the inbox filled up to its bound…
        wait_for(lambda: consumer.inbox.peak_held >= BOUND, 30, "the inbox full")
        time.sleep(2)  # …and stays there, however much more the broker holds
        assert consumer.inbox.peak_held == BOUND
        assert _stored(conn, device.device_id) == 0
        proxy.up()
        wait_for(lambda: _stored(conn, device.device_id) == QOS1 + QOS0, 120, "all stored")
        readings = conn.execute(
            "SELECT count(*), count(DISTINCT measured_at) FROM reading WHERE device_id = %s",
            (device.device_id,),
        ).fetchone()
        assert readings == (QOS1 + QOS0, QOS1 + QOS0), "every message stored exactly once"
        assert consumer.inbox.peak_held <= BOUND
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        ingestor.stop(leave=True)
        proxy.close()


def _stored(conn, device_id: str) -> int:
    return conn.execute(
        "SELECT count(*) FROM telemetry_message WHERE device_id = %s", (device_id,)
    ).fetchone()[0]
