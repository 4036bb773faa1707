"""Alerts: from a resident's readings and device events to the people who must act.

- Rules, pure: `rules/` (the table, thresholds, fever, NEWS2 from `news2.py`), `device_events.py`,
  `timers.py`, `clearing.py`, `routing.py`; types in `models.py`.
- Life cycle: `lifecycle.py` (raise, worsen, acknowledge, snooze, resolve), `escalation.py` (tiers,
  reminders), `fanout.py` (who is told, as outbox rows), `transitions.py` (the row and its timeline).
- Loading what they judge: `window.py`, `facts.py`, `circle.py` (care circle, policy); SQL: `queries.py`.
- Delivery: `outbox.py`, `channels/`, `app_acks.py`; the process: `engine.py`; commands: `cli.py`.
"""
