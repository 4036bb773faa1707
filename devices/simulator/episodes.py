"""Scripted clinical and technical episodes, as one declarative table of stream transforms.

Each episode rewrites a device's normal message stream (vitals.py) from a moment on: vital-sign
episodes move readings towards a target band, event episodes insert events, delivery episodes hold
back or drop messages. Pure like vitals.py; the values follow the thresholds of CLINICAL.md so that
each episode should raise (or, for noisy_sample, must not raise) its alert.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import takewhile

from devices.models import DEVICE_KINDS
from devices.simulator.transforms import (
    BACKLOG_GAP,
    Context,
    Events,
    Transform,
    Vitals,
    device_silent,
    noisy_sample,
    offline_backlog,
)
from devices.simulator.vitals import Message, Profile, base_stream, initial_battery

FOREVER = timedelta(days=36500)
EVERYTHING = frozenset({"*"})  # a delivery episode affects all of a device's messages


@dataclass(frozen=True)
class ScheduledEpisode:
    key: str
    at: datetime


@dataclass(frozen=True)
class Episode:
    key: str
    description: str
    function: Transform
    kinds: tuple[str, ...]  # device kinds it can happen on, preferred first
    touches: frozenset[str]  # what it changes: the plan keeps overlapping episodes apart
    span: Callable[[timedelta], timedelta]  # how long it lasts, given the reading interval
    stage: int = 0  # transforms apply in stage order: vitals (0), events (1), delivery (2)


def _reporting(*metrics: str) -> tuple[str, ...]:
    return tuple(k for k, kind in DEVICE_KINDS.items() if set(metrics) <= set(kind.metrics))


def _vitals(key: str, description: str, shape: Vitals) -> Episode:
    return Episode(
        key,
        description,
        shape,
        _reporting(*shape.targets),
        frozenset(shape.targets) | frozenset(shape.shifts),
        shape.span,
    )


def _events(key: str, description: str, kinds: tuple[str, ...], shape: Events) -> Episode:
    return Episode(key, description, shape, kinds, frozenset({"events"}), shape.span, stage=1)


_ALL_TELEMETRY = tuple(k for k, kind in DEVICE_KINDS.items() if kind.metrics)

EPISODES: tuple[Episode, ...] = (
    _vitals(
        "hypoxia",
        "SpO2 falls to 86-90% within a minute and stays there at least 3 minutes",
        Vitals(
            {"spo2": (86, 90)},
            timedelta(minutes=1),
            timedelta(minutes=3),
            {"heart_rate": 12, "resp_rate": 4},
        ),
    ),
    _vitals(
        "tachycardia",
        "heart rate 130-150 /min at rest for 12 minutes",
        Vitals({"heart_rate": (130, 150)}, timedelta(minutes=1), timedelta(minutes=12)),
    ),
    _vitals(
        "fever",
        "body temperature rises to 38.3-39.5 °C over 5 minutes, holds 20 minutes",
        Vitals(
            {"body_temp": (38.3, 39.5)},
            timedelta(minutes=5),
            timedelta(minutes=20),
            {"heart_rate": 12, "resp_rate": 3},
        ),
    ),
    _vitals(
        "hypertensive_crisis",
        "blood pressure at or above 185/120 mmHg for 10 minutes",
        Vitals(
            {"systolic_bp": (185, 210), "diastolic_bp": (120, 130)},
            timedelta(0),
            timedelta(minutes=10),
            plateau_readings=3,
        ),
    ),
    _events(
        "fall", "a fall event", ("wristband", "fall_detector"), Events(((timedelta(0), "fall"),))
    ),
    _events(
        "sos",
        "an SOS call, followed by nothing (no cancel)",
        ("sos_button", "wristband"),
        Events(((timedelta(0), "sos"),)),
    ),
    _events(
        "sos_cancelled",
        "an SOS call cancelled 40 s later (pressed by mistake)",
        ("sos_button", "wristband"),
        Events(((timedelta(0), "sos"), (timedelta(seconds=40), "sos_cancel"))),
    ),
    Episode(
        "noisy_sample",
        "one single SpO2 of 86-89% between normal readings: no alert",
        noisy_sample,
        _reporting("spo2"),
        frozenset({"spo2"}),
        lambda interval: 2 * interval,
    ),
    Episode(
        "offline_backlog",
        "quiet for 4 minutes, then uploads the missed readings as one array (original times)",
        offline_backlog,
        _ALL_TELEMETRY,
        EVERYTHING,
        lambda _i: BACKLOG_GAP,
        stage=2,
    ),
    Episode(
        "device_silent",
        "the device stops publishing anything, for good (no Last Will)",
        device_silent,
        ("wristband", *(k for k in DEVICE_KINDS if k != "wristband")),
        EVERYTHING,
        lambda _i: FOREVER,
        stage=2,
    ),
)
EPISODES_BY_KEY = {episode.key: episode for episode in EPISODES}


def episode(key: str) -> Episode:
    try:
        return EPISODES_BY_KEY[key]
    except KeyError:
        raise ValueError(f"unknown episode {key!r}; known: {', '.join(EPISODES_BY_KEY)}") from None


def messages(
    profile: Profile,
    device_kind: str,
    start: datetime,
    interval: timedelta,
    episodes: list[ScheduledEpisode],
    rng: random.Random,
    *,
    battery: int | None = None,
) -> Iterator[Message]:
    """A device's endless message stream, in send order, with the scheduled episodes applied."""
    battery = initial_battery(rng) if battery is None else battery
    stream = base_stream(profile, device_kind, start, interval, rng, battery)
    ctx = Context(profile, device_kind, interval, rng)
    for scheduled in sorted(episodes, key=lambda s: (episode(s.key).stage, s.at)):
        spec = episode(scheduled.key)
        if device_kind not in spec.kinds:
            raise ValueError(f"episode {spec.key} cannot happen on a {device_kind}")
        stream = spec.function(stream, scheduled.at, ctx)
    return stream


def timeline(
    profile: Profile,
    device_kind: str,
    start: datetime,
    duration: timedelta,
    interval: timedelta,
    episodes: list[ScheduledEpisode],
    rng: random.Random,
) -> list[Message]:
    """Every message the device sends in [start, start + duration)."""
    end = start + duration
    stream = messages(profile, device_kind, start, interval, episodes, rng)
    return list(takewhile(lambda message: message.at < end, stream))
