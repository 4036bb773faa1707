"""`eldercare drill`: faults under live load, on a system private to the run.

A PostgreSQL cluster of its own (eldercare/localdb.py), a Mosquitto of its own (eldercare/broker.py),
`eldercare ingest` (telemetry, and events with status, as deployed) and `eldercare alerts run` as
subprocesses. Telemetry is published live at a steady rate (QoS 1, unique msg_ids, 3 readings
each) from each scenario's own wristbands while SOS buttons are pressed at intervals; then the fault:
- db-outage: the cluster is stopped for `duration` seconds, then started again;
- broker-restart: Mosquitto is stopped, stays down `broker_down` seconds, and is started again
  (its persistence keeps sessions and queued messages);
- status-flood: one device publishes status as fast as `flood_rate` allows for `duration` seconds.
Afterwards everything published must be stored exactly once: lost and duplicated are counted in the
database. A process that exits is restarted, as a supervisor would, and counted. SOS latency is
press → the device's ack (sent after the event is committed).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from subprocess import Popen
from typing import Any

import orjson
import paho.mqtt.client as paho
import psycopg
from rich.progress import Progress

from benchmarks.ingest import SERVICE_USER, BenchSystem, machine_description, percentile
from care import service as care
from devices import broker_auth
from devices import service as devices
from devices.simulator.clients import RESEND_AFTER_S
from eldercare.localdb import PrivatePostgres
from eldercare.mqtt import connect_blocking, new_client
from store import db

SCENARIOS = ("db-outage", "broker-restart", "status-flood")
BANDS_PER_SCENARIO = 20
BUTTONS_PER_SCENARIO = 10
# After the load stops the backlog is stored; once the count has not moved for this long, what is
# missing counts as lost (a slow drain keeps moving, so it is never cut short).
DRAIN_STALL_S = 20.0
# An SOS press not acknowledged this long after the load stopped counts as unacknowledged.
ACK_WAIT_S = 15.0

STORED_MESSAGES = "SELECT count(*) FROM telemetry_message WHERE device_id LIKE %s"
STORED_READINGS = "SELECT count(*) FROM reading WHERE device_id LIKE %s"
STORED_SOS = "SELECT count(*), count(DISTINCT msg_id) FROM device_event WHERE device_id LIKE %s"
STORED_STATUS = "SELECT count(*) FROM device_presence WHERE device_id = %s"


@dataclass
class DrillOptions:
    duration_s: float = 60.0  # database outage / status flood
    rate: int = 2_000  # live telemetry, messages/s
    flood_rate: int = 5_000  # status/s from the flooding device
    broker_down_s: float = 5.0
    lead_s: float = 10.0  # live load before the fault
    tail_s: float = 10.0  # live load after the fault
    sos_interval_s: float = 0.5


@dataclass
class ScenarioResult:
    scenario: str
    published: int
    stored: int
    lost: int
    duplicated: int
    sos_pressed: int
    sos_stored: int
    sos_lost: int
    sos_duplicated: int
    sos_acked: int
    # Presses the device had to re-send (no ack within RESEND_AFTER_S): the first copy was lost or
    # slow.
    sos_resent: int
    sos_p50_ms: float | None
    sos_p99_ms: float | None
    status_published: int
    status_stored: int
    peak_rss_mb: dict[str, float]
    restarts: dict[str, int]
    seconds: float

    @property
    def failed(self) -> bool:
        return bool(self.lost or self.duplicated or self.sos_lost or self.sos_duplicated)


@dataclass
class DrillResult:
    scenarios: list[ScenarioResult]
    machine: str
    options: DrillOptions
    logs: str

    @property
    def failed(self) -> bool:
        return any(s.failed for s in self.scenarios)


@dataclass
class _Process:
    """A supervised eldercare subprocess: restarted when it exits, its peak RSS kept over all runs."""

    name: str
    args: tuple[str, ...]
    popen: Popen[bytes] | None = None
    peak_kb: int = 0
    restarts: int = 0

    def reset(self) -> None:
        """Start a new peak: VmHWM is reset to the current RSS (Linux: clear_refs 5)."""
        self.peak_kb, self.restarts = 0, 0
        if self.popen is not None:
            # Failing that, the peak is the process's since it started.
            with contextlib.suppress(OSError):
                Path(f"/proc/{self.popen.pid}/clear_refs").write_text("5")

    def sample(self) -> None:
        if self.popen is None:
            return
        try:
            for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))
        except OSError:
            pass  # between exit and restart


class Drill:
    def __init__(self, options: DrillOptions, progress: Progress) -> None:
        self.options = options
        self.progress = progress
        self.pg_dir = Path(tempfile.mkdtemp(prefix="eldercare-drill-pg-"))
        self.postgres = PrivatePostgres(self.pg_dir / "data")
        self.system: BenchSystem | None = None
        self.processes: list[_Process] = []
        self.broker = _Process("mosquitto", ())
        self._stop_sampler = threading.Event()
        self._sampler: threading.Thread | None = None
        # While set, exited processes are left alone (the drill itself is stopping them).
        self._supervise = threading.Event()
        self.passwords: dict[str, str] = {}
        self.residents: dict[str, int] = {}

    # -- the private system -------------------------------------------------------------------

    def setup(self) -> None:
        url = self.postgres.start()
        self.system = BenchSystem(url, 1, self.progress)
        self.system.setup()
        with db.connection(self.system.url, autocommit=True) as conn:
            centre = care.add_institution(conn, name="演练中心", kind="community_health_centre")
            doctor = care.add_doctor(conn, name="演练医生", institution_id=centre["id"])
            since = datetime.now(UTC) - timedelta(days=2)
            for scenario in SCENARIOS:
                tag = _tag(scenario)
                kinds = [("band", "wristband", BANDS_PER_SCENARIO)]
                kinds.append(("sos", "sos_button", BUTTONS_PER_SCENARIO))
                for part, kind, count in kinds:
                    for i in range(count):
                        resident = devices.add_resident(conn, name=f"演练{tag}{part}{i:02d}")
                        care.add_contract(
                            conn, resident_id=resident.id, doctor_id=doctor["id"], valid_from=since
                        )
                        device_id = f"{tag}-{part}-{i:02d}"
                        new = devices.add_device(
                            conn,
                            device_id=device_id,
                            kind=kind,
                            resident_id=resident.id,
                            bound_from=since,
                        )
                        self.passwords[device_id] = new.mqtt_password
            broker_auth.sync(
                conn, self.system.broker.passwd_path, self.system.broker.acl_path, None
            )
        self.system.broker.reload()
        base = ("ingest", "--instance", "drill", "--role")
        self.processes = [
            _Process("ingest telemetry", (*base, "telemetry")),
            _Process("ingest events+status", (*base, "events")),
            _Process("alerts", ("alerts", "run")),
        ]
        for process in self.processes:
            self._spawn(process)
        self._supervise.set()
        self._sampler = threading.Thread(target=self._sample, name="drill-sampler", daemon=True)
        self._sampler.start()
        # Ingest's sessions: telemetry 1, events and status 2.
        self._wait_log("ingest.log", b"subscribed to", 3, 60)

    def _spawn(self, process: _Process) -> None:
        assert self.system is not None
        process.popen = self.system.spawn(*process.args, log=_log_name(process.args))

    def _sample(self) -> None:
        while not self._stop_sampler.wait(0.2):
            for process in self.processes:
                process.sample()
                if (
                    self._supervise.is_set()
                    and process.popen is not None
                    and process.popen.poll() is not None
                ):
                    process.restarts += 1
                    time.sleep(1)  # a supervisor's restart delay
                    self._spawn(process)
            # The broker is sampled too (it holds the backlog), under its current pid.
            if self.system is not None and self.system.broker.process is not None:
                if self.broker.popen is not self.system.broker.process:
                    self.broker.popen = self.system.broker.process
                self.broker.sample()

    def _wait_log(self, log: str, marker: bytes, times: int, timeout_s: float) -> None:
        assert self.system is not None
        path = self.system.tmp / log
        deadline = time.monotonic() + timeout_s
        while not (path.exists() and path.read_bytes().count(marker) >= times):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{marker.decode()!r} did not appear in {path}")
            time.sleep(0.1)

    def cleanup(self) -> None:
        self._supervise.clear()
        self._stop_sampler.set()
        if self._sampler is not None:
            self._sampler.join(5)
        for process in self.processes:
            if process.popen is not None and process.popen.poll() is None:
                process.popen.terminate()
                try:
                    process.popen.wait(20)
                except subprocess.TimeoutExpired:
                    process.popen.kill()
                    process.popen.wait()
        try:
            if self.system is not None:
                self.system.cleanup()
        finally:
            self.postgres.stop()
            shutil.rmtree(self.pg_dir, ignore_errors=True)

    # -- one scenario ------------------------------------------------------------------------

    def run(self, scenario: str) -> ScenarioResult:
        assert self.system is not None
        opts = self.options
        tag = _tag(scenario)
        bands = [f"{tag}-band-{i:02d}" for i in range(BANDS_PER_SCENARIO)]
        buttons = [f"{tag}-sos-{i:02d}" for i in range(BUTTONS_PER_SCENARIO)]
        for process in (*self.processes, self.broker):
            process.reset()
        sos = _SosPresser(self.system, buttons, self.passwords, opts.sos_interval_s)
        stop = threading.Event()
        sent = [0]
        load = _thread(_publish_telemetry, self.system, bands, opts.rate, stop, sent)
        began = time.monotonic()
        fault, fault_s = self._fault(scenario)
        total_s = opts.lead_s + fault_s + opts.tail_s
        task = self.progress.add_task(f"{scenario}: live load", total=total_s)
        sos.start()
        load.start()
        flood_sent = [0]

        def tick(until: float) -> None:
            while (now := time.monotonic() - began) < until:
                self.progress.update(task, completed=now, description=f"{scenario}: {phase[0]}")
                time.sleep(0.2)

        phase = ["load before the fault"]
        tick(opts.lead_s)
        phase[0] = f"fault ({fault_s:g} s)"
        fault(lambda: tick(opts.lead_s + fault_s), flood_sent)
        phase[0] = "load after the fault"
        tick(total_s)
        stop.set()
        _join(load, 180)
        sos.stop()
        published = sent[0]
        drain = self.progress.add_task(f"{scenario}: storing the backlog", total=published)
        stored = self._count(STORED_MESSAGES, f"{tag}-band-%")
        moved = time.monotonic()
        while stored < published and time.monotonic() - moved < DRAIN_STALL_S:
            self.progress.update(drain, completed=stored)
            time.sleep(0.25)
            before, stored = stored, self._count(STORED_MESSAGES, f"{tag}-band-%")
            if stored != before:
                moved = time.monotonic()
        self.progress.update(drain, completed=stored)
        acks = sos.wait_acks(ACK_WAIT_S)
        readings = self._count(STORED_READINGS, f"{tag}-band-%")
        sos_rows, sos_distinct = self._rows(STORED_SOS, f"{tag}-sos-%")
        latencies = [acks[k] - t for k, t in sos.pressed.items() if k in acks]
        status_stored = self._count(STORED_STATUS, buttons[0]) if scenario == "status-flood" else 0
        return ScenarioResult(
            scenario=scenario,
            published=published,
            stored=stored,
            lost=max(0, published - stored),
            # Each message carries 3 readings with keys of their own: more rows are duplicates.
            duplicated=max(0, readings - 3 * stored) + max(0, stored - published),
            sos_pressed=len(sos.pressed),
            sos_stored=sos_distinct,
            sos_lost=len(sos.pressed) - sos_distinct,
            sos_duplicated=sos_rows - sos_distinct,
            sos_acked=len(latencies),
            sos_resent=len(sos.resent),
            sos_p50_ms=_ms(percentile(latencies, 0.5)) if latencies else None,
            sos_p99_ms=_ms(percentile(latencies, 0.99)) if latencies else None,
            status_published=flood_sent[0],
            status_stored=status_stored,
            peak_rss_mb={
                p.name: round(p.peak_kb / 1024, 1) for p in (*self.processes, self.broker)
            },
            restarts={p.name: p.restarts for p in self.processes},
            seconds=round(time.monotonic() - began, 1),
        )

    def _fault(
        self, scenario: str
    ) -> tuple[Callable[[Callable[[], None], list[int]], None], float]:
        """The fault's action (given a wait for its end and a counter) and its length in s."""
        assert self.system is not None
        system, opts = self.system, self.options

        def db_outage(wait: Callable[[], None], _count: list[int]) -> None:
            self.postgres.stop()
            wait()
            self.postgres.start()

        def broker_restart(wait: Callable[[], None], _count: list[int]) -> None:
            system.broker.stop()
            wait()
            system.broker.start()

        def status_flood(wait: Callable[[], None], count: list[int]) -> None:
            done = threading.Event()
            flooder = _thread(
                _flood_status, system, f"{_tag(scenario)}-sos-00", self.passwords, opts, done, count
            )
            flooder.start()
            wait()
            done.set()
            _join(flooder, 30)

        if scenario == "db-outage":
            return db_outage, opts.duration_s
        if scenario == "broker-restart":
            return broker_restart, opts.broker_down_s
        return status_flood, opts.duration_s

    def _rows(self, query: str, pattern: str) -> tuple[int, int]:
        assert self.system is not None
        # The database may still be starting after the outage: retry for a while.
        deadline = time.monotonic() + 60
        while True:
            try:
                with db.connection(self.system.url) as conn:
                    row = conn.execute(query, (pattern,)).fetchone()
                assert row is not None
                return int(row[0]), int(row[-1])
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _count(self, query: str, pattern: str) -> int:
        return self._rows(query, pattern)[0]


def _thread(target: Callable[..., None], *args: Any) -> threading.Thread:
    """A daemon thread whose exception is kept, to be raised by `_join`."""

    def run() -> None:
        try:
            target(*args)
        except BaseException as exc:
            thread.error = exc  # type: ignore[attr-defined]
            raise

    thread = threading.Thread(target=run, name=f"drill-{target.__name__}", daemon=True)
    thread.error = None  # type: ignore[attr-defined]
    return thread


def _join(thread: threading.Thread, timeout_s: float) -> None:
    thread.join(timeout_s)
    error = getattr(thread, "error", None)
    if error is not None:
        raise RuntimeError(f"{thread.name} failed: {error!r}") from error


class _SosPresser:
    """Presses the buttons in turn every `interval_s` and, as the device contract asks
    (docs/mqtt.md), re-sends a press with the same msg_id every RESEND_AFTER_S (the simulator's
    buttons' pace) until its ack arrives;
    records press and ack times per msg_id, and how many presses needed a re-send."""

    def __init__(
        self, system: BenchSystem, buttons: list[str], passwords: dict[str, str], interval_s: float
    ) -> None:
        self.interval_s = interval_s
        self.pressed: dict[str, float] = {}
        self.acked: dict[str, float] = {}
        self.resent: set[str] = set()
        self._bodies: dict[str, tuple[str, bytes]] = {}
        self._last_sent: dict[str, float] = {}
        self._arrived = threading.Condition()
        self._stop_pressing = threading.Event()
        self._closed = threading.Event()
        self.clients: dict[str, paho.Client] = {}
        for button in buttons:
            client = _connect(system, button, passwords[button])
            client.on_message = self._on_ack
            client.subscribe(f"eldercare/v1/devices/{button}/ack", qos=1)
            self.clients[button] = client
        self._thread = _thread(self._press)

    def _on_ack(self, _c: Any, _u: Any, message: Any) -> None:
        msg_id = orjson.loads(message.payload).get("msg_id")
        with self._arrived:
            self.acked.setdefault(str(msg_id), time.monotonic())
            self._arrived.notify_all()

    def _send(self, msg_id: str) -> None:
        button, payload = self._bodies[msg_id]
        self._last_sent[msg_id] = time.monotonic()
        self.clients[button].publish(f"eldercare/v1/devices/{button}/events", payload, qos=1)

    def _press(self) -> None:
        seq = 0
        buttons = list(self.clients)
        while not self._closed.wait(self.interval_s):
            if not self._stop_pressing.is_set():
                button = buttons[seq % len(buttons)]
                msg_id = f"{button}-{seq}"
                body = {"msg_id": msg_id, "type": "sos", "ts": int(time.time() * 1000)}
                self._bodies[msg_id] = (button, orjson.dumps(body))
                self.pressed[msg_id] = time.monotonic()
                self._send(msg_id)
                seq += 1
            now = time.monotonic()
            with self._arrived:
                waiting = [m for m in self.pressed if m not in self.acked]
            for msg_id in waiting:
                if now - self._last_sent[msg_id] >= RESEND_AFTER_S:
                    self.resent.add(msg_id)
                    self._send(msg_id)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """No more presses; re-sends go on until `wait_acks` ends."""
        self._stop_pressing.set()

    def wait_acks(self, timeout_s: float) -> dict[str, float]:
        with self._arrived:
            self._arrived.wait_for(lambda: self.pressed.keys() <= self.acked.keys(), timeout_s)
        self._closed.set()
        _join(self._thread, 10)
        for client in self.clients.values():
            client.disconnect()
            client.loop_stop()
        return dict(self.acked)


def _publish_telemetry(
    system: BenchSystem, bands: list[str], rate: int, stop: threading.Event, sent: list[int]
) -> None:
    """QoS 1 at `rate` msg/s, paced per 10 ms; msg_ids and timestamps unique per device. Messages
    published while the broker is away wait in the client and go out after its reconnect."""
    client = _connect(system, SERVICE_USER, system.password)
    tag = bands[0].split("-", 1)[0]
    # An hour ago and 1 ms apart: inside the backfill window, never in the future.
    base_ms = int(time.time() * 1000) - 3_600_000
    began = time.monotonic()
    seq = 0
    while not stop.is_set():
        due = int((time.monotonic() - began) * rate)
        while seq < due:
            device = bands[seq % len(bands)]
            body = {
                "msg_id": f"{tag}{seq:011d}",
                "ts": base_ms + seq,
                "readings": {"heart_rate": 60 + seq % 40, "spo2": 95 + seq % 5, "resp_rate": 15},
            }
            client.publish(f"eldercare/v1/devices/{device}/telemetry", orjson.dumps(body), qos=1)
            seq += 1
        sent[0] = seq
        time.sleep(0.01)
    # The client keeps sending what is queued; leave it connected until the broker has it all.
    deadline = time.monotonic() + 120
    while client.want_write() or _in_flight(client):
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    client.disconnect()
    client.loop_stop()


def _connect(system: BenchSystem, username: str, password: str) -> paho.Client:
    """A client with a persistent session, as a real device keeps: across a broker restart its
    subscriptions stay and unacknowledged QoS 1 messages are sent again (new_client queues
    without bound what it publishes while disconnected)."""
    client = new_client(
        f"drill-{username}-{uuid.uuid4().hex[:6]}", username=username, password=password
    )
    client.max_inflight_messages_set(1000)
    deadline = time.monotonic() + 15
    while True:
        try:
            connect_blocking(client, system.endpoint, clean_start=False, session_expiry_s=3600)
            return client
        except ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # the broker is still reloading its logins


def _in_flight(client: paho.Client) -> int:
    # paho keeps every unacknowledged QoS 1 message in _out_messages.
    return len(getattr(client, "_out_messages", {}))


def _flood_status(
    system: BenchSystem,
    device_id: str,
    passwords: dict[str, str],
    opts: DrillOptions,
    done: threading.Event,
    count: list[int],
) -> None:
    """Status from one device at `flood_rate`/s (QoS 0, as a hostile device would), each with its
    own timestamp (a day ago, 1 ms apart), paced per 10 ms."""
    client = _connect(system, device_id, passwords[device_id])
    topic = f"eldercare/v1/devices/{device_id}/status"
    base_ms = int(time.time() * 1000) - 86_400_000
    began = time.monotonic()
    while not done.is_set():
        due = int((time.monotonic() - began) * opts.flood_rate)
        while count[0] < due:
            body = {"online": True, "battery": 50, "ts": base_ms + count[0]}
            client.publish(topic, orjson.dumps(body), qos=0)
            count[0] += 1
        time.sleep(0.01)
    client.disconnect()
    client.loop_stop()


def _tag(scenario: str) -> str:
    return {"db-outage": "dbo", "broker-restart": "brk", "status-flood": "flo"}[scenario]


def _log_name(args: tuple[str, ...]) -> str:
    return "alerts.log" if args[0] == "alerts" else "ingest.log"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def run_drill(scenarios: list[str], options: DrillOptions, *, quiet: bool) -> DrillResult:
    with Progress(disable=quiet, transient=True) as progress:
        drill = Drill(options, progress)
        try:
            setup = progress.add_task("starting PostgreSQL, Mosquitto, ingest and alerts", total=1)
            drill.setup()
            progress.update(setup, completed=1)
            results = [drill.run(s) for s in scenarios]
            logs = str(drill.system.tmp if drill.system else drill.pg_dir)
        finally:
            drill.cleanup()
    return DrillResult(results, machine_description(), options, logs)


def as_dict(result: DrillResult) -> dict[str, object]:
    return {
        "scenarios": [asdict(s) for s in result.scenarios],
        "machine": result.machine,
        "options": asdict(result.options),
        "logs": result.logs,
        "failed": result.failed,
    }


__all__ = ["SCENARIOS", "DrillOptions", "DrillResult", "ScenarioResult", "as_dict", "run_drill"]
