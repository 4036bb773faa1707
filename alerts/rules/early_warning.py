"""The NEWS2 rule: each parameter's latest confirmed value scored by alerts/news2.py, as an alert
and as the assessment the resident page shows. Pure functions of a Window."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from alerts import news2
from alerts.models import Finding, Severity
from alerts.rules.window import (
    LOOKBACKS,
    NEWS2_WINDOW,
    TITLES,
    Sample,
    Window,
)

# RCP NEWS2 asks for observations at least every 12 hours even at a score of 0: a spot value (a
# cuff's blood pressure) stays the chart's latest for that long, and the finding gives its age.
NEWS2_MAX_AGE = timedelta(hours=12)


NEWS2_SEVERITY: dict[str, Severity] = {
    "low-medium": "warning",
    "medium": "warning",
    "high": "critical",
}


# A lone reading (nothing else of that parameter within the hour) is taken as a spot measurement
# once it has stood this long; before that a second reading (a wristband's next minute) may still
# contradict it. See _news2_value.
NEWS2_LONE_SAMPLE_AFTER = timedelta(minutes=5)


def _score_of(metric: str, value: float, window: Window) -> int | None:
    try:
        return news2.parameter_score(
            metric, value, spo2_scale=window.spo2_scale, on_oxygen=window.on_oxygen
        )
    except ValueError:  # unscorable without air/oxygen (or implausible): judged by news2.score
        return None


def _news2_value(metric: str, samples: Sequence[Sample], window: Window) -> Sample | None:
    """The reading that stands for `metric` in the score, or None while it is unconfirmed.

    One noisy sample must not move the score: of three or more readings the median of the last
    three counts; of two, the less alarming (both are at least that bad); a lone reading counts
    when it is normal (scores 0, so it cannot raise an alarm) or has stood uncontradicted for
    NEWS2_LONE_SAMPLE_AFTER (a cuff or thermometer spot check). Only readings within the hour
    before the newest confirm each other: this morning's cuff reading does not outvote tonight's.
    """
    run = [s for s in samples if s.measured_at >= samples[-1].measured_at - NEWS2_WINDOW]
    last = run[-3:]
    if len(last) == 3:
        middle = sorted(last, key=lambda s: s.value)[1]
        return Sample(middle.value, last[-1].measured_at, last[-1].device_id)
    if len(last) == 2:
        older, newer = (_score_of(metric, s.value, window) for s in last)
        if older is not None and newer is not None and older < newer:
            return last[0]
        return last[-1]
    lone = last[0]
    if window.now - lone.measured_at >= NEWS2_LONE_SAMPLE_AFTER:
        return lone
    return lone if _score_of(metric, lone.value, window) == 0 else None


@dataclass(frozen=True)
class News2Assessment:
    detail: dict[str, Any]  # news2 Result.as_json() + facts (+ unconfirmed readings)
    band: str
    scored: bool  # some parameter had a confirmed value
    fresh: bool  # some parameter used is recent enough to alert on (not only old readings)


def assess_news2(window: Window) -> News2Assessment:
    """NEWS2 from each parameter's latest confirmed value (within the hour for wearables' metrics,
    NEWS2_MAX_AGE for spot ones; alerts/news2.py, the same code as `eldercare news2`); wearables
    give a partial score, which says what it used and how old, where air/oxygen and consciousness
    came from (or that nothing records them), what it could not score (SpO2 ≥ 93 % on scale 2
    without knowing air or oxygen) and which readings were not yet confirmed. The rule and the
    resident page (API) both show this."""
    observations = {}
    unconfirmed = {}
    fresh = False
    for metric in news2.MEASURED:
        samples = window.recent(metric, min(LOOKBACKS[metric].context, NEWS2_MAX_AGE))
        if not samples:
            continue
        chosen = _news2_value(metric, samples, window)
        if chosen is None:
            unconfirmed[metric] = {
                "value": samples[-1].value,
                "measured_at": samples[-1].measured_at.isoformat(),
                "reason": "a single reading, not yet confirmed by another",
            }
            continue
        observations[metric] = news2.Observation(chosen.value, chosen.measured_at)
        fresh = fresh or window.fresh(metric, samples[-1])
    result = news2.score(
        observations=observations,
        spo2_scale=window.spo2_scale,
        on_oxygen=window.on_oxygen,
        consciousness=window.consciousness,
        now=window.now,
        unscorable="report",
    )
    detail = result.as_json()
    detail["facts"] = {
        "air_or_oxygen": _fact(
            window,
            "on_oxygen",
            window.on_oxygen,
            "nothing records whether the resident is on oxygen",
        ),
        "consciousness": _fact(
            window, "consciousness", window.consciousness, "no device observes it (ACVPU)"
        ),
    }
    if unconfirmed:
        detail["unconfirmed"] = unconfirmed
    return News2Assessment(detail, result.band, bool(observations), fresh)


def news2_rule(window: Window) -> Finding | None:
    """NEWS2 as an alert (assess_news2): raised only when some parameter it used is fresh — a set
    of old readings alone is history — and the band calls for it."""
    assessment = assess_news2(window)
    if not assessment.scored or not assessment.fresh:
        return None
    severity = NEWS2_SEVERITY.get(assessment.band)
    if severity is None:
        return None
    return Finding(
        rule="news2",
        severity=severity,
        title=TITLES["news2"],
        detail=assessment.detail,
        at=window.now,
    )


def _fact(window: Window, key: str, value: object, unknown: str) -> str:
    """Where NEWS2's air/oxygen or consciousness came from, or why it is missing."""
    if value is None:
        return f"not known: {unknown}"
    return window.sources.get(key, "given")
