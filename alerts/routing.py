"""Who is notified at each escalation tier: a pure function of the policy and the resident's care circle.

Never empty: without an active contract the duty desk takes the contracted doctor's place, and the
default duty desk (created by the migrations) stands behind every institution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from alerts.channels.base import Recipient
from alerts.models import Severity


@dataclass(frozen=True)
class Tier:
    after_s: int
    notify: tuple[
        str, ...
    ]  # contracted_doctor, team, duty_desk, partner_duty_desk, emergency_contacts


@dataclass(frozen=True)
class Policy:
    severity: Severity
    reminder_every_s: int | None
    tiers: tuple[Tier, ...]

    @classmethod
    def from_row(
        cls, severity: Severity, reminder_every_s: int | None, tiers: list[dict[str, Any]]
    ) -> Policy:
        return cls(
            severity,
            reminder_every_s,
            tuple(
                Tier(int(t["after_s"]), tuple(t["notify"]))
                for t in sorted(tiers, key=lambda t: t["after_s"])
            ),
        )


@dataclass(frozen=True)
class Person:
    """A doctor or duty desk with their preferences."""

    id: int
    name: str
    email: str | None = None
    channels: dict[str, list[str]] = field(default_factory=dict)
    quiet_start: Any = None  # datetime.time
    quiet_end: Any = None
    timezone: str = "Asia/Shanghai"


@dataclass(frozen=True)
class CareCircle:
    contracted_doctor: Person | None
    team: tuple[Person, ...]
    duty_desk: Person
    partner_duty_desk: Person | None
    contacts: tuple[Recipient, ...]


def tier_people(circle: CareCircle, tier: Tier) -> list[Person | Recipient]:
    """The recipients of one tier, without duplicates, in the order the policy names them."""
    chosen: list[Person | Recipient] = []
    for target in tier.notify:
        if target == "contracted_doctor":
            chosen.append(circle.contracted_doctor or circle.duty_desk)
        elif target == "team":
            chosen.extend(circle.team)
        elif target == "duty_desk":
            chosen.append(circle.duty_desk)
        elif target == "partner_duty_desk" and circle.partner_duty_desk is not None:
            chosen.append(circle.partner_duty_desk)
        elif target == "emergency_contacts":
            chosen.extend(circle.contacts)
    unique: list[Person | Recipient] = []
    seen: set[tuple[str, str]] = set()
    for who in chosen:
        key = ("contact", who.id) if isinstance(who, Recipient) else ("doctor", str(who.id))
        if key not in seen:
            seen.add(key)
            unique.append(who)
    return unique


DEFAULT_CHANNELS: dict[Severity, list[str]] = {
    "critical": ["mqtt", "email"],
    "warning": ["mqtt", "email"],
    "info": ["mqtt"],
}


def in_quiet_hours(person: Person, now: datetime) -> bool:
    if person.quiet_start is None or person.quiet_end is None:
        return False
    local = now.astimezone(ZoneInfo(person.timezone)).time()
    start, end = person.quiet_start, person.quiet_end
    return bool(start <= local < end) if start <= end else bool(local >= start or local < end)


def quiet_until(person: Person, severity: Severity, now: datetime) -> datetime | None:
    """When the person's quiet hours end, if `now` is inside them and the severity respects them
    (critical never does); None: deliver now. Notifications held back are sent then, not dropped."""
    if severity == "critical" or not in_quiet_hours(person, now):
        return None
    zone = ZoneInfo(person.timezone)
    local = now.astimezone(zone)
    end = datetime.combine(local.date(), person.quiet_end, tzinfo=zone)
    if end <= local:
        end = datetime.combine(local.date() + timedelta(days=1), person.quiet_end, tzinfo=zone)
    return end.astimezone(now.tzinfo)


def channels_for(person: Person, severity: Severity, now: datetime) -> tuple[list[str], bool]:
    """(channels, suppressed): the person's channels for this severity; quiet hours suppress all
    but critical alerts (they never apply to critical)."""
    channels = list(person.channels.get(severity) or DEFAULT_CHANNELS[severity])
    if severity != "critical" and in_quiet_hours(person, now):
        return channels, True
    return channels, False
