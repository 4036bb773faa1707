"""Alert domain types: severities, findings of rules, alert rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

# The one definition of the severities, mildest first: a severity's rank is its position.
Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = get_args(Severity)
SEVERITY_RANK: dict[str, int] = {severity: rank for rank, severity in enumerate(SEVERITIES)}

# An alert's states (the `alert.state` column): pending (a fall's cancel window), open,
# acknowledged, resolved.
AlertState = Literal["pending", "open", "acknowledged", "resolved"]


def worse(a: Severity, b: Severity) -> bool:
    """True when severity `a` is worse than `b`."""
    return SEVERITY_RANK[a] > SEVERITY_RANK[b]


class AlertError(Exception):
    """An action the alert life cycle refuses; the message says why."""


@dataclass(frozen=True)
class Finding:
    """What a rule found about one resident at one moment: raise (or keep) this alert."""

    rule: str
    severity: Severity
    title: str
    detail: dict[str, Any] = field(default_factory=dict)
    device_id: str | None = None
    # Not snoozable: SOS, fall, NEWS2 high and anything else critical.
    at: datetime | None = None


@dataclass(frozen=True)
class Alert:
    id: int
    resident_id: int | None
    rule: str
    severity: Severity
    state: AlertState
    title: str
    detail: dict[str, Any]
    device_id: str | None
    opened_at: datetime
    last_seen_at: datetime
    occurrences: int
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution_note: str | None
    tier: int
    next_tier_at: datetime | None
    next_reminder_at: datetime | None
    reminders_sent: int
    # The current escalation round: tiers count from escalation_base (None on rows that predate
    # migration 0006: opened_at). A worsening or a new SOS press after an acknowledgement starts
    # another round.
    escalation_base: datetime | None = None
    escalation_round: int = 0

    @property
    def late(self) -> bool:
        """An event alert raised from an event reported long after it happened."""
        return bool(self.detail.get("late"))
