"""The threshold rules: low SpO2, heart rate out of range, blood pressure (crisis, hypotension),
low glucose. Pure functions of a Window."""

from __future__ import annotations

from datetime import timedelta

from alerts.models import Finding, Severity
from alerts.rules.window import (
    LOOKBACKS,
    REALTIME,
    Window,
    finding,
    sustained,
)

SPO2_HOLD = timedelta(seconds=60)


HEART_HOLD = timedelta(minutes=10)


def spo2_rule(window: Window) -> Finding | None:
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
    return finding("spo2_low", severity, samples, f"≤ {low:g} % for ≥ 60 s{scale}")


def heart_rate_rule(window: Window) -> Finding | None:
    samples = window.recent("heart_rate", REALTIME)
    limits = window.limits("heart_rate")
    if limits.high is not None and sustained(samples, lambda v: v > limits.high, HEART_HOLD):  # type: ignore[operator]
        severity: Severity = "critical" if samples[-1].value >= limits.high + 20 else "warning"
        return finding("heart_rate_high", severity, samples, f"> {limits.high:g} /min for ≥ 10 min")
    if limits.low is not None and sustained(samples, lambda v: v < limits.low, HEART_HOLD):  # type: ignore[operator]
        severity = "critical" if samples[-1].value < 40 else "warning"
        return finding("heart_rate_low", severity, samples, f"< {limits.low:g} /min for ≥ 10 min")
    return None


def blood_pressure_rule(window: Window) -> Finding | None:
    systolic = window.recent("systolic_bp", LOOKBACKS["systolic_bp"].fresh)
    diastolic = window.recent("diastolic_bp", LOOKBACKS["diastolic_bp"].fresh)
    sys_limits = window.limits("systolic_bp")
    dia_limits = window.limits("diastolic_bp")
    # A cuff measurement is itself an averaged reading: the latest one decides.
    if systolic and sys_limits.high is not None and systolic[-1].value >= sys_limits.high:
        return finding(
            "hypertensive_crisis", "critical", systolic, f"systolic ≥ {sys_limits.high:g}"
        )
    if diastolic and dia_limits.high is not None and diastolic[-1].value >= dia_limits.high:
        return finding(
            "hypertensive_crisis", "critical", diastolic, f"diastolic ≥ {dia_limits.high:g}"
        )
    if systolic and sys_limits.low is not None and systolic[-1].value <= sys_limits.low:
        return finding("hypotension", "warning", systolic, f"systolic ≤ {sys_limits.low:g}")
    return None


def glucose_rule(window: Window) -> Finding | None:
    samples = window.recent("blood_glucose", LOOKBACKS["blood_glucose"].fresh)
    limits = window.limits("blood_glucose")
    if not samples or limits.low is None or samples[-1].value >= limits.low:
        return None
    severity: Severity = "critical" if samples[-1].value < 3.0 else "warning"
    return finding("glucose_low", severity, samples, f"< {limits.low:g} mmol/L")
