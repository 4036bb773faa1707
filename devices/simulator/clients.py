"""One MQTT client per simulated device, logged in exactly as a real device: its id and password.

Each connects with a retained Last Will `{"online": false}` on its status topic and announces
itself with a retained `{"online": true, "battery": …}`; everything is published with QoS 1.

Like a real emergency button (docs/mqtt.md), a device re-sends an SOS or fall, with the same
`msg_id`, until the backend answers it on the device's `ack` topic: a PUBACK only says the broker
took it, the backend's ack says it was stored and handed to alerting.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter, deque
from datetime import UTC, datetime
from typing import Any

import orjson
import paho.mqtt.client as paho

from devices.simulator.vitals import Message, epoch_ms
from eldercare.mqtt import Will, connect_blocking, new_client
from eldercare.settings import MqttEndpoint
from ingest.contract.envelope import TOPIC_PREFIX

RETRY_DELAY_S = 0.5
EMERGENCIES = ("sos", "fall")
RESEND_AFTER_S = 5.0  # "re-send … if it does not arrive within a few seconds" (docs/mqtt.md)
RESEND_FOR_S = 300.0  # then the button gives up and shows that nobody answered


class _Emergency:
    def __init__(self, payload: Any, now: float) -> None:
        self.payload = payload
        self.first_sent = now
        self.next_at = now + RESEND_AFTER_S


def topic(device_id: str, channel: str) -> str:
    return f"{TOPIC_PREFIX}{device_id}/{channel}"


class DeviceClients:
    """The connected devices of one run; always `close` it (that also ends the network threads)."""

    def __init__(self, endpoint: MqttEndpoint) -> None:
        self.endpoint = endpoint
        self.clients: dict[str, paho.Client] = {}
        self.sent: Counter[str] = Counter()  # by channel
        self.total_sent = 0
        self.acknowledged = 0
        self._pending: deque[paho.MQTTMessageInfo] = deque()
        # Emergencies the backend has not answered yet, by (device, msg_id); paho's network threads
        # remove them as the acks arrive.
        self._emergencies: dict[tuple[str, str], _Emergency] = {}
        self._lock = threading.Lock()
        self.emergencies_resent = 0
        self.emergencies_given_up = 0

    def connect(self, device_id: str, password: str, battery: int, deadline: float) -> None:
        """Connect as the device, retrying until `deadline` (monotonic): a login created moments
        ago is refused until the broker has re-read its password file."""
        will = Will(topic(device_id, "status"), orjson.dumps({"online": False}))
        while True:
            client = new_client(
                f"{device_id}-sim", username=device_id, password=password, will=will
            )
            try:
                connect_blocking(client, self.endpoint, timeout=max(1.0, min(5.0, _left(deadline))))
                break
            except (ConnectionError, OSError) as exc:
                if _left(deadline) <= 0:
                    raise ConnectionError(
                        f"{exc} (as device {device_id}). Does the broker know the device yet? "
                        "Run `eldercare broker sync` for the broker started by `make run`."
                    ) from None
                time.sleep(RETRY_DELAY_S)
        client.on_message = lambda _c, _u, msg: self._on_ack(device_id, bytes(msg.payload))
        client.subscribe(topic(device_id, "ack"), qos=1)
        self.clients[device_id] = client
        self._send(device_id, "status", {"online": True, "battery": battery, "ts": _now_ms()}, True)

    def publish(self, device_id: str, message: Message) -> None:
        payload = message.payload
        if (
            message.channel == "events"
            and isinstance(payload, dict)
            and payload.get("type") in EMERGENCIES
        ):
            with self._lock:
                self._emergencies[(device_id, payload["msg_id"])] = _Emergency(
                    payload, time.monotonic()
                )
        self._send(device_id, message.channel, payload, message.channel == "status")

    def resend_due(self) -> None:
        """Send again every emergency the backend has not answered for RESEND_AFTER_S."""
        now = time.monotonic()
        with self._lock:
            due = [(k, e) for k, e in self._emergencies.items() if e.next_at <= now]
            for key, emergency in due:
                if now - emergency.first_sent > RESEND_FOR_S:
                    del self._emergencies[key]
                    self.emergencies_given_up += 1
                else:
                    emergency.next_at = now + RESEND_AFTER_S
        for (device_id, _msg_id), emergency in due:
            if now - emergency.first_sent <= RESEND_FOR_S and device_id in self.clients:
                self._send(device_id, "events", emergency.payload, False)
                self.emergencies_resent += 1

    @property
    def emergencies_unanswered(self) -> int:
        with self._lock:
            return len(self._emergencies) + self.emergencies_given_up

    def _on_ack(self, device_id: str, body: bytes) -> None:
        try:
            msg_id = orjson.loads(body).get("msg_id")
        except (orjson.JSONDecodeError, AttributeError):
            return
        with self._lock:
            self._emergencies.pop((device_id, msg_id), None)

    def _send(self, device_id: str, channel: str, payload: Any, retain: bool) -> None:
        info = self.clients[device_id].publish(
            topic(device_id, channel), orjson.dumps(payload), qos=1, retain=retain
        )
        self.sent[channel] += 1
        self.total_sent += 1
        self._pending.append(info)
        while self._pending and self._pending[0].is_published():
            self._pending.popleft()
            self.acknowledged += 1

    def close(self, *, vanished: frozenset[str] = frozenset(), timeout: float = 10.0) -> int:
        """Wait (within `timeout`) for the backend to answer outstanding emergencies, re-sending
        them; say offline (except devices that vanished), wait for acks, disconnect. Returns how
        many messages the broker never acknowledged."""
        deadline = time.monotonic() + timeout
        while self.emergencies_unanswered and _left(deadline) > 0:
            self.resend_due()
            time.sleep(min(0.05, max(0.0, _left(deadline))))
        for device_id in self.clients:
            if device_id not in vanished:
                self._send(device_id, "status", {"online": False, "ts": _now_ms()}, True)
        deadline = max(deadline, time.monotonic() + 1.0)
        unacknowledged = 0
        for info in self._pending:
            with contextlib.suppress(RuntimeError, ValueError):  # counted as unacknowledged
                info.wait_for_publish(max(0.0, _left(deadline)))
            if info.is_published():
                self.acknowledged += 1
            else:
                unacknowledged += 1
        self._pending.clear()
        for client in self.clients.values():
            client.disconnect()
            client.loop_stop()
        self.clients.clear()
        return unacknowledged


def _left(deadline: float) -> float:
    return deadline - time.monotonic()


def _now_ms() -> int:
    return epoch_ms(datetime.now(UTC))
