"""The vital-sign metrics eldercare accepts: units, codes and plausible ranges in one table.

Codes and units follow the HL7 FHIR R4 vital-signs profile (LOINC, UCUM), see shared CLINICAL.md.
Plausible ranges reject sensor garbage, not clinical extremes: a reading outside them cannot come from
a living person wearing a working device, so it is quarantined rather than alerted on.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    key: str
    display: str
    display_zh: str
    unit: str  # UCUM
    loinc: str
    low: float  # plausible range, inclusive
    high: float
    decimals: int


METRICS: dict[str, Metric] = {
    m.key: m
    for m in (
        Metric("heart_rate", "Heart rate", "心率", "/min", "8867-4", 20, 250, 0),
        Metric("spo2", "Oxygen saturation", "血氧饱和度", "%", "59408-5", 50, 100, 0),
        Metric("systolic_bp", "Systolic blood pressure", "收缩压", "mm[Hg]", "8480-6", 50, 280, 0),
        Metric(
            "diastolic_bp", "Diastolic blood pressure", "舒张压", "mm[Hg]", "8462-4", 20, 180, 0
        ),
        Metric("resp_rate", "Respiratory rate", "呼吸频率", "/min", "9279-1", 3, 70, 0),
        Metric("body_temp", "Body temperature", "体温", "Cel", "8310-5", 30, 43, 1),
        Metric("blood_glucose", "Blood glucose", "血糖", "mmol/L", "15074-8", 0.5, 40, 1),
        Metric("steps", "Steps", "步数", "/d", "41950-7", 0, 100_000, 0),
        Metric("weight", "Body weight", "体重", "kg", "29463-7", 20, 250, 1),
    )
}
