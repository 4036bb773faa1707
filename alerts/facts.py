"""What the rules know about a resident besides their recent readings, and where it came from.

- Their usual body temperature (IDSA's "> 1.1 °C above the resident's baseline"), from their own
  stored readings (alerts/queries.py BASELINE), cached: it moves by the day, and a wearer is
  evaluated every few seconds.
- Air or supplemental oxygen (NEWS2), from the doctor's record (`eldercare care oxygen`).
- Consciousness (ACVPU) has no source: nothing in eldercare observes it, so NEWS2 lists it missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg

from alerts import queries

BASELINE_METRIC = "body_temp"
# A week ending a day ago: the last day may be the episode now building; older raw readings are
# compressed in TimescaleDB (store/timescale.py), where the resident's index no longer serves.
BASELINE_SPAN = timedelta(days=7)
BASELINE_GAP = timedelta(days=1)
# Hours from a day before a fever alert opened until it was resolved are not the resident's usual.
BEFORE_EPISODE = timedelta(days=1)
# Fewer hours measured than this (three days of twice-daily checks) is no baseline.
BASELINE_MIN_HOURS = 6
BASELINE_REFRESH = timedelta(hours=1)


@dataclass(frozen=True)
class Baseline:
    value: float
    hours: int  # hourly means it is the median of
    first: datetime
    last: datetime

    def source(self) -> str:
        return (
            f"median of {self.hours} hourly means of the resident's own readings, "
            f"{self.first:%Y-%m-%d} to {self.last:%Y-%m-%d} (the last day and fever episodes "
            "left out)"
        )


def baseline(conn: psycopg.Connection, resident_id: int, now: datetime) -> Baseline | None:
    """The resident's temperature baseline at `now`, or None with too few readings to tell."""
    row = conn.execute(
        queries.BASELINE,
        {
            "resident_id": resident_id,
            "metric": BASELINE_METRIC,
            "rule": "fever",
            "start": now - BASELINE_GAP - BASELINE_SPAN,
            "end": now - BASELINE_GAP,
            "before_episode": BEFORE_EPISODE,
            "now": now,
        },
    ).fetchone()
    if row is None or row[0] is None or row[1] < BASELINE_MIN_HOURS:
        return None
    median, hours, first, last = row
    return Baseline(round(float(median), 2), int(hours), first, last)


class Baselines:
    """Baselines per resident, each recomputed at most every BASELINE_REFRESH."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[datetime, Baseline | None]] = {}

    def get(self, conn: psycopg.Connection, resident_id: int, now: datetime) -> Baseline | None:
        cached = self._cache.get(resident_id)
        if cached is not None and cached[0] <= now < cached[0] + BASELINE_REFRESH:
            return cached[1]
        found = baseline(conn, resident_id, now)
        self._cache[resident_id] = (now, found)
        return found


@dataclass(frozen=True)
class ResidentFacts:
    spo2_scale: int = 1
    on_oxygen: bool | None = None
    sources: dict[str, str] = field(default_factory=dict)  # for Window.sources


def resident_facts(conn: psycopg.Connection, resident_id: int) -> ResidentFacts:
    row = conn.execute(queries.RESIDENT_FACTS, (resident_id,)).fetchone()
    if row is None:
        return ResidentFacts()
    scale, on_oxygen, set_by, set_at = row
    sources = {}
    if on_oxygen is not None:
        when = f" at {set_at.isoformat()}" if set_at else ""
        sources["on_oxygen"] = (
            f"{'oxygen' if on_oxygen else 'air'}: the resident's record, set by {set_by or '?'}"
            f"{when}, not measured"
        )
    return ResidentFacts(scale, on_oxygen, sources)
