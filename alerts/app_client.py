"""A reference client of the doctors' app protocol (docs/alerts.md): logs in with a doctor's app
login, receives the notifications on `eldercare/v1/doctors/{id}/alerts` and acknowledges each on
`…/acks`, which is what makes the outbox count it delivered (alerts/app_acks.py).

`eldercare care app-listen` runs it: an operator checks a new app login end to end with it, and
`make run` uses it as the demo doctors' phones, so that their notifications are delivered instead
of waiting for an app that does not exist.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import paho.mqtt.client as paho

from alerts.channels.mqtt import doctor_acks_topic, doctor_topic
from eldercare.mqtt import connect_blocking, new_client
from eldercare.settings import MqttEndpoint

log = logging.getLogger(__name__)


class AppLoginRefused(RuntimeError):
    """The broker refused the login or the subscription: say which, and what to do."""


class DoctorAppClient:
    """Connected and subscribed once constructed; `on_notification` gets each notification's body
    (on paho's network thread: it must only print or hand over), then the client acknowledges it.
    A repeated copy is acknowledged again (the outbox may publish it again before our ack lands)."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        *,
        doctor_id: int,
        username: str,
        password: str,
        on_notification: Callable[[dict[str, Any]], None],
        timeout_s: float = 10.0,
    ) -> None:
        self.doctor_id = doctor_id
        self.on_notification = on_notification
        self.client = new_client(
            f"app-{doctor_id}-{uuid.uuid4().hex[:8]}", username=username, password=password
        )
        self.client.on_message = self._on_message
        try:
            connect_blocking(self.client, endpoint, timeout=timeout_s)
        except (ConnectionError, OSError, RuntimeError) as exc:
            raise AppLoginRefused(
                f"the broker did not accept {username}: {exc}. Create or rotate the login with "
                f"`eldercare care app-login {doctor_id} [--rotate]`; it takes effect at the next "
                "`eldercare broker sync`"
            ) from None
        answered = threading.Event()
        granted: list[bool] = []

        def on_subscribe(_c: Any, _u: Any, _m: Any, reasons: Any, _p: Any) -> None:
            granted.append(not reasons[0].is_failure)
            answered.set()

        self.client.on_subscribe = on_subscribe
        self.client.subscribe(doctor_topic(doctor_id), qos=1)
        if not answered.wait(timeout_s) or not granted[0]:
            self.close()
            raise AppLoginRefused(
                f"the broker refused {username} the topic {doctor_topic(doctor_id)}: is it "
                f"doctor {doctor_id}'s app login? (`eldercare care app-login {doctor_id}`)"
            )

    def _on_message(self, _c: object, _u: object, message: paho.MQTTMessage) -> None:
        try:
            body = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            log.warning("not JSON on %s; ignored", message.topic)
            return
        if not isinstance(body, dict):
            log.warning("not a notification on %s; ignored", message.topic)
            return
        self.on_notification(body)
        notification_id = body.get("notification_id")
        if isinstance(notification_id, int):
            # On the network thread: publish without waiting (QoS 1, paho resends on reconnect).
            self.client.publish(
                doctor_acks_topic(self.doctor_id),
                orjson.dumps({"notification_id": notification_id}),
                qos=1,
            )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
