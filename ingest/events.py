"""Emergency events and device status: stored one by one, at once, never behind telemetry batches."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson
import psycopg
from psycopg.types.json import Jsonb

from ingest import hooks, queries
from ingest.contract import Invalid, Limits, Reason, now_utc, parse_event, parse_status, topic_parts
from ingest.pipeline import Incoming, Quarantined, _quarantine_params
from ingest.registry import DeviceRegistry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceAck:
    topic: str
    payload: bytes


def ack_topic(device_id: str) -> str:
    return f"eldercare/v1/devices/{device_id}/ack"


class EventWriter:
    def __init__(self, conn: psycopg.Connection, limits: Limits) -> None:
        self.conn = conn
        self.limits = limits
        self.registry = DeviceRegistry()

    def handle(self, message: Incoming) -> DeviceAck | None:
        """Store one event or status message (or quarantine it); returns the ack to send the device."""
        parts = topic_parts(message.topic)
        try:
            if parts is None or parts[1] not in ("events", "status"):
                raise Invalid(Reason.BAD_TOPIC, "not an events or status topic")
            device_id, channel = parts
            with self.conn.transaction():
                self.registry.refresh_if_changed(self.conn)
            problem = self.registry.device_problem(device_id)
            if problem is not None:
                raise Invalid(
                    problem,
                    f"device {device_id} is {'not registered' if problem is Reason.UNKNOWN_DEVICE else 'retired'}",
                )
            if channel == "status":
                self._store_status(device_id, message)
                return None
            return self._store_event(device_id, message)
        except Invalid as exc:
            self._quarantine(message, parts[0] if parts else None, exc.reason.value, exc.detail)
            return None
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            self.conn.rollback()
            detail = f"the database refused it: {exc.diag.message_primary or exc}"
            self._quarantine(
                message, parts[0] if parts else None, Reason.STORAGE_ERROR.value, detail
            )
            return None

    def _store_event(self, device_id: str, message: Incoming) -> DeviceAck:
        event = parse_event(device_id, message.payload, now_utc(), self.limits)
        # An event from a device bound to nobody is still stored: an SOS is never dropped.
        resident_id = self.registry.resident_at(device_id, event.occurred_at)
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
                ),
            ).fetchone()
            stored = None
            if row is not None:
                stored = hooks.StoredEvent(
                    row[0],
                    device_id,
                    resident_id,
                    event.type,
                    event.occurred_at,
                    message.received_at,
                    event.lat,
                    event.lon,
                )
                self.conn.execute(queries.NOTIFY_EVENT, (orjson.dumps(stored.as_json()).decode(),))
        if stored is not None:
            log.info(
                "event %s from %s (resident %s) stored as %s",
                event.type,
                device_id,
                resident_id,
                stored.id,
            )
            hooks.fire(stored)
        # Re-sent after a crash or not, the device hears that its event arrived.
        ack = {
            "msg_id": event.msg_id,
            "type": event.type,
            "status": "received",
            "received_at": message.received_at.isoformat(),
        }
        return DeviceAck(ack_topic(device_id), orjson.dumps(ack))

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
        self, message: Incoming, device_id: str | None, reason: str, detail: str
    ) -> None:
        item = Quarantined(
            message.received_at, message.topic, device_id, reason, detail, message.payload
        )
        with self.conn.transaction():
            self.conn.execute(queries.INSERT_QUARANTINE, _quarantine_params(item))
