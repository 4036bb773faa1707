"""The production broker config (deploy/mosquitto/mosquitto.conf) run by the real Mosquitto: its TLS
listener takes logins, plaintext is refused there, and the short autosave keeps a crash's loss small.

Only the paths (/mosquitto/… → a temporary directory) and ports (free ones, on loopback) change.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from devices.broker_auth import Account, render_acl, render_passwd
from devices.credentials import hash_password
from eldercare.mqtt import connect_blocking, new_client
from eldercare.ports import free_port
from eldercare.settings import MqttEndpoint
from tests.support import wait_for

CONF = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto" / "mosquitto.conf"
DEVICE, PASSWORD = "wb-tls-1", "device-password"


@dataclass
class ProductionBroker:
    root: Path
    plain: int
    tls: int
    ca: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(self.root / "m.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(lambda: self.process.poll() is not None or _listening(self.tls), 10, "broker")
        assert self.process.poll() is None, "mosquitto refused the production config"

    def crash(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture()
def production_broker(tmp_path: Path) -> Iterator[ProductionBroker]:
    for sub in ("auth", "data", "tls"):
        (tmp_path / sub).mkdir()
    tls = tmp_path / "tls"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(tls / "server.key"), "-out", str(tls / "server.crt"),
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    accounts = [Account(DEVICE, hash_password(PASSWORD), "device")]
    (tmp_path / "auth" / "passwd").write_text(render_passwd(accounts))
    (tmp_path / "auth" / "acl").write_text(render_acl(accounts))
    for path in (tmp_path / "auth").iterdir():
        path.chmod(0o600)
    plain, tls_port = free_port(), free_port()
    text = CONF.read_text().replace("/mosquitto/", f"{tmp_path}/")
    assert "\nlistener 1883\n" in text and "\nlistener 8883\n" in text
    text = text.replace("\nlistener 1883\n", f"\nlistener {plain} 127.0.0.1\n")
    text = text.replace("\nlistener 8883\n", f"\nlistener {tls_port} 127.0.0.1\n")
    if os.geteuid() == 0:  # as root Mosquitto switches to a user who cannot read tmp_path
        text += "\nuser root\n"
    (tmp_path / "m.conf").write_text(text)
    broker = ProductionBroker(tmp_path, plain, tls_port, tls / "server.crt")
    broker.start()
    yield broker
    broker.stop()


def _tls_client(broker: ProductionBroker, password: str = PASSWORD) -> paho.Client:
    client = new_client(f"tls-{os.urandom(3).hex()}", username=DEVICE, password=password)
    client.tls_set(ca_certs=str(broker.ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    connect_blocking(client, MqttEndpoint("127.0.0.1", broker.tls))
    return client


def _close(client: paho.Client) -> None:
    client.disconnect()
    client.loop_stop()


def test_devices_log_in_over_tls_and_plaintext_is_refused_there(production_broker):
    client = _tls_client(production_broker)
    try:
        info = client.publish(f"eldercare/v1/devices/{DEVICE}/telemetry", b"{}", qos=1)
        info.wait_for_publish(10)
        assert info.is_published()
    finally:
        _close(client)
    with pytest.raises(ConnectionError):
        _tls_client(production_broker, password="wrong")
    plain = new_client("plain-on-tls", username=DEVICE, password=PASSWORD)
    with pytest.raises((ConnectionError, OSError)):
        connect_blocking(plain, MqttEndpoint("127.0.0.1", production_broker.tls), timeout=3)


def test_a_broker_crash_keeps_what_the_autosave_wrote(production_broker):
    status = f"eldercare/v1/devices/{DEVICE}/status"
    db_file = production_broker.root / "data" / "mosquitto.db"
    before = db_file.stat().st_mtime_ns if db_file.exists() else 0
    client = _tls_client(production_broker)
    try:
        client.publish(status, b'{"online": true}', qos=1, retain=True).wait_for_publish(10)
    finally:
        _close(client)
    # autosave_interval 10: saved within seconds (with 300, a crash now would lose it).
    wait_for(lambda: db_file.exists() and db_file.stat().st_mtime_ns > before, 15, "an autosave")
    production_broker.crash()  # kill -9: no save at shutdown
    production_broker.start()
    got: list[bytes] = []
    arrived = threading.Event()
    client = _tls_client(production_broker)
    client.on_message = lambda _c, _u, m: (got.append(m.payload), arrived.set())
    try:
        client.subscribe(status, qos=1)
        assert arrived.wait(10), "the retained status did not survive the crash"
        assert got == [b'{"online": true}']
    finally:
        _close(client)
