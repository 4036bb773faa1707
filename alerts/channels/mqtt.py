"""MQTT channels: a doctor's mobile app topic, and the SOS/fall device's acknowledgement topic."""

from __future__ import annotations

import orjson

from alerts.channels.base import ChannelError, Delivery
from eldercare.mqtt import _Client


def doctor_topic(doctor_id: str | int) -> str:
    return f"eldercare/v1/doctors/{doctor_id}/alerts"


def device_ack_topic(device_id: str) -> str:
    return f"eldercare/v1/devices/{device_id}/ack"


class _Publisher:
    def __init__(self, client: _Client, timeout_s: float) -> None:
        self.client = client
        self.timeout_s = timeout_s

    def _publish(self, topic: str, delivery: Delivery) -> None:
        body = {**delivery.payload, "idempotency_key": delivery.idempotency_key}
        info = self.client.publish(topic, orjson.dumps(body), qos=1)
        try:
            info.wait_for_publish(self.timeout_s)
        except (RuntimeError, ValueError) as exc:
            raise ChannelError(f"MQTT publish to {topic} failed: {exc}") from None
        if not info.is_published():
            raise ChannelError(f"MQTT broker did not acknowledge the publish to {topic} in time")


class DoctorTopicChannel(_Publisher):
    """QoS 1 to `eldercare/v1/doctors/{id}/alerts`; delivered once the broker has acknowledged it."""

    name = "mqtt"

    def send(self, delivery: Delivery) -> None:
        self._publish(doctor_topic(delivery.recipient.id), delivery)


class DeviceAckChannel(_Publisher):
    """'Help is coming' for the device that raised an SOS or a fall."""

    name = "device_ack"

    def send(self, delivery: Delivery) -> None:
        self._publish(device_ack_topic(delivery.recipient.id), delivery)
