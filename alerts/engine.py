"""The alert engine process (`eldercare alerts run`).

- Emergency events arrive by PostgreSQL NOTIFY from the ingestor and are handled at once on their own
  thread: alert raised, doctor's MQTT topic and device ack sent before anything else happens.
- A tick (every second by the clock) evaluates the reading rules for residents with new readings
  (or a reading that has just stood long enough to count on its own), the device timers (no data,
  low battery), due escalations and reminders, and sends what is due.
- Slow channels (e-mail, webhooks) have their own dispatcher thread, so they never delay the others.
- Doctors' apps acknowledge their notifications on their acks topics (alerts/app_acks.py): only
  that marks a notification to the app delivered.
Everything it decides is in the database first; a restart continues from there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import paho.mqtt.client as paho
import psycopg

from alerts import escalation, facts, lifecycle, outbox, queries
from alerts.app_acks import AppAcks
from alerts.channels.base import Channel
from alerts.channels.mqtt import DeviceAckChannel, DoctorTopicChannel
from alerts.clock import Clock, SystemClock
from alerts.device_events import CANCELS, event_finding
from alerts.models import Finding
from alerts.rules.early_warning import NEWS2_LONE_SAMPLE_AFTER
from alerts.rules.table import CLEARS_AFTER, evaluate
from alerts.rules.window import LOOKBACKS, REALTIME, Window
from alerts.settings import AlertSettings
from alerts.timers import DeviceState, device_findings
from alerts.window import METRICS, load_window
from eldercare.mqtt import connect_blocking, new_client
from eldercare.settings import Settings
from store.db import keep_connected

log = logging.getLogger(__name__)

FAST_CHANNELS = ("mqtt", "device_ack")
SLOW_CHANNELS = ("email", "webhook")


class AlertEngine:
    def __init__(
        self, settings: Settings, alerts: AlertSettings, clock: Clock | None = None
    ) -> None:
        self.settings = settings
        self.config = alerts
        self.clock = clock or SystemClock()
        self.url = settings.require_database_url()
        self.stop_event = threading.Event()
        self.client: paho.Client = new_client(
            f"eldercare-alerts-{id(self):x}",
            username=settings.mqtt_service_username,
            password=settings.mqtt_service_password,
        )
        self.fast: dict[str, Channel] = {}
        self.slow: dict[str, Channel] = {}
        self._since = datetime.now(UTC) - REALTIME
        # The engine's `now` up to which lone readings standing NEWS2_LONE_SAMPLE_AFTER were looked for.
        self._stood_until: datetime | None = None
        self.baselines = facts.Baselines()
        self._threads: list[threading.Thread] = []
        self._last_run: dict[str, datetime] = {}
        self.app_acks: AppAcks | None = None
        # Set while the events thread LISTENs: only then is a stored SOS noticed at once.
        self.listening = threading.Event()

    # --- set-up -------------------------------------------------------------------------------
    def connect(self) -> None:
        connect_blocking(self.client, self.settings.mqtt)
        self.fast = {
            "mqtt": DoctorTopicChannel(self.client, 10),
            "device_ack": DeviceAckChannel(self.client, 10),
        }
        self.slow = self._slow_channels()

    def _slow_channels(self) -> dict[str, Channel]:
        channels: dict[str, Channel] = {}
        try:
            from alerts.channels.webhook import WebhookChannel

            channels["webhook"] = WebhookChannel()
        except ImportError:  # pragma: no cover - the module ships with the package
            log.warning("webhook channel unavailable")
        if self.config.smtp_host:
            from alerts.channels.email import EmailChannel

            channels["email"] = EmailChannel(
                self.config.smtp_host,
                self.config.smtp_port,
                self.config.smtp_sender,
                username=self.config.smtp_username,
                password=self.config.smtp_password,
                starttls=self.config.smtp_starttls,
            )
        return channels

    def close(self) -> None:
        self.stop_event.set()
        for thread in self._threads:
            thread.join(10)
        if self.app_acks is not None:
            self.app_acks.stop()
        for channel in self.slow.values():
            close = getattr(channel, "close", None)
            if close:
                close()
        self.client.disconnect()
        self.client.loop_stop()

    # --- events -------------------------------------------------------------------------------
    def handle_event(self, conn: psycopg.Connection, event_id: int) -> int | None:
        """Turn one stored device event into alert changes (once); returns the alert id touched."""
        now = self.clock.now()
        with conn.transaction():
            row = conn.execute(queries.LOCK_EVENT, (event_id,)).fetchone()
            if row is None:
                return None  # handled already (or by another engine)
            _id, device_id, resident_id, kind, occurred_at, received_at = row
            conn.execute(queries.MARK_EVENT, (now, event_id))
            alert = None
            window = timedelta(seconds=self.config.fall_cancel_window_s)
            if kind in ("sos", "fall"):
                # Late (reported long after it happened) or live: alerts/device_events.py.
                finding = event_finding(kind, event_id, device_id, occurred_at, received_at)
                alert = lifecycle.raise_finding(
                    conn,
                    resident_id=resident_id,
                    finding=finding,
                    now=now,
                    event_id=event_id,
                    delay=window if kind == "fall" else timedelta(0),
                    actor=f"device:{device_id}",
                )
            elif kind in CANCELS:
                alert = lifecycle.cancel_from_device(
                    conn,
                    resident_id=resident_id,
                    device_id=device_id,
                    rule=CANCELS[kind],
                    kind=kind,
                    cancelled_at=occurred_at,
                    now=now,
                    window=window,
                )
        return alert.id if alert else None

    def catch_up_events(self, conn: psycopg.Connection) -> None:
        for event_id, *_ in conn.execute(queries.UNPROCESSED_EVENTS).fetchall():
            self._guarded_event(conn, event_id)

    def _guarded_event(self, conn: psycopg.Connection, event_id: int) -> int | None:
        try:
            return self.handle_event(conn, event_id)
        except psycopg.OperationalError:
            raise
        except Exception:
            # One event that cannot be handled must hold up neither the next SOS nor the tick's
            # escalations: it stays unprocessed (rolled back) and is retried at the next catch-up.
            log.exception("device event %s could not be handled; it will be retried", event_id)
            return None

    # --- readings and timers -----------------------------------------------------------------
    def evaluate_readings(self, conn: psycopg.Connection, now: datetime) -> None:
        wall = datetime.now(UTC)
        since, self._since = self._since, wall - timedelta(seconds=5)  # overlap: commit lag
        # Readings reaching NEWS2_LONE_SAMPLE_AFTER since the last pass: a lone one now counts.
        stood_after = min(self._stood_until or now - REALTIME, now) - NEWS2_LONE_SAMPLE_AFTER
        fresh_from = [now - LOOKBACKS[m].fresh for m in METRICS]
        residents = conn.execute(
            queries.RESIDENTS_TO_EVALUATE,
            {
                "since": since,
                "metrics": METRICS,
                "fresh_from": fresh_from,
                "earliest": min(fresh_from),
                "stood_after": stood_after,
                "stood_until": now - NEWS2_LONE_SAMPLE_AFTER,
            },
        ).fetchall()
        for (resident_id,) in residents:
            self.evaluate_resident(conn, resident_id, now)
        self._stood_until = now

    def window(self, conn: psycopg.Connection, resident_id: int, now: datetime) -> Window:
        """What the rules see of a resident at `now` (alerts/window.py)."""
        return load_window(conn, resident_id, now, self.baselines)

    def evaluate_resident(
        self, conn: psycopg.Connection, resident_id: int, now: datetime
    ) -> list[Finding]:
        findings = evaluate(self.window(conn, resident_id, now))
        for finding in findings:
            lifecycle.raise_finding(conn, resident_id=resident_id, finding=finding, now=now)
        with conn.transaction():
            lifecycle.settle_cleared(
                conn, resident_id, {f.rule for f in findings}, CLEARS_AFTER, now
            )
        return findings

    def check_devices(self, conn: psycopg.Connection, now: datetime) -> None:
        devices = [DeviceState(*row) for row in conn.execute(queries.DEVICE_STATES).fetchall()]
        found = device_findings(devices, now)
        for resident_id, finding in found:
            lifecycle.raise_finding(conn, resident_id=resident_id, finding=finding, now=now)
        active = {f.rule for _, f in found}
        for alert_id, rule, status, bound in conn.execute(
            queries.UNRESOLVED_DEVICE_ALERTS
        ).fetchall():
            if rule not in active:
                lifecycle.resolve(
                    conn,
                    alert_id,
                    actor="system",
                    now=now,
                    automatic=True,
                    note=_device_note(rule, status, bound),
                )

    def _every(self, name: str, seconds: float, now: datetime) -> bool:
        last = self._last_run.get(name)
        if last is not None and (now - last).total_seconds() < seconds:
            return False
        self._last_run[name] = now
        return True

    def tick(self, conn: psycopg.Connection) -> None:
        now = self.clock.now()
        self.catch_up_events(conn)
        if self._every("readings", self.config.evaluate_every_s, now):
            self.evaluate_readings(conn, now)
        if self._every("devices", self.config.device_check_every_s, now):
            self.check_devices(conn, now)
        escalation.run_due(conn, now)
        outbox.dispatch(conn, self.fast, now)

    # --- threads ------------------------------------------------------------------------------
    def start(self) -> None:
        # Doctors' apps acknowledge notifications: that, not the broker's PUBACK, is delivery.
        self.app_acks = AppAcks(self.settings, self.clock)
        self.app_acks.start()
        for target, name in (
            (self._listen, "alert-events"),
            (self._tick_loop, "alert-tick"),
            (self._slow_loop, "alert-slow"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _listen(self) -> None:
        # This thread carries the emergencies: it must never end while the engine runs. What
        # failed is still unprocessed; the catch-up on reconnect takes it again.
        keep_connected(self.url, "eldercare-alerts-events", self.stop_event, self._listen_on)

    def _listen_on(self, conn: psycopg.Connection) -> None:
        conn.execute("LISTEN eldercare_device_event")
        self.listening.set()
        try:
            self.catch_up_events(conn)
            while not self.stop_event.is_set():
                # Drain first: the notifies() generator holds the connection.
                for note in list(conn.notifies(timeout=0.5, stop_after=1)):
                    self._on_event(conn, int(orjson.loads(note.payload)["id"]))
        finally:
            self.listening.clear()

    def _on_event(self, conn: psycopg.Connection, event_id: int) -> None:
        alert_id = self._guarded_event(conn, event_id)
        if alert_id is not None:
            outbox.dispatch(conn, self.fast, self.clock.now(), alert_id=alert_id)

    def _tick_loop(self) -> None:
        self._loop(lambda conn: self.tick(conn), "eldercare-alerts-tick")

    def _slow_loop(self) -> None:
        self._loop(
            lambda conn: outbox.dispatch(conn, self.slow, self.clock.now()) if self.slow else None,
            "eldercare-alerts-slow",
        )

    def _loop(self, step: Callable[[psycopg.Connection], object], name: str) -> None:
        def every_tick(conn: psycopg.Connection) -> None:
            while not self.stop_event.is_set():
                step(conn)
                self.stop_event.wait(self.config.tick_s)

        keep_connected(
            self.url, name, self.stop_event, every_tick, pause_after_error_s=self.config.tick_s
        )


def _device_note(rule: str, status: str | None, bound: bool) -> str:
    """Why a device alert ended: say so honestly when the device left service, not "reporting"."""
    if status != "active":
        return "device retired: it no longer reports for this resident"
    if not bound:
        return "device unbound from this resident"
    return "the device is reporting again" if rule.startswith("no_data") else "battery recovered"
