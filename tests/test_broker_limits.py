"""The broker's per-client queue is capped on purpose, the same locally and in production
(docs/operations.md, "Broker limits", has the arithmetic)."""

from __future__ import annotations

from pathlib import Path

from eldercare.broker import CONFIG_TEMPLATE
from ingest.settings import IngestSettings

ROOT = Path(__file__).resolve().parent.parent
LIMITS = ("max_queued_messages", "max_queued_bytes", "max_inflight_messages", "message_size_limit")


def _settings(text: str) -> dict[str, int]:
    found = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] in LIMITS:
            found[words[0]] = int(words[1])
    return found


def test_both_broker_configs_cap_queued_messages_and_bytes_per_client():
    local = _settings(CONFIG_TEMPLATE)
    production = _settings((ROOT / "deploy/mosquitto/mosquitto.conf").read_text())
    assert local == production, "the local broker behaves like the production one"
    assert set(local) == set(LIMITS)
    assert 0 < local["max_queued_bytes"] <= 1024**3, "bounded: broker memory per session"
    assert local["max_queued_messages"] > 0
    # Each ingest session may have as many unacknowledged messages as its inbox holds.
    assert local["max_inflight_messages"] >= IngestSettings().inbox_max_messages


def test_the_test_broker_runs_with_those_limits(broker):
    assert broker.process is not None and broker.process.poll() is None
    assert "max_queued_bytes 536870912" in broker.config_path.read_text()
