"""Loads what the rules see of a resident (`rules.Window`): readings by each metric's look-back,
the doctor's threshold overrides and the facts known. The alert engine and the API (NEWS2 and
thresholds on the resident page) load it the same way, so the dashboard shows what the rules judge.
"""

from __future__ import annotations

from datetime import datetime

import psycopg

from alerts import facts, queries
from alerts.rules.limits import Limits
from alerts.rules.window import CONTEXT_READINGS, LOOKBACKS, Sample, Window

METRICS = list(LOOKBACKS)


def overrides(conn: psycopg.Connection, resident_id: int) -> dict[str, Limits]:
    return {m: Limits(lo, hi) for m, lo, hi in conn.execute(queries.OVERRIDES, (resident_id,))}


def load_window(
    conn: psycopg.Connection,
    resident_id: int,
    now: datetime,
    baselines: facts.Baselines | None = None,
) -> Window:
    """The resident's Window at `now`; `baselines` caches the temperature baseline (the engine
    evaluates a wearer every few seconds), without it the baseline is computed afresh."""
    samples: dict[str, list[Sample]] = {}
    context_from = [now - LOOKBACKS[m].context for m in METRICS]
    for metric, value, measured_at, device_id in conn.execute(
        queries.WINDOW_READINGS,
        {
            "resident_id": resident_id,
            "metrics": METRICS,
            "every_from": [now - LOOKBACKS[m].every for m in METRICS],
            "context_from": context_from,
            "earliest": min(context_from),
            "context_readings": CONTEXT_READINGS,
            "now": now,
        },
    ):
        samples.setdefault(metric, []).append(Sample(value, measured_at, device_id))
    known = facts.resident_facts(conn, resident_id)
    sources = dict(known.sources)
    found = (
        baselines.get(conn, resident_id, now)
        if baselines is not None
        else facts.baseline(conn, resident_id, now)
    )
    baseline_values = {}
    if found is not None:
        baseline_values[facts.BASELINE_METRIC] = found.value
        sources[f"baseline:{facts.BASELINE_METRIC}"] = found.source()
    return Window(
        resident_id,
        now,
        samples,
        overrides(conn, resident_id),
        known.spo2_scale,
        on_oxygen=known.on_oxygen,
        baselines=baseline_values,
        sources=sources,
    )
