"""Doctors' apps acknowledge each notification on `eldercare/v1/doctors/{id}/acks`; only that makes
the outbox row delivered (`sent`): the broker's PUBACK says only that the broker took it.

The app publishes `{"notification_id": N}` (QoS 1) for every copy it receives, a repeated one too.
The broker's ACL lets each app's login publish only to its own acks topic, so the topic names the
doctor and the notification must be one of that doctor's. Every engine subscribes (not shared):
handling an ack twice changes nothing. An ack sent while no engine is connected is lost; the row is
then published again after a while and acknowledged again.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid

import orjson
import psycopg

from alerts import outbox
from alerts.clock import Clock
from eldercare.mqtt import Connection
from eldercare.settings import Settings
from store.db import keep_connected

log = logging.getLogger(__name__)

ACKS_FILTER = "eldercare/v1/doctors/+/acks"
_PREFIX, _SUFFIX = "eldercare/v1/doctors/", "/acks"


def parse_ack(topic: str, payload: bytes) -> tuple[int, int] | str:
    """(doctor id, notification id) of an app's acknowledgement, or why it is not one."""
    doctor = topic.removeprefix(_PREFIX).removesuffix(_SUFFIX)
    ascii_id = doctor.isascii() and doctor.isdigit() and len(doctor) <= 18
    if not (topic.startswith(_PREFIX) and topic.endswith(_SUFFIX) and ascii_id):
        return f"not a doctor's acks topic: {topic!r}"
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return "not JSON"
    notification_id = body.get("notification_id") if isinstance(body, dict) else None
    # bool is an int to Python, not to the app; ids fit PostgreSQL's bigint.
    if type(notification_id) is not int or not 0 < notification_id < 2**63:
        return 'not {"notification_id": <positive integer>}'
    return int(doctor), notification_id


class AppAcks:
    """Subscribes to every doctor's acks topic and records each acknowledgement (a thread with its
    own database connection; the MQTT callback only hands over)."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.url = settings.require_database_url()
        self.clock = clock
        self.stop_event = threading.Event()
        self._queue: queue.Queue[tuple[str, bytes, int, int]] = queue.Queue()
        self.connection = Connection(
            client_id=f"eldercare-alerts-acks-{uuid.uuid4().hex[:8]}",
            endpoint=settings.mqtt,
            username=settings.mqtt_service_username,
            password=settings.mqtt_service_password,
            subscriptions=[ACKS_FILTER],
            on_message=lambda *message: self._queue.put(message),
            # No session to resume: an ack missed while away is made good by the re-publish.
            session_expiry_s=0,
        )
        self._thread = threading.Thread(target=self._run, name="alert-app-acks", daemon=True)

    def start(self) -> None:
        self.connection.start()
        self._thread.start()

    def wait_subscribed(self, timeout: float) -> bool:
        return self.connection.subscribed.wait(timeout)

    def stop(self) -> None:
        self.stop_event.set()
        self._thread.join(10)
        self.connection.stop()

    def _run(self) -> None:
        # An ack in hand when the database goes is not acknowledged to the broker; the row goes
        # out again later.
        keep_connected(self.url, "eldercare-alerts-acks", self.stop_event, self._take_acks)

    def _take_acks(self, conn: psycopg.Connection) -> None:
        while not self.stop_event.is_set():
            try:
                message = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self.handle(conn, *message)

    def handle(
        self, conn: psycopg.Connection, topic: str, payload: bytes, mid: int, generation: int
    ) -> None:
        parsed = parse_ack(topic, payload)
        if isinstance(parsed, str):
            log.warning("app acknowledgement on %s ignored: %s", topic, parsed)
        else:
            doctor_id, notification_id = parsed
            if not outbox.confirm(
                conn, doctor_id=doctor_id, notification_id=notification_id, now=self.clock.now()
            ):
                # Another doctor's, another channel's, never published, or already recorded.
                log.info(
                    "app acknowledgement of notification %s by doctor %s changed nothing",
                    notification_id,
                    doctor_id,
                )
        self.connection.ack(mid, generation)
