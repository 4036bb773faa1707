"""Prometheus metrics at /metrics, read from the database at scrape time.

The database is the one place every process writes to, so the numbers cover all ingest and alert
processes on all machines, not just this API process.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg_pool import ConnectionPool

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


class DatabaseCollector(Collector):
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        with self.pool.connection() as conn:
            rate = conn.execute(INGEST_RATE).fetchone()
            idle = conn.execute(INGEST_IDLE).fetchone()
            lag = conn.execute(INGEST_LAG).fetchone()
            quarantine = conn.execute(QUARANTINE).fetchall()
            alerts = conn.execute(OPEN_ALERTS).fetchall()
            notifications = conn.execute(NOTIFICATIONS).fetchall()
        yield GaugeMetricFamily(
            "eldercare_ingest_messages_last_minute",
            "Telemetry messages stored in the last minute",
            value=rate[0] if rate else 0,
        )
        yield GaugeMetricFamily(
            "eldercare_ingest_seconds_since_last_message",
            "Seconds since the last telemetry message was stored (-1: none yet)",
            value=float(idle[0]) if idle else -1,
        )
        yield GaugeMetricFamily(
            "eldercare_ingest_device_lag_seconds",
            "Average delay from measurement to arrival over the last minute",
            value=float(lag[0]) if lag else 0,
        )
        q = GaugeMetricFamily(
            "eldercare_quarantine_messages", "Messages in quarantine", labels=["reason"]
        )
        for reason, count in quarantine:
            q.add_metric([reason], count)
        yield q
        a = GaugeMetricFamily(
            "eldercare_alerts_unresolved", "Unresolved alerts", labels=["severity"]
        )
        by_severity: dict[str, int] = {severity: count for severity, count in alerts}
        for severity in ("info", "warning", "critical"):
            a.add_metric([severity], by_severity.get(severity, 0))
        yield a
        failed = GaugeMetricFamily(
            "eldercare_notifications_failed", "Notifications given up on", labels=["channel"]
        )
        retrying = GaugeMetricFamily(
            "eldercare_notifications_retrying", "Notifications being retried", labels=["channel"]
        )
        for channel, given_up, retry in notifications:
            failed.add_metric([channel], given_up)
            retrying.add_metric([channel], retry)
        yield failed
        yield retrying
