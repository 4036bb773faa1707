"""`eldercare bench alerts`: SOS pressed → notification on the doctor's MQTT topic, while ingest is
saturated by telemetry and the alert engine has real work. Everything real and private to the run
(see benchmarks/ingest.py).

- The backlog (historical readings, a day old) keeps ingest draining at full speed.
- The live flood carries current timestamps from wristbands bound to residents of their own, so
  the engine evaluates every flood resident's rules (their last 15 minutes of readings) all the
  time, as it would with real wearers, instead of skipping data too old to describe anyone now.
- Every press counts: one whose notification never arrives is reported (`undelivered`) and ranks
  as slower than any delivered one in p50/p99/max, which are then null when it decides them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from rich.progress import Progress

from alerts.channels.mqtt import doctor_topic
from benchmarks.ingest import SERVICE_USER, BenchSystem, machine_description, preload
from care import service as care
from devices import broker_auth
from devices import service as devices
from eldercare.mqtt import connect_blocking, new_client
from store import db

FLOOD_RESIDENTS = 50
# How long after the last press a notification may still arrive before the press counts as lost.
DELIVERY_WAIT_S = 30.0
# The backlog drains first (ingest keeps order), then the flood's live readings reach the engine.
FLOOD_JUDGED_WAIT_S = 180.0


@dataclass
class AlertBenchResult:
    sos_presses: int
    delivered: int
    undelivered: int  # no notification within DELIVERY_WAIT_S of the last press
    p50_ms: float | None  # None: an undelivered press decides it (never left out)
    p99_ms: float | None
    max_ms: float | None
    flood_residents: int  # residents whose current readings the engine evaluates during the run
    flood_alerts_raised: int  # 1 expected: the feverish wearer's (the engine judged the flood)
    telemetry_msg_per_s: float
    telemetry_offered_per_s: float
    telemetry_backlog_at_end: int
    storage: str
    machine: str


def _provision(
    system: BenchSystem, presses: int
) -> tuple[int, dict[str, tuple[int, str]], list[str]]:
    """A doctor with `presses` residents, each with an SOS button, and FLOOD_RESIDENTS residents of
    the same doctor each wearing a wristband; returns the doctor id, button → (resident, password)
    and the wristbands' ids."""
    buttons: dict[str, tuple[int, str]] = {}
    wristbands: list[str] = []
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
        for i in range(FLOOD_RESIDENTS):
            resident = devices.add_resident(conn, name=f"佩戴者{i:03d}")
            care.add_contract(
                conn, resident_id=resident.id, doctor_id=doctor["id"], valid_from=since
            )
            band = f"flood-{i:03d}"
            devices.add_device(
                conn, device_id=band, kind="wristband", resident_id=resident.id, bound_from=since
            )
            wristbands.append(band)
        broker_auth.sync(conn, system.broker.passwd_path, system.broker.acl_path, None)
    system.broker.reload()
    return doctor["id"], buttons, wristbands


def _flood_readings(feverish: bool, seq: int) -> dict[str, float]:
    """Normal values that vary, so the rules run in full and find nothing to raise, except for one
    feverish wearer: the fever alert the engine must raise for them during the run shows that it
    judged the flood (`flood_alerts_raised`). Three readings per message either way."""
    readings: dict[str, float] = {"heart_rate": 62 + seq % 30, "spo2": 96 + seq % 4}
    if feverish:
        readings["body_temp"] = 38.2  # > 37.8 °C, one reading (IDSA, CLINICAL.md)
    else:
        readings["resp_rate"] = 13 + seq % 6
    return readings


def _flood(
    system: BenchSystem, wristbands: list[str], stop: threading.Event, sent: list[int]
) -> None:
    """Publish telemetry as fast as the broker takes it (QoS 1, bounded in flight), timestamped
    now, so that it is live data for bound residents and the alert engine judges it."""
    client = system.publisher()
    seq = 0
    last_ts: dict[str, int] = {}
    while not stop.is_set():
        device = wristbands[seq % len(wristbands)]
        # Strictly increasing per device: two messages in one millisecond are still two readings.
        ts = max(int(time.time() * 1000), last_ts.get(device, 0) + 1)
        last_ts[device] = ts
        body = orjson.dumps(
            {
                "msg_id": f"f{seq:011d}",
                "ts": ts,
                "readings": _flood_readings(device == wristbands[0], seq),
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
            doctor_id, buttons, wristbands = _provision(system, presses)
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
            flood = threading.Thread(
                target=_flood, args=(system, wristbands, stop_flood, sent), daemon=True
            )
            flood.start()
            # The first press waits until the engine has judged the flood (the feverish wearer's
            # alert is raised): from then on it evaluates live data while the SOS presses come.
            _wait_for_flood_alert(system, wristbands, FLOOD_JUDGED_WAIT_S)
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
                arrived.wait_for(lambda: len(received) >= presses, timeout=DELIVERY_WAIT_S)
            elapsed = time.monotonic() - began
            stored_after, flood_after = system.stored_readings(), sent[0]
            backlog_left = backlog + flood_after - (stored_after // 3)
            stop_flood.set()
            flood.join(30)
            flood_alerts = _flood_alerts(system, wristbands)
            for client in (*clients.values(), watcher):
                client.disconnect()
                client.loop_stop()
        finally:
            for process in processes:
                process.terminate()
                process.wait(20)
            system.cleanup()
    latencies = press_latencies(pressed, received)
    delivered = sum(1 for v in latencies if v is not None)
    if not delivered:
        raise RuntimeError("no SOS notification arrived; see the alerts log of the run")
    return AlertBenchResult(
        sos_presses=presses,
        delivered=delivered,
        undelivered=presses - delivered,
        p50_ms=latency_percentile(latencies, 0.5),
        p99_ms=latency_percentile(latencies, 0.99),
        max_ms=latency_percentile(latencies, 1.0),
        flood_residents=len(wristbands),
        flood_alerts_raised=flood_alerts,
        telemetry_msg_per_s=round((stored_after - stored_before) / 3 / elapsed, 1),
        telemetry_offered_per_s=round((flood_after - flood_before) / elapsed, 1),
        telemetry_backlog_at_end=backlog_left,
        storage=storage,
        machine=machine_description(),
    )


def _wait_for_flood_alert(system: BenchSystem, wristbands: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not _flood_alerts(system, wristbands):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the alert engine raised nothing for the flood within {timeout_s:g} s; see the "
                f"alerts log in {system.tmp}"
            )
        time.sleep(0.2)


def _flood_alerts(system: BenchSystem, wristbands: list[str]) -> int:
    with db.connection(system.url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM alert a JOIN device_binding b ON b.resident_id = a.resident_id "
            "WHERE b.device_id = ANY(%s) AND a.rule <> 'sos' AND a.rule NOT LIKE 'no_data:%%'",
            (wristbands,),
        ).fetchone()
    return int(row[0]) if row else 0


def press_latencies(pressed: dict[int, float], received: dict[int, float]) -> list[float | None]:
    """Milliseconds from press to notification for every press; None for one never delivered."""
    return [(received[r] - t) * 1000 if r in received else None for r, t in pressed.items()]


def latency_percentile(latencies: list[float | None], q: float) -> float | None:
    """The q-th percentile over all presses, an undelivered one ranking above every delivered one;
    None when an undelivered press is the one at that rank (the latency is unbounded, not small)."""
    if not latencies:
        return None
    ranked = sorted(latencies, key=lambda v: (v is None, v or 0.0))
    # The same rank as benchmarks.ingest.percentile, so both benchmarks' p99 mean the same.
    value = ranked[min(len(ranked) - 1, round(q * (len(ranked) - 1)))]
    return None if value is None else round(value, 1)


def as_dict(result: AlertBenchResult) -> dict[str, object]:
    return asdict(result)
