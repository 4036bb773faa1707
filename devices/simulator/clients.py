"""One MQTT client per simulated device, logged in exactly as a real device: its id and password.

Each connects with a retained Last Will `{"online": false}` on its status topic and announces
itself with a retained `{"online": true, "battery": …}`; everything is published with QoS 1.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter, deque
from datetime import UTC, datetime
from typing import Any

import orjson
import paho.mqtt.client as paho

from devices.simulator.vitals import Message, epoch_ms
from eldercare.mqtt import Will, connect_blocking, new_client
from eldercare.settings import MqttEndpoint
from ingest.contract import TOPIC_PREFIX

RETRY_DELAY_S = 0.5


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
        self.clients[device_id] = client
        self._send(device_id, "status", {"online": True, "battery": battery, "ts": _now_ms()}, True)

    def publish(self, device_id: str, message: Message) -> None:
        self._send(device_id, message.channel, message.payload, message.channel == "status")

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
        """Say offline (except devices that vanished), wait for acks, disconnect. Returns how many
        messages the broker never acknowledged."""
        for device_id in self.clients:
            if device_id not in vanished:
                self._send(device_id, "status", {"online": False, "ts": _now_ms()}, True)
        deadline = time.monotonic() + timeout
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
