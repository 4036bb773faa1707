"""`eldercare bench alerts`: SOS pressed → notification on the doctor's MQTT topic, while ingest is
saturated by telemetry. Everything real and private to the run (see ingest/bench.py)."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from rich.progress import Progress

from alerts.channels.mqtt import doctor_topic
from care import service as care
from devices import broker_auth
from devices import service as devices
from eldercare.mqtt import connect_blocking, new_client
from ingest.bench import SERVICE_USER, BenchSystem, machine_description, percentile, preload
from store import db


@dataclass
class AlertBenchResult:
    sos_presses: int
    delivered: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    telemetry_msg_per_s: float
    telemetry_offered_per_s: float
    telemetry_backlog_at_end: int
    storage: str
    machine: str


def _provision(system: BenchSystem, presses: int) -> tuple[int, dict[str, tuple[int, str]]]:
    """A doctor with `presses` residents, each with an SOS button; returns the doctor id and
    button → (resident, password)."""
    buttons: dict[str, tuple[int, str]] = {}
    with db.connection(system.url, autocommit=True) as conn:
        centre = care.add_institution(conn, name="基准测试中心", kind="community_health_centre")
        doctor = care.add_doctor(conn, name="基准医生", institution_id=centre["id"])
        since = datetime.now(UTC) - timedelta(days=1)
        for i in range(presses):
            resident = devices.add_resident(conn, name=f"老人{i:03d}")
            care.add_contract(
                conn, resident_id=resident.id, doctor_id=doctor["id"], valid_from=since
            )
            button = f"sos-{i:03d}"
            new = devices.add_device(
                conn, device_id=button, kind="sos_button", resident_id=resident.id, bound_from=since
            )
            buttons[button] = (resident.id, new.mqtt_password)
        broker_auth.sync(conn, system.broker.passwd_path, system.broker.acl_path, None)
    system.broker.reload()
    return doctor["id"], buttons


def _flood(system: BenchSystem, stop: threading.Event, sent: list[int]) -> None:
    """Publish telemetry as fast as the broker takes it (QoS 1, bounded in flight)."""
    client = system.publisher()
    now_ms = int(time.time() * 1000) - 3_600_000
    seq = 0
    devices_ = system.device_ids
    while not stop.is_set():
        device = devices_[seq % len(devices_)]
        body = orjson.dumps(
            {
                "msg_id": f"f{seq:011d}",
                "ts": now_ms + seq,
                "readings": {"heart_rate": 70, "spo2": 97, "resp_rate": 15},
            }
        )
        info = client.publish(f"eldercare/v1/devices/{device}/telemetry", body, qos=1)
        seq += 1
        if seq % 500 == 0:
            info.wait_for_publish(10)
            sent[0] = seq
    sent[0] = seq
    client.disconnect()
    client.loop_stop()


def run_bench(
    server_url: str, *, presses: int, interval_s: float, backlog: int, quiet: bool
) -> AlertBenchResult:
    with Progress(disable=quiet, transient=True) as progress:
        system = BenchSystem(server_url, 50, progress)
        processes = []
        try:
            storage = system.setup()
            doctor_id, buttons = _provision(system, presses)
            # Saturation: a telemetry backlog waits in the broker, so the ingestor drains at full
            # speed for the whole run, and a live flood comes on top of it.
            preload(system, backlog)
            processes.append(system.spawn("alerts", "run", log="alerts.log"))
            received: dict[int, float] = {}
            arrived = threading.Condition()

            def on_message(_c: Any, _u: Any, message: Any) -> None:
                body = orjson.loads(message.payload)
                if body.get("kind") == "raised" and body["alert"]["rule"] == "sos":
                    with arrived:
                        received.setdefault(body["alert"]["resident"]["id"], time.monotonic())
                        arrived.notify_all()

            watcher = new_client(
                "bench-doctor-app", username=SERVICE_USER, password=system.password
            )
            watcher.on_message = on_message
            connect_blocking(watcher, system.endpoint)
            watcher.subscribe(doctor_topic(doctor_id), qos=1)
            clients = {b: system.device_client(b, pw) for b, (_r, pw) in buttons.items()}
            # As deployed (make run, compose): events in a process of their own.
            processes.append(
                system.spawn("ingest", "--instance", "bench", "--role", "events", log="events.log")
            )
            system.start_ingest("telemetry")
            system.wait_session_started()
            stop_flood = threading.Event()
            sent = [0]
            flood = threading.Thread(target=_flood, args=(system, stop_flood, sent), daemon=True)
            flood.start()
            time.sleep(1.0)  # the ingestor is draining at full speed before the first press
            stored_before, flood_before, began = system.stored_readings(), sent[0], time.monotonic()
            pressed: dict[int, float] = {}
            task = progress.add_task("SOS presses under telemetry load", total=presses)
            for index, (button, (resident_id, _pw)) in enumerate(buttons.items()):
                pressed[resident_id] = time.monotonic()
                clients[button].publish(
                    f"eldercare/v1/devices/{button}/events",
                    orjson.dumps({"msg_id": f"sos{index}", "type": "sos"}),
                    qos=1,
                )
                progress.update(task, completed=index + 1)
                time.sleep(interval_s)
            with arrived:
                arrived.wait_for(lambda: len(received) >= presses, timeout=30)
            elapsed = time.monotonic() - began
            stored_after, flood_after = system.stored_readings(), sent[0]
            backlog_left = backlog + flood_after - (stored_after // 3)
            stop_flood.set()
            flood.join(30)
            for client in (*clients.values(), watcher):
                client.disconnect()
                client.loop_stop()
        finally:
            for process in processes:
                process.terminate()
                process.wait(20)
            system.cleanup()
    latencies = [(received[r] - t) * 1000 for r, t in pressed.items() if r in received]
    if not latencies:
        raise RuntimeError("no SOS notification arrived; see the alerts log of the run")
    return AlertBenchResult(
        sos_presses=presses,
        delivered=len(latencies),
        p50_ms=round(percentile(latencies, 0.5), 1),
        p99_ms=round(percentile(latencies, 0.99), 1),
        max_ms=round(max(latencies), 1),
        telemetry_msg_per_s=round((stored_after - stored_before) / 3 / elapsed, 1),
        telemetry_offered_per_s=round((flood_after - flood_before) / elapsed, 1),
        telemetry_backlog_at_end=backlog_left,
        storage=storage,
        machine=machine_description(),
    )


def as_dict(result: AlertBenchResult) -> dict[str, object]:
    return asdict(result)
