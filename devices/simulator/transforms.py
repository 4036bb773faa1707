"""Building blocks of episodes: transforms rewriting a device's message stream from a moment on.

Vital-sign shapes move readings into a band and back, event shapes insert events, delivery
transforms hold back or drop messages. Pure: randomness comes from the context's `random.Random`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from itertools import takewhile
from typing import Any

import orjson

from devices.simulator.vitals import Message, Profile, event, rounded
from ingest.contract.envelope import MAX_PAYLOAD_BYTES

BACKLOG_GAP = timedelta(minutes=4)
GPS_KINDS = frozenset({"wristband"})  # worn outdoors, so their events carry a location


@dataclass(frozen=True)
class Context:
    profile: Profile
    kind: str
    interval: timedelta
    rng: random.Random


Transform = Callable[[Iterator[Message], datetime, Context], Iterator[Message]]


@dataclass(frozen=True)
class Vitals:
    """Readings move from normal into `targets` bands (and by `shifts`), hold, then recover."""

    targets: Mapping[str, tuple[float, float]]
    ramp: timedelta
    plateau_min: timedelta
    shifts: Mapping[str, float] = field(default_factory=dict)
    plateau_readings: int = 4  # even with a long interval, several readings show the episode

    def plateau(self, interval: timedelta) -> timedelta:
        return max(self.plateau_min, self.plateau_readings * interval)

    def span(self, interval: timedelta) -> timedelta:
        return 2 * self.ramp + self.plateau(interval)

    def weight(self, offset: timedelta, interval: timedelta) -> float:
        """0 outside the episode, 1 on the plateau, linear on the ramps."""
        plateau = self.plateau(interval)
        if offset < timedelta(0) or offset >= self.span(interval):
            return 0.0
        if offset < self.ramp:
            return offset / self.ramp
        if offset < self.ramp + plateau:
            return 1.0
        return (self.span(interval) - offset) / self.ramp

    def __call__(self, stream: Iterator[Message], at: datetime, ctx: Context) -> Iterator[Message]:
        centre = {m: ctx.rng.uniform(low, high) for m, (low, high) in self.targets.items()}
        for message in stream:
            w = self.weight(message.at - at, ctx.interval)
            if w == 0 or message.channel != "telemetry" or not isinstance(message.payload, dict):
                yield message
                continue
            readings = dict(message.payload["readings"])
            for metric, (low, high) in self.targets.items():
                if metric in readings:
                    held = min(max(ctx.rng.gauss(centre[metric], (high - low) / 6), low), high)
                    readings[metric] = rounded(metric, (1 - w) * readings[metric] + w * held)
            for metric, shift in self.shifts.items():
                if metric in readings:
                    readings[metric] = rounded(metric, readings[metric] + w * shift)
            yield replace(message, payload={**message.payload, "readings": readings})


@dataclass(frozen=True)
class Events:
    """Events of the given types at the given offsets from the episode's start."""

    sequence: tuple[tuple[timedelta, str], ...]

    def span(self, _interval: timedelta) -> timedelta:
        return self.sequence[-1][0] + timedelta(seconds=1)

    def __call__(self, stream: Iterator[Message], at: datetime, ctx: Context) -> Iterator[Message]:
        where = ctx.profile if ctx.kind in GPS_KINDS else None
        pending = [(at + offset, kind) for offset, kind in self.sequence]
        for message in stream:
            while pending and pending[0][0] < message.at:
                moment, kind = pending.pop(0)
                yield event(moment, kind, ctx.rng, where)
            yield message
        for moment, kind in pending:
            yield event(moment, kind, ctx.rng, where)


def device_silent(stream: Iterator[Message], at: datetime, _ctx: Context) -> Iterator[Message]:
    # It vanishes without a word: no offline status, no Last Will (its connection stays open).
    yield from takewhile(lambda message: message.at < at, stream)


def offline_backlog(stream: Iterator[Message], at: datetime, _ctx: Context) -> Iterator[Message]:
    release = at + BACKLOG_GAP
    objects: list[dict[str, Any]] = []
    events: list[Message] = []
    for message in stream:
        if at <= message.at < release:
            if message.channel == "telemetry":
                payload = message.payload
                objects.extend(payload if isinstance(payload, list) else [payload])
            elif message.channel == "events":
                events.append(message)
            # Status heartbeats are dropped: a device without a connection sends none.
            continue
        if message.at >= release and (objects or events):
            for chunk in backlog_chunks(objects):
                yield Message(release, "telemetry", chunk)
            for held in events:
                yield replace(held, at=release)
            objects, events = [], []
        yield message


def backlog_chunks(objects: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """One array message, split only where it would exceed the contract's payload limit."""
    chunk: list[dict[str, Any]] = []
    size = 2
    for obj in objects:
        length = len(orjson.dumps(obj)) + 1
        if chunk and size + length > MAX_PAYLOAD_BYTES * 3 // 4:
            yield chunk
            chunk, size = [], 2
        chunk.append(obj)
        size += length
    if chunk:
        yield chunk


def noisy_sample(stream: Iterator[Message], at: datetime, ctx: Context) -> Iterator[Message]:
    done = False
    for message in stream:
        payload = message.payload
        if (
            not done
            and message.at >= at
            and isinstance(payload, dict)
            and "spo2" in payload.get("readings", {})
        ):
            done = True
            readings = {**payload["readings"], "spo2": ctx.rng.randint(86, 89)}
            message = replace(message, payload={**payload, "readings": readings})
        yield message
