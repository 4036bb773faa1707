"""The alert rules: one declarative table, each rule a pure function of a resident's recent data.

Defaults for older adults are from shared CLINICAL.md (NHS Oximetry@home for SpO2, ACC/AHA for blood
pressure, IDSA long-term care for fever, ADA for glucose, consumer wearable practice for heart rate,
the NEWS2 SpO2 scale 2 for hypercapnic residents); a doctor overrides them per resident
(`resident_threshold`), one side at a time: the side an override leaves out keeps the default.
How old a reading may be is declared per metric (LOOKBACKS), by the cadence of the devices that
measure it: the reading that raises an alert must be fresh, so a back-filled upload of an episode
that has since ended raises nothing; older readings serve only as context ("repeated", NEWS2's
latest blood pressure).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from alerts import news2
from alerts.models import Finding, Severity


@dataclass(frozen=True)
class Sample:
    value: float
    measured_at: datetime
    device_id: str = ""


@dataclass(frozen=True)
class Limits:
    """Thresholds for one metric. In a rule's default, None: no limit on that side. In a doctor's
    override (a `resident_threshold` row), None: that side keeps the rule's default."""

    low: float | None = None
    high: float | None = None


def effective_limits(default: Limits, override: Limits | None) -> Limits:
    """The limits a rule applies: the override's sides where given, the default's elsewhere.

    A one-sided override (`--high 200` for a hypertensive resident) must not switch off the other
    side (hypotension alerts): each side is merged on its own. To relax a side, the doctor sets it
    to another value; no side of a default can be switched off per resident.
    """
    if override is None:
        return default
    return Limits(
        low=default.low if override.low is None else override.low,
        high=default.high if override.high is None else override.high,
    )


@dataclass(frozen=True)
class Window:
    """A resident's recent readings per metric (oldest first), thresholds and facts, at `now`.

    The last three facts are optional: None / empty means not known, and the rules say so rather
    than guess (NEWS2 lists the parameter as missing; the baseline criterion for fever is skipped).
    """

    resident_id: int
    now: datetime
    samples: Mapping[str, Sequence[Sample]]
    overrides: Mapping[str, Limits] = field(default_factory=dict)
    spo2_scale: int = 1
    on_oxygen: bool | None = None  # supplemental oxygen (NEWS2 "air or oxygen")
    consciousness: str | None = None  # ACVPU code, when someone has recorded it
    # The resident's usual value per metric (body_temp: for IDSA's "> 1.1 °C above baseline").
    baselines: Mapping[str, float] = field(default_factory=dict)
    # Where a fact came from ("on_oxygen", "consciousness", "baseline:body_temp"), for the findings
    # to say what they used: a record set by a doctor is not a measurement.
    sources: Mapping[str, str] = field(default_factory=dict)

    def recent(self, metric: str, within: timedelta) -> list[Sample]:
        start = self.now - within
        return [s for s in self.samples.get(metric, ()) if start <= s.measured_at <= self.now]

    def readings(self, metric: str) -> list[Sample]:
        """The metric's readings within its look-back (LOOKBACKS), context included."""
        return self.recent(metric, LOOKBACKS[metric].context)

    def fresh(self, metric: str, sample: Sample) -> bool:
        """Whether `sample` is recent enough to raise an alert now (not a back-filled one)."""
        return self.now - sample.measured_at <= LOOKBACKS[metric].fresh

    def limits(self, metric: str, default: Limits | None = None) -> Limits:
        """The thresholds the rules apply to `metric` for this resident."""
        base = default if default is not None else defaults_for(self.spo2_scale).get(metric)
        return effective_limits(base or Limits(), self.overrides.get(metric))


@dataclass(frozen=True)
class Rule:
    key: str
    produces: tuple[str, ...]  # the alert rules (keys of TITLES) its findings carry
    evaluate: Callable[[Window], Finding | None]
    # How long the condition must be absent before the alert resolves itself.
    clears_after: timedelta = timedelta(minutes=10)


def sustained(
    samples: Sequence[Sample], holds: Callable[[float], bool], duration: timedelta
) -> bool:
    """True when every sample of the last `duration` (ending at the newest sample) satisfies `holds`
    and the samples span at least `duration`: one noisy sample is not an emergency."""
    if not samples:
        return False
    newest = samples[-1].measured_at
    start = newest - duration
    span = [s for s in samples if s.measured_at >= start]
    earlier = [s for s in samples if s.measured_at < start]
    # The condition must already hold at the start of the span: the sample just before it counts.
    if earlier:
        span.insert(0, earlier[-1])
    return (
        len(span) >= 2
        and newest - span[0].measured_at >= duration
        and all(holds(s.value) for s in span)
    )


# Look-backs: how old a reading may be and still describe the resident's state now.
REALTIME = timedelta(minutes=15)
NEWS2_WINDOW = timedelta(hours=1)
# A spot measurement (a cuff, a thermometer, a glucose meter) reaches us through a phone or a
# gateway, minutes to an hour after it was taken, and still describes the resident then; a meter
# synced the next morning is history.
SPOT_FRESH = timedelta(hours=1)
# The readings before the hour that may serve as context: a few are enough for every rule (the
# median of three, two agreeing readings, the reading before a 30-minute span).
CONTEXT_READINGS = 3


@dataclass(frozen=True)
class Lookback:
    """How far back a metric's readings count, by the cadence of the devices that measure it.

    `fresh`: the newest reading raises (or keeps) an alert only this soon after it was measured;
    `every`: every reading this recent is the rules' data (a wearable's minute stream);
    `context`: before that, the last CONTEXT_READINGS readings this recent also count, as context
    (for "repeated", for NEWS2's latest spot value), never as the reading that raises an alert.
    """

    fresh: timedelta
    every: timedelta = NEWS2_WINDOW
    context: timedelta = NEWS2_WINDOW


_CONTINUOUS = Lookback(fresh=REALTIME)  # wearables, every minute (devices/models.py)
LOOKBACKS: dict[str, Lookback] = {
    "heart_rate": _CONTINUOUS,
    "spo2": _CONTINUOUS,
    "resp_rate": _CONTINUOUS,
    # A cuff, twice a day: the morning's reading is NEWS2's blood pressure until the evening's
    # (NEWS2_MAX_AGE); hypertensive_crisis and hypotension read only the newest, fresh one.
    "systolic_bp": Lookback(fresh=SPOT_FRESH, context=timedelta(hours=12)),
    "diastolic_bp": Lookback(fresh=SPOT_FRESH),
    # A thermometer twice a day, or once (a day and a bit: a check a little late), or a wristband:
    # IDSA's "repeated" compares today's reading with the one before it.
    "body_temp": Lookback(fresh=SPOT_FRESH, context=timedelta(hours=26)),
    # A meter once a day; glucose_low reads only the newest reading, so nothing older is loaded.
    "blood_glucose": Lookback(fresh=SPOT_FRESH),
}

SPO2_HOLD = timedelta(seconds=60)
HEART_HOLD = timedelta(minutes=10)

SPO2_DEFAULT = Limits(low=94)  # ≤ 94 moderate, ≤ 92 severe (NHS Oximetry@home)
# SpO2 scale 2 (hypercapnic respiratory failure, prescribed target 88–92 %; CLINICAL.md, NEWS2):
# 88–92 is the target and scores 0, so ≤ 94 would alarm all day. Below the target: ≤ 87 (scores 1)
# warning, ≤ 85 (scores 2 or more) critical — the same "low − 2" step as on scale 1.
SPO2_SCALE2_DEFAULT = Limits(low=87)
HEART_DEFAULT = Limits(low=45, high=120)  # at rest for 10 min (consumer wearable defaults)
SYSTOLIC_DEFAULT = Limits(low=90, high=180)  # ≥ 180 crisis; ≤ 90 hypotension (ACC/AHA; NEWS2)
DIASTOLIC_DEFAULT = Limits(high=120)
TEMP_DEFAULT = Limits(high=37.8)  # single > 37.8 °C in older adults (IDSA; see FEVER_CRITERIA)
GLUCOSE_DEFAULT = Limits(low=3.9)  # < 3.9 level 1, < 3.0 level 2 urgent (ADA)


# The defaults per metric, for display (the dashboard draws them on charts).
DEFAULT_LIMITS: dict[str, Limits] = {
    "spo2": SPO2_DEFAULT,
    "heart_rate": HEART_DEFAULT,
    "systolic_bp": SYSTOLIC_DEFAULT,
    "diastolic_bp": DIASTOLIC_DEFAULT,
    "body_temp": TEMP_DEFAULT,
    "blood_glucose": GLUCOSE_DEFAULT,
}


def defaults_for(spo2_scale: int) -> dict[str, Limits]:
    """The default thresholds for a resident on this SpO2 scale (the API and dashboard show these,
    merged with the doctor's overrides by `effective_limits`)."""
    if spo2_scale == 2:
        return {**DEFAULT_LIMITS, "spo2": SPO2_SCALE2_DEFAULT}
    return dict(DEFAULT_LIMITS)


def _spo2(window: Window) -> Finding | None:
    samples = window.recent("spo2", REALTIME)
    limits = window.limits("spo2")
    if not samples or limits.low is None:
        return None
    low = limits.low
    severe = low - 2
    if sustained(samples, lambda v: v <= severe, SPO2_HOLD):
        severity: Severity = "critical"
    elif sustained(samples, lambda v: v <= low, SPO2_HOLD):
        severity = "warning"
    else:
        return None
    scale = " (SpO2 scale 2, target 88–92 %)" if window.spo2_scale == 2 else ""
    return _finding("spo2_low", severity, samples, f"≤ {low:g} % for ≥ 60 s{scale}")


def _heart_rate(window: Window) -> Finding | None:
    samples = window.recent("heart_rate", REALTIME)
    limits = window.limits("heart_rate")
    if limits.high is not None and sustained(samples, lambda v: v > limits.high, HEART_HOLD):  # type: ignore[operator]
        severity: Severity = "critical" if samples[-1].value >= limits.high + 20 else "warning"
        return _finding(
            "heart_rate_high", severity, samples, f"> {limits.high:g} /min for ≥ 10 min"
        )
    if limits.low is not None and sustained(samples, lambda v: v < limits.low, HEART_HOLD):  # type: ignore[operator]
        severity = "critical" if samples[-1].value < 40 else "warning"
        return _finding("heart_rate_low", severity, samples, f"< {limits.low:g} /min for ≥ 10 min")
    return None


def _blood_pressure(window: Window) -> Finding | None:
    systolic = window.recent("systolic_bp", LOOKBACKS["systolic_bp"].fresh)
    diastolic = window.recent("diastolic_bp", LOOKBACKS["diastolic_bp"].fresh)
    sys_limits = window.limits("systolic_bp")
    dia_limits = window.limits("diastolic_bp")
    # A cuff measurement is itself an averaged reading: the latest one decides.
    if systolic and sys_limits.high is not None and systolic[-1].value >= sys_limits.high:
        return _finding(
            "hypertensive_crisis", "critical", systolic, f"systolic ≥ {sys_limits.high:g}"
        )
    if diastolic and dia_limits.high is not None and diastolic[-1].value >= dia_limits.high:
        return _finding(
            "hypertensive_crisis", "critical", diastolic, f"diastolic ≥ {dia_limits.high:g}"
        )
    if systolic and sys_limits.low is not None and systolic[-1].value <= sys_limits.low:
        return _finding("hypotension", "warning", systolic, f"systolic ≤ {sys_limits.low:g}")
    return None


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


def _fever(window: Window) -> Finding | None:
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
            return _finding("fever", severity, samples, condition, criterion=criterion.key, **extra)
    return None


def _glucose(window: Window) -> Finding | None:
    samples = window.recent("blood_glucose", LOOKBACKS["blood_glucose"].fresh)
    limits = window.limits("blood_glucose")
    if not samples or limits.low is None or samples[-1].value >= limits.low:
        return None
    severity: Severity = "critical" if samples[-1].value < 3.0 else "warning"
    return _finding("glucose_low", severity, samples, f"< {limits.low:g} mmol/L")


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


def _news2(window: Window) -> Finding | None:
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


def _finding(
    rule: str, severity: Severity, samples: Sequence[Sample], condition: str, **extra: Any
) -> Finding:
    latest = samples[-1]
    return Finding(
        rule=rule,
        severity=severity,
        title=TITLES[rule],
        detail={
            "condition": condition,
            "value": latest.value,
            "measured_at": latest.measured_at.isoformat(),
            **extra,
        },
        device_id=latest.device_id or None,
        at=latest.measured_at,
    )


# The title of every kind of alert, Chinese first.
TITLES: dict[str, str] = {
    "spo2_low": "血氧过低 / Low SpO2",
    "heart_rate_high": "心率过快 / Heart rate high",
    "heart_rate_low": "心率过慢 / Heart rate low",
    "hypertensive_crisis": "高血压危象 / Hypertensive crisis",
    "hypotension": "低血压 / Hypotension",
    "fever": "发热 / Fever",
    "glucose_low": "低血糖 / Low blood glucose",
    "news2": "NEWS2 预警 / NEWS2 early warning",
    "sos": "SOS 呼救 / SOS button pressed",
    "fall": "跌倒 / Fall detected",
    "no_data": "设备无数据 / Device silent",
    "low_battery": "电量低 / Low battery",
}

RULES: tuple[Rule, ...] = (
    Rule("spo2", ("spo2_low",), _spo2),
    Rule("heart_rate", ("heart_rate_high", "heart_rate_low"), _heart_rate),
    Rule("blood_pressure", ("hypertensive_crisis", "hypotension"), _blood_pressure),
    Rule("fever", ("fever",), _fever, clears_after=timedelta(hours=2)),
    Rule("glucose", ("glucose_low",), _glucose, clears_after=timedelta(hours=2)),
    Rule("news2", ("news2",), _news2, clears_after=timedelta(minutes=30)),
)
CLEARS_AFTER: dict[str, timedelta] = {key: r.clears_after for r in RULES for key in r.produces}
READING_RULE_KEYS = frozenset(CLEARS_AFTER)


def evaluate(window: Window) -> list[Finding]:
    """Every rule's finding for this resident now (at most one per alert rule)."""
    findings = (rule.evaluate(window) for rule in RULES)
    return [f for f in findings if f is not None]
