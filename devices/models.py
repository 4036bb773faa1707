"""Device kinds and registry records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime


@dataclass(frozen=True)
class DeviceKind:
    key: str
    display_zh: str
    metrics: tuple[str, ...]
    # How often a working device of this kind reports; "no data" alerts use a multiple of it.
    expected_interval_s: int
    emits_events: bool = False


DEVICE_KINDS: dict[str, DeviceKind] = {
    k.key: k
    for k in (
        DeviceKind(
            "wristband",
            "智能手环",
            ("heart_rate", "spo2", "steps", "resp_rate", "body_temp"),
            60,
            True,
        ),
        DeviceKind(
            "bp_cuff", "电子血压计", ("systolic_bp", "diastolic_bp", "heart_rate"), 12 * 3600
        ),
        DeviceKind("spo2_clip", "指夹血氧仪", ("spo2", "heart_rate"), 60),
        DeviceKind("glucometer", "血糖仪", ("blood_glucose",), 24 * 3600),
        DeviceKind("thermometer", "体温计", ("body_temp",), 12 * 3600),
        DeviceKind("scale", "体重秤", ("weight",), 7 * 24 * 3600),
        DeviceKind("sos_button", "紧急呼叫按钮", (), 300, True),
        DeviceKind("fall_detector", "跌倒检测器", (), 300, True),
    )
}


@dataclass(frozen=True)
class Resident:
    id: int
    name: str
    birth_date: date | None
    gender: str | None
    address: str | None
    archive_id: str | None
    spo2_scale: int
    created_at: datetime


@dataclass(frozen=True)
class Device:
    device_id: str
    kind: str
    model: str | None
    status: str
    resident_id: int | None
    online: bool
    battery: int | None
    firmware: str | None
    last_seen_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class Binding:
    device_id: str
    resident_id: int
    bound_at: datetime
    unbound_at: datetime | None
