"""The ingest process: MQTT subscriptions in, committed rows out, acknowledgements after commit.

Independent broker sessions per process, so that an SOS never waits behind telemetry or status:
- telemetry: `$share/<group>/eldercare/v1/devices/+/telemetry`, batched by a writer thread;
- events: `$share/<group>-events/...`, each message stored and acknowledged on its own;
- status: `$share/<group>-status/...`, the same, so that a device flooding status fills only this
  session's queue.

A writer thread that meets an error it does not know ends the whole process (exit status 70), so
that the supervisor (`eldercare run`, compose's restart policy) starts a fresh one: a process whose
writer died would otherwise keep its broker session and receive messages it never stores. Nothing
is lost that way: what was not acknowledged, the broker keeps for the persistent session.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NoReturn

import psycopg

from eldercare.mqtt import Connection
from eldercare.settings import Settings
from ingest.events import EventWriter
from ingest.maintenance import Maintenance
from ingest.pipeline import Incoming, TelemetryWriter
from ingest.settings import IngestSettings
from store.db import connect_with_retry, is_transient

log = logging.getLogger(__name__)

TELEMETRY_TOPIC = "eldercare/v1/devices/+/telemetry"
EVENTS_TOPIC = "eldercare/v1/devices/+/events"
STATUS_TOPIC = "eldercare/v1/devices/+/status"
# Cheap and generous (a false positive only reorders): sos, fall, SOS, "Fall ", sos_cancel …
_MAY_BE_EMERGENCY = re.compile(rb"(?i)sos|fall")


class _Inbox:
    """Messages handed over by paho's network thread, taken in whole batches by a worker.

    Bounded in messages and bytes, counting a message from `put` until its `release` after commit
    (so what the writer holds during a database outage counts too). When full, `put` blocks paho's
    network thread: it stops reading the socket and the broker holds the rest (QoS 1 is held back
    before that by the session's Receive Maximum, see `_Consumer`). Nothing is dropped: what waits
    for space is not acknowledged yet. Urgent messages (emergencies) are taken before the others.
    """

    def __init__(self, max_batch: int, max_messages: int, max_bytes: int) -> None:
        self.max_batch = max_batch
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._urgent: list[Incoming] = []
        self._items: list[Incoming] = []
        self._first_at = 0.0
        self._held = 0  # put and not yet released
        self._held_bytes = 0
        self.peak_held = 0
        self.peak_held_bytes = 0
        self._closed = False
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._wake = threading.Event()

    def put(self, item: Incoming, *, urgent: bool = False) -> bool:
        """False (the message not taken) only once the inbox is closed: the broker redelivers."""
        size = len(item.payload)
        with self._lock:
            # One message larger than the byte bound is still let in alone.
            while not self._closed and self._held and self._full(size):
                self._space.wait(0.5)
            if self._closed:
                return False
            if not self._urgent and not self._items:
                self._first_at = time.monotonic()
            (self._urgent if urgent else self._items).append(item)
            self._held += 1
            self._held_bytes += size
            self.peak_held = max(self.peak_held, self._held)
            self.peak_held_bytes = max(self.peak_held_bytes, self._held_bytes)
            waiting = len(self._urgent) + len(self._items)
        if waiting == 1 or waiting >= self.max_batch or urgent:
            self._wake.set()
        return True

    def _full(self, size: int) -> bool:
        return self._held >= self.max_messages or self._held_bytes + size > self.max_bytes

    def release(self, items: list[Incoming]) -> None:
        """`items` are committed (or will be redelivered): their room is free again."""
        with self._lock:
            self._held -= len(items)
            self._held_bytes -= sum(len(item.payload) for item in items)
            self._space.notify_all()

    def close(self) -> None:
        """Unblock a waiting `put` for good (shutdown: what it held is not acknowledged)."""
        with self._lock:
            self._closed = True
            self._space.notify_all()

    @property
    def held(self) -> tuple[int, int]:
        with self._lock:
            return self._held, self._held_bytes

    def take(self, max_wait: float, stop: threading.Event) -> list[Incoming]:
        """Wait for the first item, then until the batch is full or `max_wait` after the first;
        urgent items come first and are taken at once."""
        while not stop.is_set():
            with self._lock:
                size, first_at = len(self._urgent) + len(self._items), self._first_at
                if self._urgent or (
                    size and (size >= self.max_batch or time.monotonic() - first_at >= max_wait)
                ):
                    urgent = min(len(self._urgent), self.max_batch)
                    items = self._urgent[:urgent]
                    del self._urgent[:urgent]
                    rest = self.max_batch - urgent
                    items += self._items[:rest]
                    del self._items[:rest]
                    if self._urgent or self._items:
                        self._first_at = time.monotonic()
                    else:
                        self._wake.clear()
                    return items
            timeout = 0.5 if size == 0 else max(0.0, max_wait - (time.monotonic() - first_at))
            self._wake.wait(timeout)
            if size:
                self._wake.clear()
        return []


EXIT_FATAL = 70  # EX_SOFTWARE: an internal error, restart me


def exit_process(name: str) -> NoReturn:
    """Called from a writer thread: sys.exit there would end only the thread."""
    log.critical(
        "%s: unexpected error (above); exiting with status %d so that a fresh process takes over "
        "— unacknowledged messages stay with the broker",
        name,
        EXIT_FATAL,
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_FATAL)


FatalHandler = Callable[[str], None]


def _run_with_database(
    url: str,
    name: str,
    stop: threading.Event,
    build: Callable[[psycopg.Connection], None],
    on_fatal: FatalHandler = exit_process,
) -> None:
    """Call `build(conn)` with a fresh connection; after a transient database error (lost
    connection, read-only after a failover, deadlock) reconnect and call it again, the work in
    hand unacknowledged. Any other exception goes to `on_fatal` (by default: exit the process)."""
    while not stop.is_set():
        try:
            conn = connect_with_retry(url, application_name=name)
        except psycopg.OperationalError as exc:
            log.error("%s: database unreachable (%s); retrying", name, exc)
            stop.wait(2)
            continue
        except Exception:
            log.exception("%s: cannot connect to the database", name)
            on_fatal(name)
            return
        try:
            build(conn)
            return
        except Exception as exc:
            if not (isinstance(exc, psycopg.Error) and is_transient(exc)):
                log.exception("%s failed", name)
                on_fatal(name)
                return
            log.error(
                "%s: database error (%s: %s); reconnecting, nothing was acknowledged",
                name,
                type(exc).__name__,
                str(exc).strip(),
            )
            stop.wait(1)
        finally:
            conn.close()


class _Consumer:
    """One broker session feeding one writer thread with its own database connection."""

    name = "consumer"

    def __init__(
        self,
        settings: Settings,
        ingest: IngestSettings,
        subscriptions: list[str],
        max_batch: int,
        on_fatal: FatalHandler = exit_process,
    ) -> None:
        self.settings = settings
        self.ingest = ingest
        self.on_fatal = on_fatal
        self.inbox = _Inbox(max_batch, ingest.inbox_max_messages, ingest.inbox_max_bytes)
        self.stop_event = threading.Event()
        self._pending: list[Incoming] = []  # taken but not yet committed (kept across reconnects)
        self.connection = Connection(
            client_id=f"eldercare-ingest-{ingest.instance}-{self.name}",
            endpoint=settings.mqtt,
            username=settings.mqtt_service_username,
            password=settings.mqtt_service_password,
            subscriptions=subscriptions,
            on_message=self._on_message,
            # The broker sends at most this many unacknowledged QoS 1 messages (acks follow the
            # commit), so QoS 1 alone never fills the inbox's count; QoS 0 has no such limit.
            receive_maximum=min(ingest.inbox_max_messages, 65535),
        )
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-writer", daemon=True)

    def _on_message(self, topic: str, payload: bytes, mid: int, generation: int) -> None:
        self.inbox.put(Incoming(topic, payload, datetime.now(UTC), mid, generation))

    def _done(self, items: list[Incoming]) -> None:
        """Acknowledge committed messages and free their room in the inbox."""
        self.connection.ack_many((item.mid, item.generation) for item in items)
        self.inbox.release(items)

    def start(self) -> None:
        self._thread.start()
        self.connection.start()

    def stop(self, *, leave: bool = False) -> None:
        self.inbox.close()  # a network thread waiting for room must not block the disconnect
        self.connection.stop(end_session=leave)
        self.stop_event.set()
        self._thread.join(10)

    def _run(self) -> None:
        url = self.settings.require_database_url()
        _run_with_database(
            url, f"eldercare-ingest-{self.name}", self.stop_event, self._loop, self.on_fatal
        )

    def _loop(self, conn: psycopg.Connection) -> None:
        raise NotImplementedError


class TelemetryConsumer(_Consumer):
    """Telemetry in batches: one transaction per batch, then one write of all its PUBACKs."""

    name = "telemetry"

    def __init__(
        self, settings: Settings, ingest: IngestSettings, on_fatal: FatalHandler = exit_process
    ) -> None:
        subscription = f"$share/{ingest.share_group}/{TELEMETRY_TOPIC}"
        super().__init__(settings, ingest, [subscription], ingest.max_batch, on_fatal)
        self.writer: TelemetryWriter | None = None

    def stop(self, *, leave: bool = False) -> None:
        super().stop(leave=leave)
        if self.writer is not None:
            log.info(
                "telemetry: stored %d messages, quarantined %d",
                self.writer.stored_messages,
                self.writer.quarantined_messages,
            )

    def _loop(self, conn: psycopg.Connection) -> None:
        self.writer = TelemetryWriter(conn, self.ingest.limits)
        while not self.stop_event.is_set():
            if not self._pending:
                self._pending = self.inbox.take(self.ingest.flush_interval_s, self.stop_event)
            if not self._pending:
                continue
            self.writer.write(self._pending)
            self._done(self._pending)
            self._pending = []


class EventConsumer(_Consumer):
    """Events one by one, with no batching delay: an SOS never waits for telemetry or status.

    Emergencies (sos, fall and their cancels: anything that may be one) are taken before other
    events already waiting, so a device flooding ordinary events does not delay another's SOS.
    """

    name = "events"
    topics = (EVENTS_TOPIC,)
    group_suffix = "-events"

    def __init__(
        self, settings: Settings, ingest: IngestSettings, on_fatal: FatalHandler = exit_process
    ) -> None:
        group = f"{ingest.share_group}{self.group_suffix}"
        topics = [f"$share/{group}/{topic}" for topic in self.topics]
        super().__init__(settings, ingest, topics, 1, on_fatal)

    def start(self) -> None:
        super().start()
        if self.name == "events":
            threading.Thread(
                target=self._leave_status, name="events-unsubscribe", daemon=True
            ).start()

    def _leave_status(self) -> None:
        """A session from before status had a session of its own is still subscribed to it."""
        if self.connection.subscribed.wait(60):
            group = f"{self.ingest.share_group}{self.group_suffix}"
            self.connection.client.unsubscribe(f"$share/{group}/{STATUS_TOPIC}")

    def _on_message(self, topic: str, payload: bytes, mid: int, generation: int) -> None:
        item = Incoming(topic, payload, datetime.now(UTC), mid, generation)
        self.inbox.put(item, urgent=_MAY_BE_EMERGENCY.search(payload) is not None)

    def _loop(self, conn: psycopg.Connection) -> None:
        writer = EventWriter(conn, self.ingest.limits)
        while not self.stop_event.is_set():
            if not self._pending:
                self._pending = self.inbox.take(0.0, self.stop_event)
            while self._pending:
                item = self._pending[0]
                ack = writer.handle(item)
                if ack is not None:
                    self.connection.publish(ack.topic, ack.payload, qos=1)
                self._done([item])
                self._pending.pop(0)


class StatusConsumer(EventConsumer):
    """Device status on a broker session of its own: a device flapping or flooding status at full
    speed fills this session's queue, never the one an SOS comes through."""

    name = "status"
    topics = (STATUS_TOPIC,)
    group_suffix = "-status"

    def _on_message(self, topic: str, payload: bytes, mid: int, generation: int) -> None:
        self.inbox.put(Incoming(topic, payload, datetime.now(UTC), mid, generation))


ROLES = ("all", "telemetry", "events")


class Ingestor:
    """The consumers of one ingest process: both, or one of them (`role`).

    Separate processes for events and telemetry keep the SOS path off the telemetry process's
    interpreter lock entirely; one process with both is simpler for small sites.
    """

    def __init__(
        self,
        settings: Settings,
        ingest: IngestSettings,
        role: str = "all",
        *,
        on_fatal: FatalHandler = exit_process,
    ) -> None:
        if not ingest.instance:
            raise ValueError("an ingestor needs a stable instance name (see ingest/slots.py)")
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        self.consumers: list[_Consumer] = []
        if role in ("all", "events"):
            self.consumers.append(EventConsumer(settings, ingest, on_fatal))
            self.consumers.append(StatusConsumer(settings, ingest, on_fatal))
        if role in ("all", "telemetry"):
            self.consumers.append(TelemetryConsumer(settings, ingest, on_fatal))
        self.maintenance = Maintenance(settings.require_database_url(), ingest)

    def start(self) -> None:
        for consumer in self.consumers:
            consumer.start()
        self.maintenance.start()

    def wait_subscribed(self, timeout: float) -> bool:
        return all(c.connection.subscribed.wait(timeout) for c in self.consumers)

    def readiness_checks(self) -> dict[str, Callable[[], bool]]:
        """Each broker session is ready once the broker has acknowledged all its subscriptions
        (store/readiness.py): from then on the broker keeps what devices publish for it."""
        return {f"ingest-{c.name}": c.connection.subscribed.is_set for c in self.consumers}

    def stop(self, *, leave: bool = False) -> None:
        self.maintenance.stop()
        for consumer in self.consumers:
            consumer.stop(leave=leave)
