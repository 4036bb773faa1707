"""MQTT channels: a doctor's mobile app topic, and the SOS/fall device's acknowledgement topic."""

from __future__ import annotations

import orjson
import paho.mqtt.client as paho

from alerts.channels.base import ChannelError, Delivery


def doctor_topic(doctor_id: str | int) -> str:
    return f"eldercare/v1/doctors/{doctor_id}/alerts"


def doctor_acks_topic(doctor_id: str | int) -> str:
    """Where the doctor's app acknowledges each notification: {"notification_id": N}."""
    return f"eldercare/v1/doctors/{doctor_id}/acks"


def device_ack_topic(device_id: str) -> str:
    return f"eldercare/v1/devices/{device_id}/ack"


class _Publisher:
    def __init__(self, client: paho.Client, timeout_s: float) -> None:
        self.client = client
        self.timeout_s = timeout_s

    def _publish(self, topic: str, delivery: Delivery, **extra: object) -> None:
        body = {**delivery.payload, "idempotency_key": delivery.idempotency_key, **extra}
        info = self.client.publish(topic, orjson.dumps(body), qos=1)
        try:
            info.wait_for_publish(self.timeout_s)
        except (RuntimeError, ValueError) as exc:
            raise ChannelError(f"MQTT publish to {topic} failed: {exc}") from None
        if not info.is_published():
            raise ChannelError(f"MQTT broker did not acknowledge the publish to {topic} in time")


class DoctorTopicChannel(_Publisher):
    """QoS 1 to `eldercare/v1/doctors/{id}/alerts`. The broker's PUBACK says only that the broker
    took it (with nobody subscribed, it is gone): delivered once the doctor's app acknowledges the
    `notification_id` on its acks topic (alerts/app_acks.py); until then the outbox publishes it
    again now and then."""

    name = "mqtt"
    awaits_ack = True

    def send(self, delivery: Delivery) -> None:
        doctor = delivery.recipient.id
        self._publish(doctor_topic(doctor), delivery, notification_id=delivery.notification_id)
        if not delivery.recipient.app_login:
            # Published for whoever may listen, but no app of this doctor can log in to receive
            # and acknowledge it: say so at once instead of publishing it again for a day.
            raise ChannelError(
                f"published, but doctor {doctor} has no app login to receive and acknowledge it "
                f"(eldercare care app-login {doctor})",
                retryable=False,
            )


class DeviceAckChannel(_Publisher):
    """'Help is coming' for the device that raised an SOS or a fall."""

    name = "device_ack"

    def send(self, delivery: Delivery) -> None:
        self._publish(device_ack_topic(delivery.recipient.id), delivery)
