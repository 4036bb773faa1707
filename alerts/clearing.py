"""When a reading alert may count as cleared: fresh readings show the condition gone, not silence.

A rule stops firing either because new readings no longer meet its condition, or because the
readings stopped (the sensor lost contact, the wristband came off) and the old ones aged out of the
rule's look-back. Only the first is "cleared". Evidence is a reading of the alert's own metrics
measured after the alert last fired, and still fresh: for continuously monitored metrics (a
wearable reports every minute) no older than CONTINUOUS; for spot measurements (a cuff, a
thermometer, a glucose meter: a few a day) no older than the rule's clear period plus CONTINUOUS,
so that one normal measurement can carry the alert through its clear period. Without evidence the
alert stays open (and a clear period that had started starts again when readings come back).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from alerts import news2

CONTINUOUS = timedelta(minutes=5)


@dataclass(frozen=True)
class Evidence:
    metrics: tuple[str, ...]
    spot: bool  # spot measurements (few a day) rather than a continuous stream


# Alert rule -> the readings that can show it cleared. A rule missing here never resolves itself:
# a person resolves it (add new reading rules here).
EVIDENCE: dict[str, Evidence] = {
    "spo2_low": Evidence(("spo2",), spot=False),
    "heart_rate_high": Evidence(("heart_rate",), spot=False),
    "heart_rate_low": Evidence(("heart_rate",), spot=False),
    "hypertensive_crisis": Evidence(("systolic_bp", "diastolic_bp"), spot=True),
    "hypotension": Evidence(("systolic_bp",), spot=True),
    "fever": Evidence(("body_temp",), spot=True),
    "glucose_low": Evidence(("blood_glucose",), spot=True),
    "news2": Evidence(news2.MEASURED, spot=False),
}


def freshness(rule: str, clears_after: timedelta) -> timedelta:
    evidence = EVIDENCE.get(rule)
    if evidence is not None and evidence.spot:
        return clears_after + CONTINUOUS
    return CONTINUOUS


def metrics_of(rules: list[str]) -> list[str]:
    return sorted({m for r in rules if r in EVIDENCE for m in EVIDENCE[r].metrics})


def clearing_evidence(
    rule: str,
    newest: dict[str, datetime],
    last_fired: datetime,
    now: datetime,
    clears_after: timedelta,
) -> tuple[str, datetime] | None:
    """(metric, measured_at) of the newest reading that shows the rule's condition gone, or None
    when there is none (no readings since the alert last fired, or too old)."""
    evidence = EVIDENCE.get(rule)
    if evidence is None:
        return None
    found = [(at, metric) for metric in evidence.metrics if (at := newest.get(metric)) is not None]
    if not found:
        return None
    at, metric = max(found)
    if at <= last_fired or now - at > freshness(rule, clears_after):
        return None
    return metric, at
