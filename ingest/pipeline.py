"""From raw MQTT messages to committed rows: parse, attribute, stage, store, quarantine.

Runs on a writer thread, never on the MQTT network thread. The caller acknowledges the batch's
messages only after `TelemetryWriter.write` returned, i.e. after the commit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from ingest import queries
from ingest.contract.envelope import Limits, Reason, Rejection, now_utc, topic_parts
from ingest.contract.telemetry import ParsedTelemetry, parse_telemetry
from ingest.registry import DeviceRegistry
from store.db import is_transient

log = logging.getLogger(__name__)

QUARANTINE_PAYLOAD_LIMIT = 64 * 1024


@dataclass(slots=True)
class Incoming:
    topic: str
    payload: bytes
    received_at: datetime
    mid: int = 0
    generation: int = 0


@dataclass
class Quarantined:
    received_at: datetime
    topic: str
    device_id: str | None
    reason: str
    detail: str
    payload: bytes


@dataclass
class TelemetryBatch:
    """What one batch of messages turns into: rows to stage and rejections to quarantine."""

    rows: list[tuple[str, str, str, datetime, int, float, datetime]] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    last_seen: dict[str, datetime] = field(default_factory=dict)

    def reject(self, message: Incoming, device_id: str | None, rejection: Rejection) -> None:
        self.quarantined.append(
            Quarantined(
                message.received_at,
                message.topic,
                device_id,
                rejection.reason.value,
                rejection.detail,
                rejection.payload,
            )
        )


def build_batch(
    messages: Sequence[Incoming],
    registry: DeviceRegistry,
    limits: Limits,
    now: datetime | None = None,
) -> TelemetryBatch:
    """Pure: the rows and rejections for a batch, given the registry as it is now."""
    now = now or now_utc()
    batch = TelemetryBatch()
    for message in messages:
        parts = topic_parts(message.topic)
        if parts is None or parts[1] != "telemetry":
            batch.reject(
                message, None, Rejection(Reason.BAD_TOPIC, "not a telemetry topic", message.payload)
            )
            continue
        device_id = parts[0]
        problem = registry.device_problem(device_id)
        if problem is not None:
            what = "not registered" if problem is Reason.UNKNOWN_DEVICE else "retired"
            batch.reject(
                message,
                device_id,
                Rejection(problem, f"device {device_id} is {what}", message.payload),
            )
            continue
        try:
            parsed: ParsedTelemetry = parse_telemetry(device_id, message.payload, now, limits)
        except Exception as exc:
            # A bug in the parser: one message must not stop ingest (nor, by ending the process,
            # crash-loop it on every redelivery). Kept for diagnosis.
            log.exception("parsing a message from %s failed", device_id)
            batch.reject(message, device_id, parse_failure(exc, message.payload))
            continue
        for rejection in parsed.rejections:
            batch.reject(message, device_id, rejection)
        for obj in parsed.objects:
            resident_id = registry.resident_at(device_id, obj.measured_at)
            if resident_id is None:
                batch.reject(
                    message,
                    device_id,
                    Rejection(
                        Reason.UNBOUND_DEVICE,
                        f"device {device_id} was bound to no resident at {obj.measured_at.isoformat()}",
                        message.payload,
                    ),
                )
                continue
            for reading in obj.readings:
                batch.rows.append(
                    (
                        device_id,
                        obj.msg_id,
                        reading.metric,
                        reading.measured_at,
                        resident_id,
                        reading.value,
                        message.received_at,
                    )
                )
        batch.last_seen[device_id] = message.received_at  # messages come in arrival order
    return batch


def parse_failure(exc: Exception, payload: bytes) -> Rejection:
    return Rejection(
        Reason.PARSE_FAILURE,
        f"the ingestor could not parse it: {type(exc).__name__}: {exc}",
        payload,
    )


class TelemetryWriter:
    """Stores batches on one connection; a batch is one transaction."""

    def __init__(self, conn: psycopg.Connection, limits: Limits) -> None:
        self.conn = conn
        self.limits = limits
        self.registry = DeviceRegistry()
        self.stored_messages = 0
        self.quarantined_messages = 0
        conn.execute(queries.CREATE_STAGING)
        conn.commit()

    def write(self, messages: Sequence[Incoming]) -> None:
        """Commit everything derived from `messages`; raises the database's transient errors
        (unreachable, read-only, deadlock: store.db.is_transient) without quarantining anything,
        and nothing is acknowledged then: the caller retries."""
        try:
            self._write(messages)
        except psycopg.Error as exc:
            if is_transient(exc):
                raise
            # One message the database refuses must not hold back the others: isolate it.
            self.conn.rollback()
            log.warning(
                "batch of %d refused by the database (%s); storing one by one", len(messages), exc
            )
            for message in messages:
                try:
                    self._write([message])
                except psycopg.Error as one_exc:
                    if is_transient(one_exc):
                        raise
                    self.conn.rollback()
                    self._quarantine_storage_error(message, one_exc)

    def _write(self, messages: Sequence[Incoming]) -> None:
        conn = self.conn
        with conn.transaction():
            self.registry.refresh_if_changed(conn)
            batch = build_batch(messages, self.registry, self.limits)
            with conn.cursor() as cur:
                if batch.rows:
                    with cur.copy(queries.COPY_STAGING) as copy:
                        copy.set_types(queries.STAGING_TYPES)
                        for row in batch.rows:
                            copy.write_row(row)
                    cur.execute(queries.STORE_STAGED)
                if batch.quarantined:
                    cur.executemany(
                        queries.INSERT_QUARANTINE,
                        [quarantine_params(q) for q in batch.quarantined],
                    )
        self.stored_messages += len(messages) - len(batch.quarantined)
        self.quarantined_messages += len(batch.quarantined)
        self._touch_last_seen(batch.last_seen)

    def _touch_last_seen(self, last_seen: dict[str, datetime]) -> None:
        if not last_seen:
            return
        ids = sorted(last_seen)
        try:
            with self.conn.transaction():
                self.conn.execute(queries.TOUCH_LAST_SEEN, (ids, [last_seen[i] for i in ids]))
        except psycopg.errors.DeadlockDetected:
            pass  # another ingestor updated the same devices; the next batch catches up

    def _quarantine_storage_error(self, message: Incoming, exc: psycopg.Error) -> None:
        parts = topic_parts(message.topic)
        item = Quarantined(
            message.received_at,
            message.topic,
            parts[0] if parts else None,
            Reason.STORAGE_ERROR.value,
            f"the database refused it: {exc.diag.message_primary or exc}"[:500],
            message.payload,
        )
        with self.conn.transaction():
            self.conn.execute(queries.INSERT_QUARANTINE, quarantine_params(item))
        self.quarantined_messages += 1


def quarantine_params(q: Quarantined) -> tuple[object, ...]:
    """The parameters of queries.INSERT_QUARANTINE, for telemetry and events alike."""
    return (
        q.received_at,
        q.topic[:1000],
        q.device_id,
        q.reason,
        q.detail[:1000],
        q.payload[:QUARANTINE_PAYLOAD_LIMIT],
        len(q.payload),
    )
