"""Helpers shared by the tests: waiting for conditions, devices that publish, the CLI, processes."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
import paho.mqtt.client as paho

from eldercare.mqtt import connect_blocking, new_client
from eldercare.settings import MqttEndpoint

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
ELDERCARE = str(Path(sys.executable).with_name("eldercare"))


def wait_for(predicate: Callable[[], T], timeout: float = 20.0, what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def now_ms() -> int:
    return int(time.time() * 1000)


def new_msg_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Device:
    device_id: str
    password: str
    resident_id: int | None
    endpoint: MqttEndpoint
    _client: paho.Client | None = field(default=None, repr=False)

    def topic(self, channel: str) -> str:
        return f"eldercare/v1/devices/{self.device_id}/{channel}"

    def client(self) -> paho.Client:
        if self._client is None:
            client = new_client(
                f"dev-{self.device_id}-{uuid.uuid4().hex[:6]}",
                username=self.device_id,
                password=self.password,
            )
            connect_blocking(client, self.endpoint)
            self._client = client
        return self._client

    def publish(
        self, channel: str, payload: Any, *, raw: bool = False, retain: bool = False
    ) -> None:
        data = payload if raw else orjson.dumps(payload)
        info = self.client().publish(self.topic(channel), data, qos=1, retain=retain)
        info.wait_for_publish(10)
        assert info.is_published(), f"publish to {self.topic(channel)} not acknowledged"

    def telemetry(
        self, readings: dict[str, float], ts: Any = None, msg_id: str | None = None
    ) -> str:
        msg_id = msg_id or new_msg_id()
        self.publish(
            "telemetry",
            {"msg_id": msg_id, "ts": ts if ts is not None else now_ms(), "readings": readings},
        )
        return msg_id

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None


class _MessageLog:
    """What an MQTT test client received, with a wait on it (Subscriber, DoctorApp)."""

    client: paho.Client
    messages: list[tuple[str, bytes]]
    _cond: threading.Condition

    def _record(self, message: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((message.topic, message.payload))
            self._cond.notify_all()

    def wait(
        self, predicate: Callable[[list[tuple[str, bytes]]], bool], timeout: float = 10
    ) -> list[tuple[str, bytes]]:
        with self._cond:
            assert self._cond.wait_for(lambda: predicate(self.messages), timeout), (
                f"got only {self.messages}"
            )
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Subscriber(_MessageLog):
    """Collects messages on a topic filter (e.g. a device's ack topic)."""

    def __init__(self, endpoint: MqttEndpoint, username: str, password: str, topic: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self.client = new_client(
            f"sub-{uuid.uuid4().hex[:8]}", username=username, password=password
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._ready.set()
        connect_blocking(self.client, endpoint)
        self.client.subscribe(topic, qos=1)
        assert self._ready.wait(10), "subscription not confirmed"

    def _on_message(self, _c: object, _u: object, message: paho.MQTTMessage) -> None:
        self._record(message)


class DoctorApp(_MessageLog):
    """A doctor's (or duty desk's) app: its own broker login, subscribed to the topics given (its
    alerts topic by default), acknowledging every notification on its acks topic like a real app,
    unless `acks` is False. `suback` holds the broker's answer to each subscription."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        username: str,
        password: str,
        doctor_id: int,
        *,
        topics: list[str] | None = None,
        acks: bool = True,
    ) -> None:
        self.doctor_id = doctor_id
        self.acks = acks
        self.topics = topics or [f"eldercare/v1/doctors/{doctor_id}/alerts"]
        self.messages: list[tuple[str, bytes]] = []
        self.suback: dict[str, bool] = {}  # topic -> granted
        self._cond = threading.Condition()
        self.client = new_client(
            f"app-{doctor_id}-{uuid.uuid4().hex[:6]}", username=username, password=password
        )
        self.client.on_message = self._on_message
        connect_blocking(self.client, endpoint)
        for topic in self.topics:
            done = threading.Event()

            def on_subscribe(
                _c: Any,
                _u: Any,
                _m: Any,
                reasons: Any,
                _p: Any,
                t: str = topic,
                answered: threading.Event = done,
            ) -> None:
                self.suback[t] = not reasons[0].is_failure
                answered.set()

            self.client.on_subscribe = on_subscribe
            self.client.subscribe(topic, qos=1)
            assert done.wait(10), f"no SUBACK for {topic}"

    def _on_message(self, _c: object, _u: object, message: paho.MQTTMessage) -> None:
        self._record(message)
        if self.acks and message.topic.endswith("/alerts"):
            body = orjson.loads(message.payload)
            self.ack(body["notification_id"], wait=False)  # the network thread: cannot wait here

    def ack(self, notification_id: Any, doctor_id: int | None = None, *, wait: bool = True) -> None:
        """Publish an acknowledgement (to another doctor's acks topic with `doctor_id`); `wait`:
        until the broker has taken it."""
        topic = f"eldercare/v1/doctors/{doctor_id or self.doctor_id}/acks"
        info = self.client.publish(topic, orjson.dumps({"notification_id": notification_id}), qos=1)
        if wait:
            info.wait_for_publish(10)
            assert info.is_published()

    def bodies(self) -> list[Any]:
        with self._cond:
            return [orjson.loads(p) for _t, p in self.messages]


def cli(
    *args: str, env: dict[str, str], check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [ELDERCARE, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"eldercare {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def cli_json(*args: str, env: dict[str, str]) -> Any:
    return json.loads(cli(*args, "--json", env=env).stdout)


class IngestProcess:
    """A real `eldercare ingest` process, for crash and scale-out tests."""

    def __init__(self, env: dict[str, str], instance: str, log_path: Path) -> None:
        self.env = env
        self.instance = instance
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log = None

    def start(self) -> IngestProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()/kill()
        self.process = subprocess.Popen(
            [ELDERCARE, "ingest", "--instance", self.instance],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        return self

    def wait_subscribed(self, times: int = 1, timeout: float = 30) -> None:
        """Wait until the telemetry subscription was confirmed `times` times in the log."""
        marker = f"eldercare-ingest-{self.instance}-telemetry subscribed to".encode()
        wait_for(
            lambda: self.log_path.read_bytes().count(marker) >= times,
            timeout,
            f"ingest {self.instance} subscribed",
        )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._close_log()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log:
            self._log.close()
            self._log = None


def mosquitto_pub(
    endpoint: MqttEndpoint, username: str, password: str, topic: str, payload: bytes, *extra: str
) -> subprocess.CompletedProcess[bytes]:
    """Publish with the stock Mosquitto client (MQTT v5, QoS 1), payload bytes from stdin."""
    return subprocess.run(
        [
            "mosquitto_pub",
            "-h",
            endpoint.host,
            "-p",
            str(endpoint.port),
            "-u",
            username,
            "-P",
            password,
            "-t",
            topic,
            "-q",
            "1",
            "-V",
            "5",
            "-s",
            *extra,
        ],
        input=payload,
        capture_output=True,
        timeout=30,
    )


class MailInbox:
    """An aiosmtpd handler that keeps every message it accepts (thread-safe: the server has its own
    thread)."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.envelopes.append(envelope)
        return "250 OK"

    def to(self, address: str) -> list[Any]:
        with self.lock:
            return [e for e in self.envelopes if address in e.rcpt_tos]


def wait_telemetry_stored(conn: Any, device_id: str, count: int) -> None:
    """Wait until `count` of the device's telemetry messages are stored."""
    wait_for(
        lambda: (
            conn.execute(
                "SELECT count(*) FROM telemetry_message WHERE device_id = %s", (device_id,)
            ).fetchone()[0]
            >= count
        ),
        what="telemetry stored",
    )


class TcpProxy:
    """Forwards to a server (the database); `down()` cuts every connection and refuses new ones,
    `freeze()` keeps them open but lets nothing through (a silent network partition: no reset,
    no answer). Outages of the test's own making: the system PostgreSQL is not touched.
    `accepted` counts the connections forwarded so far: what a client really opens."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.is_down = False
        self.frozen = False
        self.accepted = 0
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.is_down:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._sockets += [client, upstream]
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self.frozen:
                    sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def down(self) -> None:
        self.is_down = True
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def freeze(self) -> None:
        self.frozen = True

    def up(self) -> None:
        self.is_down = False

    def close(self) -> None:
        self.down()
        self.listener.close()


class SubscribeGate(TcpProxy):
    """A proxy in front of the broker that holds every client's SUBSCRIBE (and whatever that
    client sends after it) until `open()`: a broker slow to acknowledge subscriptions, so that a
    test can see what a system does between connecting and being subscribed."""

    def __init__(self, broker_port: int) -> None:
        self.opened = threading.Event()
        self.held_at: float | None = None  # when the first SUBSCRIBE was held
        super().__init__("127.0.0.1", broker_port)

    def open(self) -> None:
        self.opened.set()

    def close(self) -> None:
        self.opened.set()
        super().close()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:  # a socket the proxy accepted is the client's side: what it sends goes to the broker
            to_broker = source.getsockname()[1] == self.port
        except OSError:
            to_broker = False
        if not to_broker:
            super()._pump(source, sink)
            return
        buffer = b""
        try:
            while data := source.recv(65536):
                buffer += data
                while (end := _mqtt_packet_end(buffer)) is not None:
                    if buffer[0] >> 4 == 8 and not self.opened.is_set():  # SUBSCRIBE
                        self.held_at = self.held_at or time.monotonic()
                        self.opened.wait()
                    sink.sendall(buffer[:end])
                    buffer = buffer[end:]
        except OSError:
            pass
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def _mqtt_packet_end(buffer: bytes) -> int | None:
    """Length of the first whole MQTT packet in `buffer` (fixed header: type byte, then the
    remaining length as a variable byte integer), None while it is incomplete."""
    length, multiplier = 0, 1
    for index in range(1, min(len(buffer), 5)):
        length += (buffer[index] & 0x7F) * multiplier
        if not buffer[index] & 0x80:
            end = index + 1 + length
            return end if len(buffer) >= end else None
        multiplier *= 128
    return None
