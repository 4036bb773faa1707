"""Prometheus metrics at /metrics, aggregated from the database in the background.

The database is the one place every process writes to, so the numbers cover all ingest and alert
processes on all machines, not just this API process. The aggregates scan whole tables, and
/metrics needs no login: a background thread computes them every `http_metrics_interval_seconds` on
one pooled connection and scrapes are served from memory, so no request ever touches the database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg_pool import ConnectionPool

from alerts.models import SEVERITIES

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

INGEST_RATE = (
    "SELECT count(*) FROM telemetry_message WHERE received_at > now() - INTERVAL '1 minute'"
)
INGEST_IDLE = (
    "SELECT coalesce(extract(epoch FROM now() - max(received_at)), -1) FROM telemetry_message"
)
# Device lag: how long readings took from measurement to arrival, over the last minute.
INGEST_LAG = """
SELECT coalesce(extract(epoch FROM avg(received_at - measured_at)), 0) FROM reading
WHERE measured_at > now() - INTERVAL '1 minute' AND received_at > now() - INTERVAL '1 minute'
"""
QUARANTINE = "SELECT reason, count(*) FROM quarantine GROUP BY reason"
OPEN_ALERTS = """
SELECT severity, count(*) FROM alert WHERE state IN ('pending', 'open', 'acknowledged') GROUP BY severity
"""
NOTIFICATIONS = """
SELECT channel, count(*) FILTER (WHERE state = 'failed'),
       count(*) FILTER (WHERE state = 'pending' AND attempts > 0)
FROM notification GROUP BY channel
"""


@dataclass(frozen=True)
class Aggregates:
    """One round of the database's numbers."""

    ingest_last_minute: int
    seconds_since_last_message: float
    device_lag_seconds: float
    quarantine: list[tuple[str, int]]
    unresolved_alerts: dict[str, int]
    # (channel, given up, being retried)
    notifications: list[tuple[str, int, int]]


def read_aggregates(conn: psycopg.Connection, *, timeout_seconds: float) -> Aggregates:
    """Run the aggregate queries; none may run longer than `timeout_seconds`."""
    with conn.transaction():
        # A slow scan is cut off rather than holding a pooled connection round after round.
        conn.execute(f"SET LOCAL statement_timeout = {int(timeout_seconds * 1000)}")
        rate = conn.execute(INGEST_RATE).fetchone()
        idle = conn.execute(INGEST_IDLE).fetchone()
        lag = conn.execute(INGEST_LAG).fetchone()
        quarantine = conn.execute(QUARANTINE).fetchall()
        alerts = conn.execute(OPEN_ALERTS).fetchall()
        notifications = conn.execute(NOTIFICATIONS).fetchall()
    return Aggregates(
        ingest_last_minute=int(rate[0]) if rate else 0,
        seconds_since_last_message=float(idle[0]) if idle else -1,
        device_lag_seconds=float(lag[0]) if lag else 0,
        quarantine=[(reason, int(count)) for reason, count in quarantine],
        unresolved_alerts={severity: int(count) for severity, count in alerts},
        notifications=[
            (channel, int(failed), int(retry)) for channel, failed, retry in notifications
        ],
    )


def metric_families(aggregates: Aggregates | None, age_seconds: float) -> Iterator[Metric]:
    """The exposition of one round (None: no round has succeeded yet, only the age is shown)."""
    yield GaugeMetricFamily(
        "eldercare_metrics_age_seconds",
        "Seconds since the database aggregates were computed (-1: not yet)",
        value=age_seconds if aggregates is not None else -1,
    )
    if aggregates is None:
        return
    yield GaugeMetricFamily(
        "eldercare_ingest_messages_last_minute",
        "Telemetry messages stored in the last minute",
        value=aggregates.ingest_last_minute,
    )
    yield GaugeMetricFamily(
        "eldercare_ingest_seconds_since_last_message",
        "Seconds since the last telemetry message was stored (-1: none yet)",
        value=aggregates.seconds_since_last_message,
    )
    yield GaugeMetricFamily(
        "eldercare_ingest_device_lag_seconds",
        "Average delay from measurement to arrival over the last minute",
        value=aggregates.device_lag_seconds,
    )
    q = GaugeMetricFamily(
        "eldercare_quarantine_messages", "Messages in quarantine", labels=["reason"]
    )
    for reason, count in aggregates.quarantine:
        q.add_metric([reason], count)
    yield q
    a = GaugeMetricFamily("eldercare_alerts_unresolved", "Unresolved alerts", labels=["severity"])
    for severity in SEVERITIES:
        a.add_metric([severity], aggregates.unresolved_alerts.get(severity, 0))
    yield a
    failed = GaugeMetricFamily(
        "eldercare_notifications_failed", "Notifications given up on", labels=["channel"]
    )
    retrying = GaugeMetricFamily(
        "eldercare_notifications_retrying", "Notifications being retried", labels=["channel"]
    )
    for channel, given_up, retry in aggregates.notifications:
        failed.add_metric([channel], given_up)
        retrying.add_metric([channel], retry)
    yield failed
    yield retrying


class MetricsSampler(Collector):
    """Computes the aggregates every `interval` seconds in a thread of its own; collecting (a
    scrape) only reads the latest round. A failed round keeps the previous numbers, whose age
    then grows (eldercare_metrics_age_seconds)."""

    def __init__(
        self,
        pool: ConnectionPool,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.interval = interval
        self.clock = clock
        self.registry = CollectorRegistry()
        self.registry.register(self)
        self._latest: tuple[Aggregates, float] | None = None
        self._first_round = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metrics-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait_first_round(self, timeout: float) -> bool:
        """Wait until the first round has finished (succeeded or failed)."""
        return self._first_round.wait(timeout)

    def stop(self) -> None:
        """Ask the thread to stop after the round in hand (see close)."""
        self._stop.set()

    def close(self) -> None:
        self.stop()
        # Not longer: a round stuck on a connection the network dropped silently must not hold up
        # the shutdown (the thread is a daemon and ends with the process).
        self._thread.join(timeout=2)

    def sample(self) -> None:
        """One round, now (the thread calls this every interval)."""
        try:
            with self.pool.connection(timeout=min(self.interval, 10)) as conn:
                aggregates = read_aggregates(conn, timeout_seconds=self.interval)
        except psycopg.Error as exc:
            if self._stop.is_set():
                return  # the pool closed under it: shutting down
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("metrics: could not read the aggregates (%s); serving the last ones", why)
            return
        self._latest = (aggregates, self.clock())

    def collect(self) -> Iterator[Metric]:
        latest = self._latest
        if latest is None:
            yield from metric_families(None, -1)
        else:
            aggregates, computed_at = latest
            yield from metric_families(aggregates, self.clock() - computed_at)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._first_round.set()
            self._stop.wait(self.interval)


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request) -> PlainTextResponse:
    """Prometheus metrics: ingest rate and lag, quarantine, unresolved alerts, failed notifications
    (computed in the background; `eldercare_metrics_age_seconds` says how long ago)."""
    sampler: MetricsSampler = request.app.state.metrics
    return PlainTextResponse(sampler.exposition(), media_type=CONTENT_TYPE_LATEST)
