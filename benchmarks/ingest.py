"""`eldercare bench ingest`: capacity and latency of the real pipeline on loopback.

Everything is real and private to the run: a throwaway database on the configured (or local)
PostgreSQL server, the project's Mosquitto on a free port, and `eldercare ingest` as a subprocess.
- capacity: N messages (3 readings each, QoS 1) wait in the broker for the ingest session, then the
  ingestor drains them with its normal durability (ack after commit) and deduplication;
- latency: a steady live rate; publish→commit per message, observed through each device's
  highest committed msg_id (devices publish in order and one ingestor commits in order);
- peak RSS of the ingest process (VmHWM).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import paho.mqtt.client as paho
from rich.progress import Progress

from devices import broker_auth, service
from eldercare.broker import Broker
from eldercare.mqtt import connect_blocking, new_client
from eldercare.settings import MqttEndpoint, load_settings
from store import db

SERVICE_USER = "eldercare-service"


@dataclass
class BenchResult:
    messages: int
    readings: int
    msg_per_s: float
    readings_per_s: float
    latency_rate_per_s: int
    latency_messages: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    peak_rss_mb: float
    storage: str
    machine: str


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} CPU ({cpu}), {mem_gib:.0f} GiB RAM, Python {platform.python_version()}"
    )


class BenchSystem:
    """A throwaway database, a private broker and helpers to run eldercare processes against them."""

    def __init__(self, server_url: str, devices: int, progress: Progress) -> None:
        self.progress = progress
        self.tmp = Path(tempfile.mkdtemp(prefix="eldercare-bench-"))
        self.url = db.with_dbname(server_url, f"eldercare_bench_{uuid.uuid4().hex[:8]}")
        self.password = uuid.uuid4().hex
        self.device_ids = [f"bench-{i:03d}" for i in range(devices)]
        self.broker = Broker(self.tmp / "mosquitto")
        self.endpoint = MqttEndpoint("127.0.0.1", self.broker.port)
        self.ingest: subprocess.Popen[bytes] | None = None
        self._subscribed_target = 0

    def setup(self) -> str:
        db.ensure_database(self.url)
        # The layout the settings ask for (ELDERCARE_TIMESCALE=off measures plain PostgreSQL).
        db.migrate(self.url, timescale=load_settings().timescale)
        with db.connection(self.url, autocommit=True) as conn:
            service.ensure_service_account(conn, username=SERVICE_USER, password=self.password)
            resident = service.add_resident(conn, name="基准测试")
            since = datetime.now(UTC) - timedelta(days=2)
            for device_id in self.device_ids:
                service.add_device(
                    conn,
                    device_id=device_id,
                    kind="wristband",
                    resident_id=resident.id,
                    bound_from=since,
                )
            self.broker.write_config()
            broker_auth.sync(conn, self.broker.passwd_path, self.broker.acl_path, None)
            storage = db.storage_kind(conn)
        self.broker.start()
        return storage

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "ELDERCARE_DATABASE_URL": self.url,
            "ELDERCARE_MQTT_URL": f"mqtt://127.0.0.1:{self.broker.port}",
            "ELDERCARE_MQTT_SERVICE_PASSWORD": self.password,
            "ELDERCARE_VAR_DIR": str(self.tmp / "var"),
            "ELDERCARE_INGEST_SHARE_GROUP": "bench",
            "ELDERCARE_LOG_LEVEL": "INFO",
        }

    def spawn(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        """Start `eldercare <args>` against this system, output to a log file in the temp dir."""
        with open(self.tmp / log, "ab") as handle:
            exe = str(Path(sys.executable).with_name("eldercare"))
            return subprocess.Popen(
                [exe, *args], env=self.env(), stdout=handle, stderr=subprocess.STDOUT
            )

    def start_ingest(self, role: str = "all") -> None:
        log = self.tmp / "ingest.log"
        seen = log.read_bytes().count(b"subscribed to") if log.exists() else 0
        self._subscribed_target = seen + (2 if role == "all" else 1)
        self.ingest = self.spawn("ingest", "--instance", "bench", "--role", role, log="ingest.log")

    def stop_ingest(self) -> float:
        """Stop the ingestor; returns its peak RSS in MiB."""
        assert self.ingest is not None
        peak_kb = 0
        try:
            for line in Path(f"/proc/{self.ingest.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = int(line.split()[1])
        except OSError:
            pass
        self.ingest.terminate()
        self.ingest.wait(30)
        return peak_kb / 1024

    def wait_session(self) -> None:
        """Start the ingestor once so the broker holds its persistent shared subscriptions."""
        self.start_ingest()
        self.wait_session_started()

    def wait_session_started(self) -> None:
        """Wait until the ingestor started last has subscribed (each of its sessions)."""
        deadline = time.monotonic() + 30
        log = self.tmp / "ingest.log"
        while time.monotonic() < deadline:
            if log.exists() and log.read_bytes().count(b"subscribed to") >= self._subscribed_target:
                return
            time.sleep(0.05)
        raise RuntimeError(f"the ingestor did not subscribe; see {log}")

    def device_client(self, device_id: str, password: str) -> paho.Client:
        """A connected client logged in as a device (retrying while the broker reloads its logins)."""
        client = new_client(f"bench-{device_id}", username=device_id, password=password)
        deadline = time.monotonic() + 15
        while True:
            try:
                connect_blocking(client, self.endpoint)
                return client
            except ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def publisher(self) -> paho.Client:
        client = new_client(
            f"bench-pub-{uuid.uuid4().hex[:6]}", username=SERVICE_USER, password=self.password
        )
        client.max_inflight_messages_set(1000)
        connect_blocking(client, self.endpoint)
        return client

    def stored_readings(self) -> int:
        with db.connection(self.url) as conn:
            row = conn.execute("SELECT count(*) FROM reading").fetchone()
        return int(row[0]) if row else 0

    def cleanup(self) -> None:
        if self.ingest is not None and self.ingest.poll() is None:
            self.ingest.kill()
            self.ingest.wait()
        self.broker.stop()
        db.drop_database(self.url)


def _payload(seq: int, ts_ms: int) -> bytes:
    return orjson.dumps(
        {
            "msg_id": f"{seq:012d}",
            "ts": ts_ms,
            "readings": {
                "heart_rate": 60 + seq % 40,
                "spo2": 95 + seq % 5,
                "resp_rate": 14 + seq % 4,
            },
        }
    )


def preload(bench: BenchSystem, messages: int) -> None:
    """Queue `messages` in the broker for the ingest session while no ingestor runs."""
    bench.wait_session()
    bench.stop_ingest()
    client = bench.publisher()
    start_ms = int((time.time() - 86_400) * 1000)
    task = bench.progress.add_task("pre-loading the broker", total=messages)
    infos = []
    devices = bench.device_ids
    for seq in range(messages):
        device = devices[seq % len(devices)]
        infos.append(
            client.publish(
                f"eldercare/v1/devices/{device}/telemetry", _payload(seq, start_ms + seq), qos=1
            )
        )
        if seq % 1000 == 999:
            infos[-1].wait_for_publish(60)
            bench.progress.update(task, completed=seq + 1)
    for info in infos:
        info.wait_for_publish(60)
    bench.progress.update(task, completed=messages)
    client.disconnect()
    client.loop_stop()


def capacity(bench: BenchSystem, messages: int) -> tuple[float, int]:
    """Pre-load `messages` for the stopped ingestor's session, then time the drain."""
    preload(bench, messages)
    expected = messages * 3
    drain = bench.progress.add_task("ingest draining", total=expected)
    began = time.monotonic()
    bench.start_ingest()
    while (stored := bench.stored_readings()) < expected:
        bench.progress.update(drain, completed=stored)
        if time.monotonic() - began > 600:
            raise RuntimeError(f"drain did not finish within 10 minutes ({stored}/{expected})")
        time.sleep(0.02)
    elapsed = time.monotonic() - began
    bench.progress.update(drain, completed=expected)
    return messages / elapsed, expected


def latency(bench: BenchSystem, rate: int, seconds: float) -> list[float]:
    """Publish live at `rate` msg/s; publish→commit latency of each message in ms."""
    total = int(rate * seconds)
    client = bench.publisher()
    devices = bench.device_ids
    sent_at: list[float] = [0.0] * total
    committed_at: list[float] = [0.0] * total
    done = threading.Event()

    def watch() -> None:
        # Per device, everything up to the highest committed msg_id is committed (in-order).
        query = "SELECT device_id, max(msg_id) FROM telemetry_message WHERE msg_id LIKE 'L%%' GROUP BY device_id"
        next_unseen = {d: i for i, d in enumerate(devices)}
        with db.connection(bench.url, autocommit=True) as conn:
            while not done.is_set():
                now = time.monotonic()
                for device_id, top in conn.execute(query):
                    top_seq = int(top[1:])
                    seq = next_unseen[device_id]
                    while seq <= top_seq:
                        committed_at[seq] = now
                        seq += len(devices)
                    next_unseen[device_id] = seq
                if all(v >= total for v in next_unseen.values()):
                    return
                time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    task = bench.progress.add_task(f"live at {rate} msg/s", total=total)
    began = time.monotonic()
    now_ms = int(time.time() * 1000)
    for seq in range(total):
        due = began + seq / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        device = devices[seq % len(devices)]
        payload = orjson.dumps(
            {
                "msg_id": f"L{seq:011d}",
                "ts": now_ms + seq,
                "readings": {"heart_rate": 70, "spo2": 97, "resp_rate": 15},
            }
        )
        sent_at[seq] = time.monotonic()
        client.publish(f"eldercare/v1/devices/{device}/telemetry", payload, qos=1)
        if seq % 200 == 0:
            bench.progress.update(task, completed=seq)
    bench.progress.update(task, completed=total)
    watcher.join(60)
    done.set()
    client.disconnect()
    client.loop_stop()
    return [(c - s) * 1000 for s, c in zip(sent_at, committed_at, strict=True) if c]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_bench(
    server_url: str, *, messages: int, rate: int, seconds: float, devices: int, quiet: bool
) -> BenchResult:
    with Progress(disable=quiet, transient=True) as progress:
        bench = BenchSystem(server_url, devices, progress)
        try:
            storage = bench.setup()
            msg_per_s, readings = capacity(bench, messages)
            latencies = latency(bench, rate, seconds)
            peak = bench.stop_ingest()
        finally:
            bench.cleanup()
    if len(latencies) < rate * seconds:
        raise RuntimeError(
            f"only {len(latencies)} of {int(rate * seconds)} live messages were committed"
        )
    return BenchResult(
        messages=messages,
        readings=readings,
        msg_per_s=round(msg_per_s, 1),
        readings_per_s=round(msg_per_s * 3, 1),
        latency_rate_per_s=rate,
        latency_messages=len(latencies),
        p50_ms=round(percentile(latencies, 0.50), 1),
        p99_ms=round(percentile(latencies, 0.99), 1),
        max_ms=round(max(latencies), 1),
        peak_rss_mb=round(peak, 1),
        storage=storage,
        machine=machine_description(),
    )


def as_dict(result: BenchResult) -> dict[str, object]:
    return asdict(result)
