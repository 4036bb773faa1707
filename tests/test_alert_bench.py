"""`eldercare bench alerts` bookkeeping (pure): every press counts, a lost one is never left out."""

from __future__ import annotations

from benchmarks.alerts import _flood_readings, latency_percentile, press_latencies


def test_undelivered_presses_are_counted_and_rank_above_every_delivered_one():
    pressed = {r: 10.0 for r in range(100)}
    received = {r: 10.0 + (r + 1) / 1000 for r in range(99)}  # 1 ms … 99 ms; resident 99 lost
    latencies = press_latencies(pressed, received)
    assert len(latencies) == 100 and latencies.count(None) == 1
    assert latency_percentile(latencies, 0.5) == 51.0  # rank round(0.5 × 99), as benchmarks.ingest
    assert latency_percentile(latencies, 0.99) == 99.0
    assert latency_percentile(latencies, 1.0) is None, "the lost press decides the maximum"
    # Two lost in a hundred: p99 is unbounded, not the slowest delivered one.
    del received[98]
    assert latency_percentile(press_latencies(pressed, received), 0.99) is None
    assert latency_percentile([], 0.99) is None


def test_the_flood_has_one_feverish_wearer_and_three_readings_per_message():
    assert _flood_readings(True, 7)["body_temp"] > 37.8
    assert "body_temp" not in _flood_readings(False, 7)
    assert len(_flood_readings(True, 1)) == len(_flood_readings(False, 1)) == 3
