"""Which device has which episode when, and how simulated time maps onto the wall clock. Pure.

Accelerated time runs in the past: devices must not send timestamps from the future (the contract
refuses them beyond 5 minutes), so a run at speed S replays a window that ends at the wall clock,
and once it has caught up continues in real time.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from devices.simulator.episodes import EPISODES, ScheduledEpisode, episode

# Inside the contract's 7-day backfill window (with a day to spare), so no reading is too old.
MAX_LOOKBACK = timedelta(days=6)
# Without a duration, an accelerated run replays what this much wall time would cover.
UNBOUNDED_CATCH_UP = timedelta(hours=1)
DEFAULT_LEAD = timedelta(minutes=1)  # some normal readings first: rules compare with a baseline
DEFAULT_SPACING = timedelta(seconds=30)


@dataclass(frozen=True)
class SimClock:
    """Simulated time = start + speed × elapsed, but never ahead of the wall clock."""

    anchor: datetime  # the wall clock when the run started (elapsed 0)
    start: datetime  # simulated time at elapsed 0
    speed: float

    @property
    def catch_up_s(self) -> float:
        """Wall seconds of accelerated time before simulated time reaches the wall clock."""
        if self.speed <= 1:
            return math.inf
        return (self.anchor - self.start).total_seconds() / (self.speed - 1)

    def sim_at(self, elapsed_s: float) -> datetime:
        if elapsed_s <= self.catch_up_s:
            return self.start + timedelta(seconds=self.speed * elapsed_s)
        return self.anchor + timedelta(seconds=elapsed_s)

    def elapsed_for(self, at: datetime) -> float:
        """Wall seconds after the start at which simulated moment `at` comes."""
        accelerated = (at - self.start).total_seconds() / self.speed
        if accelerated <= self.catch_up_s:
            return accelerated
        return (at - self.anchor).total_seconds()


def sim_clock(now: datetime, speed: float, duration: timedelta | None) -> SimClock:
    if speed <= 1:
        return SimClock(now, now, speed)
    lookback = (speed - 1) * (duration or UNBOUNDED_CATCH_UP)
    return SimClock(now, now - min(lookback, MAX_LOOKBACK), speed)


@dataclass(frozen=True)
class PlannedDevice:
    device_id: str
    kind: str
    resident_index: int


@dataclass(frozen=True)
class Assignment:
    device_id: str
    resident_index: int
    episode: ScheduledEpisode
    end: datetime


@dataclass(frozen=True)
class Plan:
    assignments: tuple[Assignment, ...]
    skipped: tuple[str, ...]  # requested episodes no device of the fleet can show

    def for_device(self, device_id: str) -> list[ScheduledEpisode]:
        return [a.episode for a in self.assignments if a.device_id == device_id]


def default_mix() -> tuple[str, ...]:
    """Every episode once, in table order (delivery episodes last, so they cut nothing short)."""
    return tuple(e.key for e in EPISODES)


def spacing(count: int, span: timedelta | None) -> tuple[timedelta, timedelta]:
    """(lead, spacing): a minute of normal data, then 30 s apart; squeezed into a short run."""
    if span is None or count == 0:
        return DEFAULT_LEAD, DEFAULT_SPACING
    return min(DEFAULT_LEAD, span / 10), min(DEFAULT_SPACING, span / 2 / count)


def _conflicts(existing: list[Assignment], key: str, at: datetime, end: datetime) -> bool:
    touches = episode(key).touches
    for other in existing:
        other_touches = episode(other.episode.key).touches
        shared = touches & other_touches or "*" in touches or "*" in other_touches
        if shared and at < other.end and other.episode.at < end:
            return True
    return False


def plan(
    devices: Sequence[PlannedDevice],
    keys: Sequence[str],
    start: datetime,
    interval: timedelta,
    span: timedelta | None = None,
) -> Plan:
    """Spread the requested episodes over the fleet, staggered from `start`.

    Episode i is due at start + lead + i × spacing on the first fitting device, preferring the
    episode's favourite device kind, then residents with fewer episodes, then rotating over
    residents, without overlapping another episode that changes the same thing; when every
    fitting device is busy it waits for the first one to be free. `span` (the simulated length
    of a bounded run) squeezes the schedule into it.
    """
    residents = sorted({d.resident_index for d in devices})
    lead, step = spacing(len(keys), span)
    by_device: dict[str, list[Assignment]] = {d.device_id: [] for d in devices}
    assignments: list[Assignment] = []
    skipped: list[str] = []
    for i, key in enumerate(keys):
        spec = episode(key)
        due = start + lead + i * step
        rotation = {r: (pos - i) % len(residents) for pos, r in enumerate(residents)}
        load = Counter(a.resident_index for a in assignments)
        candidates = sorted(
            (d for d in devices if d.kind in spec.kinds),
            key=lambda d: (
                spec.kinds.index(d.kind),
                load[d.resident_index],
                rotation[d.resident_index],
            ),
        )
        best: tuple[datetime, PlannedDevice] | None = None
        for device in candidates:
            at = _earliest_free(by_device[device.device_id], key, due, spec.span(interval))
            if at is not None and (best is None or at < best[0]):
                best = (at, device)
            if at == due:
                break
        if best is None:
            skipped.append(key)
            continue
        at, device = best
        chosen = Assignment(
            device.device_id,
            device.resident_index,
            ScheduledEpisode(key, at),
            at + spec.span(interval),
        )
        by_device[device.device_id].append(chosen)
        assignments.append(chosen)
    return Plan(tuple(assignments), tuple(skipped))


def _earliest_free(
    existing: list[Assignment], key: str, due: datetime, length: timedelta
) -> datetime | None:
    """The first moment from `due` at which the episode overlaps nothing it conflicts with."""
    for at in sorted({due, *(a.end for a in existing if a.end > due)}):
        if at - due > timedelta(days=365):
            return None  # only a silenced device is busy that long: it shows nothing more
        if not _conflicts(existing, key, at, at + length):
            return at
    return None
