"""Runs a simulation: provision the fleet, connect its devices, publish their timelines on time.

Time is paced here (the only place that sleeps): every message is sent when the simulated clock
(plan.SimClock) reaches it. Stop it with `stop.set()` (the CLI does on Ctrl-C and SIGTERM) or give
`Options.duration`. The same seed gives the same residents, episodes and readings.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from devices.simulator.clients import DeviceClients
from devices.simulator.display import Display, NullDisplay, sim_label
from devices.simulator.episodes import episode, messages
from devices.simulator.fleet import Fleet, provision
from devices.simulator.plan import Assignment, Plan, PlannedDevice, SimClock, default_mix, plan
from devices.simulator.plan import sim_clock as make_clock
from devices.simulator.vitals import Message, baseline, initial_battery
from eldercare.settings import MqttEndpoint

# A login created moments ago works only once the broker has re-read its password file.
CONNECT_WINDOW_S = 15.0

AfterProvision = Callable[[psycopg.Connection], None]


@dataclass(frozen=True)
class Options:
    residents: int = 5
    duration: timedelta | None = None  # wall-clock run time; None: until `stop` is set
    speed: float = 1.0  # simulated seconds per wall-clock second
    interval: timedelta = timedelta(seconds=5)  # simulated time between a device's readings
    episodes: tuple[str, ...] | None = None  # None: default_mix(), every episode once
    fleet: str = "demo"
    seed: int = 1

    def __post_init__(self) -> None:
        if self.speed <= 0 or self.interval <= timedelta(0):
            raise ValueError("speed and interval must be positive")


@dataclass(frozen=True)
class Summary:
    fleet: str
    residents: int
    devices: int
    messages_published: int
    messages_by_channel: dict[str, int]
    messages_unacknowledged: int
    episodes_scheduled: list[dict[str, Any]]
    episodes_skipped: list[str]
    sim_start: datetime
    sim_end: datetime
    elapsed_s: float
    stopped_by: str  # duration | signal | finished (every device fell silent)
    residents_created: int = 0
    devices_created: int = 0
    # SOS and falls re-sent because the backend had not answered yet, and those it never answered.
    emergencies_resent: int = 0
    emergencies_unanswered: int = 0


def simulate(
    conn: psycopg.Connection,
    endpoint: MqttEndpoint,
    options: Options,
    *,
    after_provision: AfterProvision | None = None,
    stop: threading.Event | None = None,
    display: Display | None = None,
) -> Summary:
    """Provision the fleet, let `after_provision(conn)` tell the broker (sync its password file),
    then publish until the duration is over or `stop` is set."""
    fleet = provision(conn, fleet=options.fleet, residents=options.residents, now=_now())
    if after_provision is not None:
        after_provision(conn)
    return publish(fleet, endpoint, options, stop=stop, display=display)


def publish(
    fleet: Fleet,
    endpoint: MqttEndpoint,
    options: Options,
    *,
    stop: threading.Event | None = None,
    display: Display | None = None,
) -> Summary:
    """Connect the fleet's devices and publish their timelines (the fleet is already registered)."""
    stop = stop or threading.Event()
    display = display or NullDisplay()
    batteries = {
        d.device_id: initial_battery(random.Random(f"{options.seed}/{d.device_id}/battery"))
        for d in fleet.devices
    }
    clients = DeviceClients(endpoint)
    schedule = Plan((), ())
    clock: SimClock | None = None
    outcome = ("error", 0.0)
    try:
        deadline = time.monotonic() + CONNECT_WINDOW_S
        for device in fleet.devices:
            clients.connect(
                device.device_id, device.password, batteries[device.device_id], deadline
            )
        # The clock starts once every device is connected, which may take the broker's reload.
        clock = make_clock(_now(), options.speed, options.duration)
        limit_s = options.duration.total_seconds() if options.duration else None
        span = clock.sim_at(limit_s) - clock.start if limit_s is not None else None
        devices = [PlannedDevice(d.device_id, d.kind, d.resident_index) for d in fleet.devices]
        keys = default_mix() if options.episodes is None else options.episodes
        schedule = plan(devices, keys, clock.start, options.interval, span)
        merged = heapq.merge(
            *_streams(fleet, options, clock.start, schedule, batteries),
            key=lambda pair: pair[1].at,
        )
        display.note(
            f"{len(fleet.devices)} devices of fleet {fleet.name} connected; simulated time starts "
            f"{sim_label(clock.start)} (UTC+8) at speed {options.speed:g}"
        )
        names = {r.index: r.name for r in fleet.residents}
        notes = deque(sorted((a.episode.at, _describe(a, names)) for a in schedule.assignments))
        outcome = _pace(merged, clients, clock, limit_s, stop, display, notes)
    finally:
        display.close()
        sim_end = clock.sim_at(outcome[1]) if clock is not None else _now()
        unacknowledged = clients.close(vanished=_vanished(schedule, sim_end))
        unanswered = clients.emergencies_unanswered
    assert clock is not None
    residents = {r.index: r for r in fleet.residents}
    return Summary(
        fleet=fleet.name,
        residents=len(fleet.residents),
        devices=len(fleet.devices),
        messages_published=clients.total_sent,
        messages_by_channel=dict(clients.sent),
        messages_unacknowledged=unacknowledged,
        episodes_scheduled=[
            {
                "key": a.episode.key,
                "at": a.episode.at.isoformat(),
                "device_id": a.device_id,
                "resident_id": residents[a.resident_index].resident_id,
                "resident_name": residents[a.resident_index].name,
                "started": a.episode.at <= sim_end,
            }
            for a in sorted(schedule.assignments, key=lambda a: a.episode.at)
        ],
        episodes_skipped=list(schedule.skipped),
        sim_start=clock.start,
        sim_end=sim_end,
        elapsed_s=round(outcome[1], 3),
        stopped_by=outcome[0],
        residents_created=sum(r.created for r in fleet.residents),
        devices_created=sum(d.created for d in fleet.devices),
        emergencies_resent=clients.emergencies_resent,
        emergencies_unanswered=unanswered,
    )


def _streams(
    fleet: Fleet,
    options: Options,
    start: datetime,
    schedule: Plan,
    batteries: dict[str, int],
) -> list[Iterator[tuple[str, Message]]]:
    """Each device's timeline, seeded by the seed and the resident (profile) or device (noise)."""
    profiles = {
        r.index: baseline(random.Random(f"{options.seed}/{fleet.name}/{r.index}"))
        for r in fleet.residents
    }
    return [
        _tagged(
            d.device_id,
            messages(
                profiles[d.resident_index],
                d.kind,
                start,
                options.interval,
                schedule.for_device(d.device_id),
                random.Random(f"{options.seed}/{d.device_id}"),
                battery=batteries[d.device_id],
            ),
        )
        for d in fleet.devices
    ]


def _tagged(device_id: str, stream: Iterator[Message]) -> Iterator[tuple[str, Message]]:
    for message in stream:
        yield device_id, message


RESEND_CHECK_S = 1.0


def _pace(
    merged: Iterable[tuple[str, Message]],
    clients: DeviceClients,
    clock: SimClock,
    limit_s: float | None,
    stop: threading.Event,
    display: Display,
    notes: deque[tuple[datetime, str]],
) -> tuple[str, float]:
    """Send each message when its simulated time comes. Returns (why it ended, elapsed seconds)."""
    started = time.monotonic()
    for device_id, message in merged:
        due = clock.elapsed_for(message.at)
        if limit_s is not None and due >= limit_s:
            if stop.wait(max(0.0, limit_s - (time.monotonic() - started))):
                return "signal", time.monotonic() - started
            return "duration", limit_s
        while True:  # wait for the message's time, re-sending unanswered emergencies meanwhile
            wait = due - (time.monotonic() - started)
            if stop.wait(max(0.0, min(wait, RESEND_CHECK_S))):
                return "signal", time.monotonic() - started
            clients.resend_due()
            if wait <= RESEND_CHECK_S:
                break
        while notes and notes[0][0] <= message.at:
            display.note(notes.popleft()[1])
        clients.publish(device_id, message)
        display.update(clients.total_sent, message.at, time.monotonic() - started)
    return "finished", time.monotonic() - started


def _describe(assignment: Assignment, names: dict[int, str]) -> str:
    spec = episode(assignment.episode.key)
    return (
        f"{sim_label(assignment.episode.at)} {spec.key} on {assignment.device_id} "
        f"({names[assignment.resident_index]}): {spec.description}"
    )


def _vanished(schedule: Plan, sim_end: datetime) -> frozenset[str]:
    return frozenset(
        a.device_id
        for a in schedule.assignments
        if a.episode.key == "device_silent" and a.episode.at <= sim_end
    )


def _now() -> datetime:
    return datetime.now(UTC)
