"""Emergency events (SOS, fall) as findings: live or reported late, and whether a cancel still counts.

Pure functions of the stored event; the engine does the I/O.

Late events. A device that was out of reach keeps its events and sends them when it is back, with
the time they happened (`occurred_at`, the device's clock) — `received_at` is ours. Lateness is
`received_at - occurred_at`, the device's own delay: an event that reached us promptly but waited
for a restarted alert engine is not late, somebody may still be waiting for help.

Up to LATE_AFTER an event is a live emergency: full escalation (team, emergency contacts) and the
device hears "doctor_notified". The first hour after a fall matters most (a "long lie" on the floor
causes harm of its own), and an SOS unanswered for half an hour is still a call for help, so the
limit is generous. Older events are history, but somebody must look at them: the alert is still
critical and goes at once to the policy's first tier (contracted doctor and duty desk) with
reminders until acknowledged; it is marked `detail.late` with its age, its title says "reported
late", it does not escalate to the team or the family, and the device is not told a doctor was
notified. A device clock that is far behind makes a live event look late: it still reaches the
doctor and the desk as critical, which is why late events are not demoted further.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from alerts.models import AlertState, Finding
from alerts.rules.window import TITLES

LATE_AFTER = timedelta(hours=1)
EVENT_RULES = frozenset({"sos", "fall"})
CANCELS = {"sos_cancel": "sos", "fall_cancel": "fall"}


def is_late(occurred_at: datetime, received_at: datetime) -> bool:
    return received_at - occurred_at > LATE_AFTER


def age_text(age: timedelta) -> tuple[str, str]:
    """A short age, Chinese and English: 45 分钟 / 45 min, 5 小时 / 5 h, 2 天 / 2 d."""
    minutes = int(age.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} 分钟", f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} 小时", f"{minutes // 60} h"
    return f"{minutes // 1440} 天", f"{minutes // 1440} d"


def event_finding(
    kind: str, event_id: int, device_id: str, occurred_at: datetime, received_at: datetime
) -> Finding:
    """The critical finding of an SOS or fall event, marked late when it was reported late."""
    detail: dict[str, Any] = {
        "event_id": event_id,
        "occurred_at": occurred_at.isoformat(),
        "received_at": received_at.isoformat(),
    }
    title = TITLES[kind]
    if is_late(occurred_at, received_at):
        late_by = received_at - occurred_at
        detail |= {"late": True, "late_by_s": int(late_by.total_seconds())}
        zh, _sep, en = title.partition(" / ")
        age_zh, age_en = age_text(late_by)
        title = f"{zh}（迟到上报：{age_zh}前） / {en} (reported late: {age_en} ago)"
    return Finding(rule=kind, severity="critical", title=title, detail=detail, device_id=device_id)


@dataclass(frozen=True)
class Press:
    """One SOS press or fall an alert holds: which device, when (the device's clock)."""

    device_id: str
    occurred_at: datetime


def cancel_refusal(
    *,
    rule: str,
    alert_state: AlertState,
    acknowledged: bool,
    presses: list[Press],
    device_id: str,
    cancelled_at: datetime,
    window: timedelta,
) -> str | None:
    """Why a device's cancel only adds a note to the alert; None when it resolves it.

    A cancel is the wearer saying "false alarm" about their own call, so it counts only
    - from the device that raised every press the alert holds (another button of the resident, or a
      bathroom press the bedroom button knows nothing of, is not withdrawn by it),
    - stamped at or after the latest of them (a cancel of an earlier press, or a day-old one from a
      backlog, does not withdraw a newer call; judged on the device's own clock),
    - while no person has acknowledged the alert (once somebody took it on, a person ends it),
    - for a fall, besides: inside its cancel window while nobody has been alarmed yet (pending).
    Refused, it is a note on the timeline and a person must check and resolve the alert.
    """
    if acknowledged:
        return "a person has acknowledged the alert"
    others = sorted({p.device_id for p in presses if p.device_id != device_id})
    if others:
        return f"the {rule} was raised by {', '.join(others)}, not by {device_id}"
    latest = max((p.occurred_at for p in presses), default=None)
    if latest is not None and cancelled_at < latest:
        return f"it is older than the latest {rule} ({latest.isoformat()})"
    if rule == "fall":
        if alert_state != "pending":
            return f"after the {window} window, people were alarmed"
        if latest is not None and cancelled_at - latest > window:
            return f"after the {window} window"
    return None
