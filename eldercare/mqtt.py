"""The one thin wrapper around paho-mqtt (v2 callback API, MQTT v5) that every process uses.

Callbacks only decode and hand over; batching and database work happen on other threads. A hand-over
may block on purpose: ingest's bounded inbox stops paho's network thread when full, so the socket is
no longer read and the broker holds (and limits) the backlog instead of our memory. paho's own
network thread reconnects with backoff; `Connection` re-subscribes on every (re)connect and counts
connection generations so that acknowledgements never cross into a newer session.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.client import PUBACK
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from eldercare.settings import MqttEndpoint

log = logging.getLogger(__name__)

DAY_S = 24 * 3600
SESSION_EXPIRY_S = 7 * DAY_S


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class _BufferedSocket:
    """Reads the socket 64 KiB at a time and hands paho the bytes it asks for.

    paho reads each packet's header a byte at a time, one system call each; under load that was a
    large share of the ingestor's CPU (profiled with py-spy). `pending()` is the hook paho already
    uses for TLS sockets: while it is non-zero, paho reads on without waiting in select().
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._data = b""
        self._pos = 0

    def recv(self, size: int) -> bytes:
        if self._pos >= len(self._data):
            self._data = self._sock.recv(65536)  # BlockingIOError when nothing is there
            self._pos = 0
            if not self._data:
                return b""
        end = self._pos + size
        chunk = self._data[self._pos : end]
        self._pos = min(end, len(self._data))
        return chunk

    def pending(self) -> int:
        return len(self._data) - self._pos

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


RawHandler = Callable[[str, bytes, int, bool], None]


class _Client(paho.Client):
    # Set by Connection: QoS 0 and 1 PUBLISHes go straight to it as (topic, payload, mid, retain),
    # mid 0 for QoS 0 (which has no packet identifier; real ones are 1-65535).
    raw_publish_handler: RawHandler | None = None

    def _handle_publish(self) -> MQTTErrorCode:
        """A lean decoder for the ingest hot path: no MQTTMessage, no Properties objects, no
        per-topic callback matching — together half of paho's per-message cost (py-spy)."""
        handler = self.raw_publish_handler
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        if handler is None or qos > 1 or self._protocol != MQTTProtocolVersion.MQTTv5:
            return super()._handle_publish()
        packet = self._in_packet["packet"]
        topic_end = 2 + int.from_bytes(packet[0:2], "big")
        topic = packet[2:topic_end].decode("utf-8", errors="replace")
        if qos:
            mid = int.from_bytes(packet[topic_end : topic_end + 2], "big")
            pos = topic_end + 2
        else:
            # A device that publishes with QoS 0 gets no guarantee, but what arrives is stored.
            mid, pos = 0, topic_end
        multiplier, properties_length = 1, 0
        while True:  # the properties' length, an MQTT variable byte integer
            byte = packet[pos]
            pos += 1
            properties_length += (byte & 0x7F) * multiplier
            if not byte & 0x80:
                break
            multiplier *= 128
        try:
            handler(topic, bytes(packet[pos + properties_length :]), mid, bool(header & 0x01))
        except Exception:
            log.exception("message handler failed for %s", topic)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _create_socket(self) -> Any:
        return _BufferedSocket(super()._create_socket())

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        # Drain what is already buffered instead of one select() round per packet.
        rc = super().loop_read(max_packets)
        sock = self._sock
        for _ in range(10_000):
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or sock is not self._sock:
                break
            if not isinstance(sock, _BufferedSocket) or not sock.pending():
                break
            rc = super().loop_read(1)
        return rc


def new_client(
    client_id: str,
    *,
    username: str | None,
    password: str | None,
    manual_ack: bool = False,
    will: Will | None = None,
) -> _Client:
    client = _Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=manual_ack,
    )
    if username is not None:
        client.username_pw_set(username, password)
    if will is not None:
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    client.max_queued_messages_set(0)
    return client


def connect_properties(session_expiry_s: int, receive_maximum: int | None = None) -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = session_expiry_s
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    return props


def connect_blocking(
    client: paho.Client,
    endpoint: MqttEndpoint,
    *,
    clean_start: bool = True,
    session_expiry_s: int = 0,
    timeout: float = 10.0,
) -> None:
    """Connect and start the network thread; raise with a clear message if the broker refuses."""
    done = threading.Event()
    result: list[ReasonCode] = []

    def on_connect(_c: paho.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        result.append(reason)
        done.set()

    client.on_connect = on_connect
    client.connect(
        endpoint.host,
        endpoint.port,
        keepalive=30,
        clean_start=clean_start,
        properties=connect_properties(session_expiry_s),
    )
    client.loop_start()
    if not done.wait(timeout) or result[0].is_failure:
        client.loop_stop()
        client.disconnect()
        why = str(result[0]) if result else "no answer"
        raise ConnectionError(
            f"MQTT broker {endpoint.host}:{endpoint.port} refused the connection: {why}"
        )


def accepts_login(
    endpoint: MqttEndpoint, username: str, password: str, timeout: float = 5.0
) -> bool:
    """True when the broker lets this username/password connect (used by tests and `broker sync`)."""
    client = new_client(f"probe-{username}", username=username, password=password)
    try:
        connect_blocking(client, endpoint, timeout=timeout)
    except (ConnectionError, OSError):
        return False
    client.disconnect()
    client.loop_stop()
    return True


# (topic, payload, mid, generation)
MessageHandler = Callable[[str, bytes, int, int], None]


class Connection:
    """A long-lived subscriber: persistent session, QoS 1, re-subscribes after every reconnect.

    `on_message(topic, payload, mid, generation)` runs on paho's network thread; it must only hand
    over, never touch the database. It may block only to push back (a full bounded inbox): the
    socket is then not read and keepalives wait too: in a long outage the broker may end the
    connection, and redelivers what was not acknowledged to the persistent session. QoS 0
    messages come with mid 0.
    `ack(mid, generation)` may be called from any thread; acks of an older generation are dropped,
    because the broker redelivers those messages on the new session anyway.
    """

    def __init__(
        self,
        *,
        client_id: str,
        endpoint: MqttEndpoint,
        username: str | None,
        password: str | None,
        subscriptions: Iterable[str],
        on_message: MessageHandler,
        session_expiry_s: int = SESSION_EXPIRY_S,
        manual_ack: bool = True,
        receive_maximum: int | None = None,
    ) -> None:
        self.client_id = client_id
        self.endpoint = endpoint
        self.subscriptions = list(subscriptions)
        self.session_expiry_s = session_expiry_s
        self.receive_maximum = receive_maximum
        self.generation = 0
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self._handler = on_message
        self._lock = threading.Lock()
        self.client = new_client(
            client_id, username=username, password=password, manual_ack=manual_ack
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.raw_publish_handler = self._on_publish

    def start(self) -> None:
        self.client.connect_async(
            self.endpoint.host,
            self.endpoint.port,
            keepalive=30,
            clean_start=False,
            properties=connect_properties(self.session_expiry_s, self.receive_maximum),
        )
        self.client.loop_start()

    def stop(self, *, end_session: bool = False) -> None:
        """Disconnect; with end_session the broker forgets the session (`ingest --leave`)."""
        props = None
        if end_session:
            props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0
        self.client.disconnect(properties=props)
        self.client.loop_stop()
        # paho closes its wake-up socket pair only when the client is garbage-collected, which for
        # a client in a reference cycle (callbacks bound to this object) may be never.
        self.client._reset_sockets()

    def ack(self, mid: int, generation: int) -> None:
        """mid 0 (a QoS 0 message) needs no acknowledgement."""
        with self._lock:
            if mid and generation == self.generation:
                self.client.ack(mid, 1)

    def ack_many(self, acks: Iterable[tuple[int, int]]) -> None:
        """Acknowledge (mid, generation) pairs with one write instead of one packet each."""
        with self._lock:
            packet = b"".join(
                struct.pack("!BBH", PUBACK, 2, mid)
                for mid, gen in acks
                if mid and gen == self.generation
            )
            if packet:
                # paho queues raw packets; PUBACKs need no bookkeeping on the client side.
                self.client._packet_queue(PUBACK, packet, 0, 0)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain)

    def _on_connect(
        self,
        client: paho.Client,
        _u: object,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        _p: object,
    ) -> None:
        if reason.is_failure:
            log.error("%s: broker refused the connection: %s", self.client_id, reason)
            return
        with self._lock:
            self.generation += 1
        self.connected.set()
        log.info(
            "%s connected to %s:%s (session present: %s)",
            self.client_id,
            self.endpoint.host,
            self.endpoint.port,
            flags.session_present,
        )
        # Subscribing again is harmless with a resumed session and required without one.
        client.subscribe([(topic, 1) for topic in self.subscriptions])

    def _on_subscribe(
        self, _c: paho.Client, _u: object, _mid: int, reasons: list[ReasonCode], _p: object
    ) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            log.error("%s: subscription refused: %s", self.client_id, ", ".join(failed))
            return
        log.info("%s subscribed to %s", self.client_id, ", ".join(self.subscriptions))
        self.subscribed.set()

    def _on_disconnect(
        self, _c: paho.Client, _u: object, _f: object, reason: ReasonCode, _p: object
    ) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if reason.is_failure:
            log.warning("%s disconnected (%s); reconnecting", self.client_id, reason)

    def _on_publish(self, topic: str, payload: bytes, mid: int, _retain: bool) -> None:
        self._handler(topic, payload, mid, self.generation)
