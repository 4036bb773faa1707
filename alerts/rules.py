"""The alert rules: one declarative table, each rule a pure function of a resident's recent data.

Defaults for older adults are from shared CLINICAL.md (NHS Oximetry@home for SpO2, ACC/AHA for blood
pressure, IDSA long-term care for fever, ADA for glucose, consumer wearable practice for heart rate);
a doctor overrides them per resident (`resident_threshold`). Only data measured within a rule's
look-back counts, so a back-filled upload of an episode that has since ended raises nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from alerts import news2
from alerts.models import Finding, Severity


@dataclass(frozen=True)
class Sample:
    value: float
    measured_at: datetime
    device_id: str = ""


@dataclass(frozen=True)
class Limits:
    """A resident's thresholds for one metric (None: no limit on that side)."""

    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Window:
    """A resident's recent readings per metric (oldest first), thresholds and facts, at `now`."""

    resident_id: int
    now: datetime
    samples: Mapping[str, Sequence[Sample]]
    overrides: Mapping[str, Limits] = field(default_factory=dict)
    spo2_scale: int = 1

    def recent(self, metric: str, within: timedelta) -> list[Sample]:
        start = self.now - within
        return [s for s in self.samples.get(metric, ()) if start <= s.measured_at <= self.now]

    def limits(self, metric: str, default: Limits) -> Limits:
        return self.overrides.get(metric, default)


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
SPO2_HOLD = timedelta(seconds=60)
HEART_HOLD = timedelta(minutes=10)

SPO2_DEFAULT = Limits(low=94)  # ≤ 94 moderate, ≤ 92 severe (NHS Oximetry@home)
HEART_DEFAULT = Limits(low=45, high=120)  # at rest for 10 min (consumer wearable defaults)
SYSTOLIC_DEFAULT = Limits(low=90, high=180)  # ≥ 180 crisis; ≤ 90 hypotension (ACC/AHA; NEWS2)
DIASTOLIC_DEFAULT = Limits(high=120)
TEMP_DEFAULT = Limits(high=37.8)  # single > 37.8 °C in older adults (IDSA)
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


def _spo2(window: Window) -> Finding | None:
    samples = window.recent("spo2", REALTIME)
    limits = window.limits("spo2", SPO2_DEFAULT)
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
    return _finding("spo2_low", severity, samples, f"≤ {low:g} % for ≥ 60 s")


def _heart_rate(window: Window) -> Finding | None:
    samples = window.recent("heart_rate", REALTIME)
    limits = window.limits("heart_rate", HEART_DEFAULT)
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
    systolic = window.recent("systolic_bp", REALTIME)
    diastolic = window.recent("diastolic_bp", REALTIME)
    sys_limits = window.limits("systolic_bp", SYSTOLIC_DEFAULT)
    dia_limits = window.limits("diastolic_bp", DIASTOLIC_DEFAULT)
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


def _fever(window: Window) -> Finding | None:
    samples = window.recent("body_temp", timedelta(hours=1))
    limits = window.limits("body_temp", TEMP_DEFAULT)
    if not samples or limits.high is None:
        return None
    latest = samples[-1].value
    if latest > limits.high:
        severity: Severity = "critical" if latest >= 39.5 else "warning"
        return _finding("fever", severity, samples, f"> {limits.high:g} °C")
    return None


def _glucose(window: Window) -> Finding | None:
    samples = window.recent("blood_glucose", timedelta(hours=1))
    limits = window.limits("blood_glucose", GLUCOSE_DEFAULT)
    if not samples or limits.low is None or samples[-1].value >= limits.low:
        return None
    severity: Severity = "critical" if samples[-1].value < 3.0 else "warning"
    return _finding("glucose_low", severity, samples, f"< {limits.low:g} mmol/L")


NEWS2_WINDOW = timedelta(hours=1)
NEWS2_SEVERITY: dict[str, Severity] = {
    "low-medium": "warning",
    "medium": "warning",
    "high": "critical",
}


def _news2(window: Window) -> Finding | None:
    """NEWS2 from the latest value of each parameter within the hour (alerts/news2.py, the same code
    as `eldercare news2`); wearables give a partial score, which says what it used and how old."""
    observations = {}
    for metric in news2.MEASURED:
        samples = window.recent(metric, NEWS2_WINDOW)[-3:]
        if samples:
            # The median of the last three: one noisy sample does not move the score.
            value = (
                sorted(s.value for s in samples)[len(samples) // 2]
                if len(samples) == 3
                else samples[-1].value
            )
            observations[metric] = news2.Observation(value, samples[-1].measured_at)
    if not observations:
        return None
    try:
        result = news2.score(
            observations=observations, spo2_scale=window.spo2_scale, now=window.now
        )
    except ValueError:
        # Scale 2 at ≥ 93 % cannot be scored without knowing air or oxygen: score without SpO2.
        observations.pop("spo2", None)
        result = news2.score(
            observations=observations, spo2_scale=window.spo2_scale, now=window.now
        )
    severity = NEWS2_SEVERITY.get(result.band)
    if severity is None:
        return None
    return Finding(
        rule="news2",
        severity=severity,
        title=TITLES["news2"],
        detail=result.as_json(),
        at=window.now,
    )


def _finding(rule: str, severity: Severity, samples: Sequence[Sample], condition: str) -> Finding:
    latest = samples[-1]
    return Finding(
        rule=rule,
        severity=severity,
        title=TITLES[rule],
        detail={
            "condition": condition,
            "value": latest.value,
            "measured_at": latest.measured_at.isoformat(),
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
