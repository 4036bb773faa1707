"""What a rule sees: a resident's recent readings (Window, Sample), how old a reading may be per
metric (LOOKBACKS), and what every rule uses to judge and report (sustained, finding, TITLES).

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

from alerts.models import Finding, Severity
from alerts.rules.limits import (
    Limits,
    defaults_for,
    effective_limits,
)


@dataclass(frozen=True)
class Sample:
    value: float
    measured_at: datetime
    device_id: str = ""


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


def finding(
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
