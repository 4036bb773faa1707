"""Thresholds: the default limits per metric and a doctor's per-resident overrides, merged side by side.

Defaults for older adults are from shared CLINICAL.md (NHS Oximetry@home for SpO2, ACC/AHA for blood
pressure, IDSA long-term care for fever, ADA for glucose, consumer wearable practice for heart rate,
the NEWS2 SpO2 scale 2 for hypercapnic residents); a doctor overrides them per resident
(`resident_threshold`), one side at a time: the side an override leaves out keeps the default.
"""

from __future__ import annotations

from dataclasses import dataclass


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


SPO2_DEFAULT = Limits(low=94)  # ≤ 94 moderate, ≤ 92 severe (NHS Oximetry@home)


# SpO2 scale 2 (hypercapnic respiratory failure, prescribed target 88–92 %; CLINICAL.md, NEWS2):
# 88–92 is the target and scores 0, so ≤ 94 would alarm all day. Below the target: ≤ 87 (scores 1)
# warning, ≤ 85 (scores 2 or more) critical — the same "low − 2" step as on scale 1.
SPO2_SCALE2_DEFAULT = Limits(low=87)


HEART_DEFAULT = Limits(low=45, high=120)  # at rest for 10 min (consumer wearable defaults)


SYSTOLIC_DEFAULT = Limits(low=90, high=180)  # ≥ 180 crisis; ≤ 90 hypotension (ACC/AHA; NEWS2)


DIASTOLIC_DEFAULT = Limits(high=120)


TEMP_DEFAULT = Limits(high=37.8)  # single > 37.8 °C in older adults (IDSA; rules/fever.py)


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
