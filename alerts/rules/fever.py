"""The fever rule: IDSA's definitions of fever in long-term care residents (single, repeated, above
the resident's baseline). A pure function of a Window."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from alerts.models import Finding, Severity
from alerts.rules.window import (
    Sample,
    Window,
    finding,
    sustained,
)

FEVER_CRITICAL = 39.5


# IDSA's "repeated > 37.2 °C": every reading above it for at least this long, two readings at least.
# IDSA gives no interval; half an hour separates two deliberate measurements and, for a wristband
# reporting every minute, is thirty readings in a row rather than one warm moment. Twice-daily
# thermometer checks count too: the reading before the newest is in the context (LOOKBACKS).
REPEATED_FOR = timedelta(minutes=30)


REPEATED_BELOW_SINGLE = 0.6  # 37.8 − 37.2: a doctor's single-reading limit moves both


ABOVE_BASELINE = 1.1


@dataclass(frozen=True)
class FeverCriterion:
    """One of IDSA's definitions of fever in long-term care residents (CLINICAL.md)."""

    key: str
    # The limit from the single-reading limit (default 37.8 °C or the doctor's); None: not known.
    limit: Callable[[Window, float], float | None]
    holds: Callable[[Sequence[Sample], float], bool]  # the readings (context too), the limit
    condition: str  # shown in the alert, with {limit}


def _baseline_limit(window: Window, _single: float) -> float | None:
    baseline = window.baselines.get("body_temp")
    # Rounded: 36.7 + 1.1 is 37.800…04 in floating point, and a reading of 37.8 is not above 37.8.
    return None if baseline is None else round(baseline + ABOVE_BASELINE, 2)


FEVER_CRITERIA: tuple[FeverCriterion, ...] = (
    FeverCriterion(
        "single",
        lambda _w, single: single,
        lambda samples, limit: samples[-1].value > limit,
        "> {limit:g} °C",
    ),
    FeverCriterion(
        "repeated",
        lambda _w, single: round(single - REPEATED_BELOW_SINGLE, 2),
        lambda samples, limit: sustained(samples, lambda v: v > limit, REPEATED_FOR),
        "> {limit:g} °C on every reading for ≥ 30 min",
    ),
    FeverCriterion(
        "above_baseline",
        _baseline_limit,
        # Two readings agreeing: the rise is smaller than a fever's, one warm sample is not enough.
        lambda samples, limit: len(samples) >= 2 and all(s.value > limit for s in samples[-2:]),
        "> {limit:g} °C (1.1 °C above the resident's baseline), two readings",
    ),
)


def fever_rule(window: Window) -> Finding | None:
    samples = window.readings("body_temp")
    single = window.limits("body_temp").high
    # The newest reading decides whether there is a fever now; older ones only support it.
    if not samples or single is None or not window.fresh("body_temp", samples[-1]):
        return None
    baseline = window.baselines.get("body_temp")
    extra: dict[str, Any] = {}
    if baseline is not None:
        extra["baseline"] = {
            "value": baseline,
            "source": window.sources.get("baseline:body_temp", "given"),
        }
    for criterion in FEVER_CRITERIA:
        limit = criterion.limit(window, single)
        if limit is not None and criterion.holds(samples, limit):
            severity: Severity = "critical" if samples[-1].value >= FEVER_CRITICAL else "warning"
            condition = criterion.condition.format(limit=limit)
            return finding("fever", severity, samples, condition, criterion=criterion.key, **extra)
    return None
