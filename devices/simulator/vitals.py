"""A healthy resident's normal day as device messages: baselines, noise and the contract's payloads.

Pure: every random draw comes from the `random.Random` passed in and every time from the arguments,
so one seed gives one timeline. Episodes (episodes.py) rewrite this stream; nothing here does I/O.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

from devices.models import DEVICE_KINDS
from ingest.metrics import METRICS

Channel = Literal["telemetry", "events", "status"]
Payload = dict[str, Any] | list[dict[str, Any]]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Steps are a count since local midnight (LOINC 41950-7 is "in 24 hours"); the fleet lives in China.
LOCAL_TZ = timezone(timedelta(hours=8))
STATUS_EVERY = timedelta(minutes=5)


@dataclass(frozen=True)
class Message:
    """One MQTT publication of a device: `at` is when it is sent (simulated time).

    For a backlog upload `at` is the upload time while each object's `ts` keeps its measured time.
    """

    at: datetime
    channel: Channel
    payload: Payload


@dataclass(frozen=True)
class Profile:
    """A resident's resting values, the centre of their normal readings."""

    heart_rate: float
    spo2: float
    resp_rate: float
    body_temp: float
    systolic_bp: float
    diastolic_bp: float
    blood_glucose: float
    weight: float
    daily_steps: int
    lat: float
    lon: float


# Normal readings stay inside these bands, so that only episodes cross the clinical thresholds of
# CLINICAL.md (e.g. SpO2 never below 95 unless an episode says so: noisy_sample relies on it).
NORMAL_BANDS: dict[str, tuple[float, float]] = {
    "heart_rate": (50, 100),
    "spo2": (95, 100),
    "resp_rate": (12, 20),
    "body_temp": (36.0, 37.2),
    "systolic_bp": (100, 160),
    "diastolic_bp": (60, 100),
    "blood_glucose": (4.0, 8.0),
    "weight": (35, 110),
}
NOISE_SD = {
    "heart_rate": 2.5,
    "spo2": 0.6,
    "resp_rate": 0.8,
    "body_temp": 0.08,
    "systolic_bp": 4.0,
    "diastolic_bp": 3.0,
    "blood_glucose": 0.25,
    "weight": 0.15,
}


def baseline(rng: random.Random) -> Profile:
    """An older adult's plausible resting values (and a home in Shanghai Pudong for GPS events)."""
    return Profile(
        heart_rate=rng.uniform(60, 85),
        spo2=rng.uniform(95.5, 98.5),
        resp_rate=rng.uniform(12.5, 17.5),
        body_temp=rng.uniform(36.2, 36.9),
        systolic_bp=rng.uniform(120, 145),
        diastolic_bp=rng.uniform(70, 90),
        blood_glucose=rng.uniform(5.0, 7.0),
        weight=rng.uniform(45, 80),
        daily_steps=rng.randint(1500, 6000),
        lat=round(rng.uniform(31.15, 31.28), 5),
        lon=round(rng.uniform(121.50, 121.62), 5),
    )


def initial_battery(rng: random.Random) -> int:
    return rng.randint(55, 100)


def epoch_ms(at: datetime) -> int:
    return (at - EPOCH) // timedelta(milliseconds=1)


def new_msg_id(at: datetime, rng: random.Random) -> str:
    # The time makes ids unique across runs of the same seed (the ingestor drops a re-used msg_id
    # as a re-send); the random part makes them unique within one millisecond.
    return f"{epoch_ms(at):x}-{rng.getrandbits(32):08x}"


def rounded(metric: str, value: float) -> float | int:
    """Clamped to the metric's plausible range and rounded as the metric table says."""
    spec = METRICS[metric]
    value = min(max(value, spec.low), spec.high)
    return round(value) if spec.decimals == 0 else round(value, spec.decimals)


def normal_value(profile: Profile, metric: str, at: datetime, rng: random.Random) -> float:
    centre: float = getattr(profile, metric)
    if metric == "heart_rate":
        # A slow swing (about 17 minutes) so that a chart looks alive rather than like white noise.
        centre += 4 * math.sin(epoch_ms(at) / 1000 / 1020 * 2 * math.pi)
    value = rng.gauss(centre, NOISE_SD[metric])
    low, high = NORMAL_BANDS[metric]
    return min(max(value, low), high)


def steps_expected(profile: Profile, at: datetime) -> float:
    """Steps walked since local midnight: nothing before 07:00, evenly spread until 21:00."""
    local = at.astimezone(LOCAL_TZ)
    hours = local.hour + local.minute / 60 + local.second / 3600
    return profile.daily_steps * min(max((hours - 7) / 14, 0.0), 1.0)


def telemetry(at: datetime, readings: dict[str, float | int], rng: random.Random) -> Message:
    payload = {"msg_id": new_msg_id(at, rng), "ts": epoch_ms(at), "readings": readings}
    return Message(at, "telemetry", payload)


def event(at: datetime, kind: str, rng: random.Random, profile: Profile | None = None) -> Message:
    payload: dict[str, Any] = {"msg_id": new_msg_id(at, rng), "type": kind, "ts": epoch_ms(at)}
    if profile is not None:  # a wearable with GPS says where the resident is
        payload["location"] = {"lat": profile.lat, "lon": profile.lon}
    return Message(at, "events", payload)


def status(at: datetime, battery: int) -> Message:
    return Message(at, "status", {"online": True, "battery": battery, "ts": epoch_ms(at)})


def _readings_stream(
    profile: Profile, kind: str, start: datetime, interval: timedelta, rng: random.Random
) -> Iterator[Message]:
    metrics = DEVICE_KINDS[kind].metrics
    steps = 0
    day = None
    for k in itertools.count():
        at = start + k * interval
        readings: dict[str, float | int] = {}
        for metric in metrics:
            if metric == "steps":
                today = at.astimezone(LOCAL_TZ).date()
                if today != day:  # the counter restarts at local midnight
                    day, steps = today, 0
                steps = max(steps, round(steps_expected(profile, at) + rng.uniform(-20, 20)))
                readings[metric] = rounded(metric, steps)
            else:
                readings[metric] = rounded(metric, normal_value(profile, metric, at, rng))
        yield telemetry(at, readings, rng)


def _status_stream(kind: str, start: datetime, battery: int) -> Iterator[Message]:
    # Event-only devices (buttons) drain far slower than a wristband measuring every few seconds.
    drain_per_hour = 1.0 if DEVICE_KINDS[kind].metrics else 0.05
    for k in itertools.count(1):
        elapsed_h = k * STATUS_EVERY / timedelta(hours=1)
        yield status(start + k * STATUS_EVERY, max(5, round(battery - drain_per_hour * elapsed_h)))


def base_stream(
    profile: Profile,
    kind: str,
    start: datetime,
    interval: timedelta,
    rng: random.Random,
    battery: int,
) -> Iterator[Message]:
    """Normal operation, endless: readings every `interval`, a status heartbeat every 5 minutes."""
    heartbeats = _status_stream(kind, start, battery)
    if not DEVICE_KINDS[kind].metrics:
        yield from heartbeats
        return
    readings = _readings_stream(profile, kind, start, interval, rng)
    beat = next(heartbeats)
    for message in readings:
        while beat.at < message.at:
            yield beat
            beat = next(heartbeats)
        yield message
