"""The rule table: every reading rule, the alerts it raises and how long its condition must be
gone before they resolve; `evaluate` runs them all for one resident."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from alerts.models import Finding
from alerts.rules.early_warning import (
    news2_rule,
)
from alerts.rules.fever import (
    fever_rule,
)
from alerts.rules.thresholds import (
    blood_pressure_rule,
    glucose_rule,
    heart_rate_rule,
    spo2_rule,
)
from alerts.rules.window import (
    Window,
)


@dataclass(frozen=True)
class Rule:
    key: str
    produces: tuple[str, ...]  # the alert rules (keys of TITLES) its findings carry
    evaluate: Callable[[Window], Finding | None]
    # How long the condition must be absent before the alert resolves itself.
    clears_after: timedelta = timedelta(minutes=10)


RULES: tuple[Rule, ...] = (
    Rule("spo2", ("spo2_low",), spo2_rule),
    Rule("heart_rate", ("heart_rate_high", "heart_rate_low"), heart_rate_rule),
    Rule("blood_pressure", ("hypertensive_crisis", "hypotension"), blood_pressure_rule),
    Rule("fever", ("fever",), fever_rule, clears_after=timedelta(hours=2)),
    Rule("glucose", ("glucose_low",), glucose_rule, clears_after=timedelta(hours=2)),
    Rule("news2", ("news2",), news2_rule, clears_after=timedelta(minutes=30)),
)


CLEARS_AFTER: dict[str, timedelta] = {key: r.clears_after for r in RULES for key in r.produces}


READING_RULE_KEYS = frozenset(CLEARS_AFTER)


def evaluate(window: Window) -> list[Finding]:
    """Every rule's finding for this resident now (at most one per alert rule)."""
    findings = (rule.evaluate(window) for rule in RULES)
    return [f for f in findings if f is not None]
