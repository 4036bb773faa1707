"""Emergency events and device status: stored one by one, at once, never behind telemetry batches.

An emergency (sos, fall) is stored, handed to alerting and acknowledged whenever anything usable is
left of it: what was wrong is kept with it (`device_event.ingest_problems`, plus the raw bytes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from ingest import hooks, queries
from ingest.contract.envelope import Invalid, Limits, Reason, claimed_msg_id, now_utc, topic_parts
from ingest.contract.events import DeviceEvent, Problem, Repair, parse_event
from ingest.contract.status import parse_status
from ingest.pipeline import Incoming, Quarantined, parse_failure, quarantine_params
from ingest.registry import DeviceRegistry
from store.db import is_transient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceAck:
    topic: str
    payload: bytes


def ack_topic(device_id: str) -> str:
    return f"eldercare/v1/devices/{device_id}/ack"


def _rejected_ack(device_id: str, message: Incoming, reason: str, detail: str) -> DeviceAck:
    """Tells the device to stop re-sending a message that will never be accepted."""
    ack = {
        "msg_id": claimed_msg_id(message.payload),
        "status": "rejected",
        "reason": reason,
        "detail": detail[:500],
    }
    return DeviceAck(ack_topic(device_id), orjson.dumps(ack))


class EventWriter:
    def __init__(self, conn: psycopg.Connection, limits: Limits) -> None:
        self.conn = conn
        self.limits = limits
        self.registry = DeviceRegistry()

    def handle(self, message: Incoming) -> DeviceAck | None:
        """Store one event or status message (or quarantine it); returns the ack to send the device.

        Raises the database's transient errors (store.db.is_transient): the caller retries then,
        without acknowledging anything.
        """
        parts = topic_parts(message.topic)
        if parts is None or parts[1] not in ("events", "status"):
            self._quarantine(message, None, Reason.BAD_TOPIC, "not an events or status topic")
            return None
        device_id, channel = parts
        with self.conn.transaction():
            self.registry.refresh_if_changed(self.conn)
        problem = self.registry.device_problem(device_id)
        if problem is Reason.UNKNOWN_DEVICE and channel == "events":
            # The broker let it log in, so it is registered somewhere: before refusing what may be
            # an SOS, look at the registry itself rather than the cache (rare, so cheap).
            with self.conn.transaction():
                self.registry.refresh_if_changed(self.conn, force=True)
            problem = self.registry.device_problem(device_id)
        if problem is Reason.UNKNOWN_DEVICE or (problem is not None and channel == "status"):
            what = "not registered" if problem is Reason.UNKNOWN_DEVICE else "retired"
            self._quarantine(message, device_id, problem, f"device {device_id} is {what}")
            return None
        try:
            if channel == "status":
                self._store_status(device_id, message)
                return None
            event = parse_event(device_id, message.payload, message.received_at, self.limits)
        except Invalid as exc:
            self._quarantine(message, device_id, exc.reason, exc.detail)
            if channel == "events":
                return _rejected_ack(device_id, message, exc.reason, exc.detail)
            return None
        except psycopg.Error as exc:  # status only: events are stored below
            if is_transient(exc):
                raise
            self._quarantine(message, device_id, Reason.STORAGE_ERROR, _refusal(exc))
            return None
        except Exception as exc:  # a parser bug: see pipeline.parse_failure
            log.exception("parsing a message from %s failed", device_id)
            failure = parse_failure(exc, message.payload)
            self._quarantine(message, device_id, failure.reason, failure.detail)
            return None
        if problem is Reason.RETIRED_DEVICE:
            if not event.is_emergency:
                detail = f"device {device_id} is retired"
                self._quarantine(message, device_id, problem, detail)
                return _rejected_ack(device_id, message, problem, detail)
            event = event.with_problem(
                Problem(Repair.RETIRED_DEVICE, f"device {device_id} is retired in the registry")
            )
        return self._store_event(device_id, event, message)

    def _store_event(
        self, device_id: str, event: DeviceEvent, message: Incoming
    ) -> DeviceAck | None:
        try:
            stored = self._insert_event(device_id, event, message)
        # Not only the database's refusals: encoding the payload as JSON can fail too (nesting).
        except (psycopg.Error, ValueError, TypeError, RecursionError) as exc:
            if isinstance(exc, psycopg.Error) and is_transient(exc):
                raise
            if not event.is_emergency:
                self._quarantine(message, device_id, Reason.STORAGE_ERROR, _refusal(exc))
                return _rejected_ack(device_id, message, Reason.STORAGE_ERROR, _refusal(exc))
            # Whatever in the payload the database refused, the emergency itself is stored.
            event = event.with_problem(
                Problem(Repair.PAYLOAD_REFUSED, f"{_refusal(exc)}: stored without its payload"),
                payload={},
            )
            try:
                stored = self._insert_event(device_id, event, message)
            except psycopg.Error as again:
                if is_transient(again):
                    raise
                # Not acknowledged: the device keeps re-sending it, in case this is repaired.
                log.critical("%s from %s could not be stored: %s", event.type, device_id, again)
                self._quarantine(message, device_id, Reason.STORAGE_ERROR, _refusal(again))
                return None
        if stored is not None:
            log.log(
                logging.WARNING if event.problems else logging.INFO,
                "event %s from %s (resident %s) stored as %s%s",
                event.type,
                device_id,
                stored.resident_id,
                stored.id,
                f" despite: {', '.join(stored.problems)}" if stored.problems else "",
            )
            hooks.fire(stored)
        # Re-sent after a crash or not, the device hears that its event arrived.
        ack: dict[str, Any] = {
            "msg_id": event.msg_id,
            "type": event.type,
            "status": "received",
            "received_at": message.received_at.isoformat(),
        }
        if event.problems:
            ack["problems"] = [p.repair.value for p in event.problems]
        return DeviceAck(ack_topic(device_id), orjson.dumps(ack))

    def _insert_event(
        self, device_id: str, event: DeviceEvent, message: Incoming
    ) -> hooks.StoredEvent | None:
        """The stored event, None when it was stored before (a re-send)."""
        # An event from a device bound to nobody is still stored: an SOS is never dropped.
        resident_id = self.registry.resident_at(device_id, event.occurred_at)
        problems = [p.as_json() for p in event.problems]
        with self.conn.transaction():
            row = self.conn.execute(
                queries.INSERT_EVENT,
                (
                    device_id,
                    event.msg_id,
                    event.type,
                    event.occurred_at,
                    message.received_at,
                    resident_id,
                    event.lat,
                    event.lon,
                    Jsonb(event.payload),
                    Jsonb(problems) if problems else None,
                    message.payload if problems else None,
                ),
            ).fetchone()
            if row is None:
                return None
            stored = hooks.StoredEvent(
                row[0],
                device_id,
                resident_id,
                event.type,
                event.occurred_at,
                message.received_at,
                event.lat,
                event.lon,
                tuple(p.repair.value for p in event.problems),
            )
            self.conn.execute(queries.NOTIFY_EVENT, (orjson.dumps(stored.as_json()).decode(),))
        return stored

    def _store_status(self, device_id: str, message: Incoming) -> None:
        status = parse_status(device_id, message.payload, now_utc(), self.limits)
        with self.conn.transaction():
            self.conn.execute(
                queries.INSERT_PRESENCE,
                (device_id, status.reported_at, status.online, status.battery, status.firmware),
            )
            self.conn.execute(
                queries.UPDATE_PRESENCE,
                {
                    "device_id": device_id,
                    "online": status.online,
                    "battery": status.battery,
                    "firmware": status.firmware,
                    "received_at": message.received_at,
                },
            )

    def _quarantine(
        self, message: Incoming, device_id: str | None, reason: Reason, detail: str
    ) -> None:
        item = Quarantined(
            message.received_at, message.topic, device_id, reason.value, detail, message.payload
        )
        with self.conn.transaction():
            self.conn.execute(queries.INSERT_QUARANTINE, quarantine_params(item))


def _refusal(exc: Exception) -> str:
    if isinstance(exc, psycopg.Error):
        return f"the database refused it: {exc.diag.message_primary or exc}"[:500]
    return f"it could not be encoded for the database: {type(exc).__name__}: {exc}"[:500]
