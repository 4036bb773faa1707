"""Retention of message ids and quarantine (ingest/maintenance.py), with time passed in as `now`.

In a database of their own: the per-device cap would otherwise prune other tests' quarantine.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest

from ingest import maintenance
from ingest.contract.envelope import Reason
from ingest.contract.telemetry import parse_telemetry
from ingest.maintenance import Maintenance, Retention, prune
from ingest.settings import IngestSettings
from store import db
from tests.support import wait_for

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def private_url(database_url: str, storage_setting: str) -> Iterator[str]:
    url = db.with_dbname(database_url, f"eldercare_retention_{uuid.uuid4().hex[:8]}")
    db.ensure_database(url)
    db.migrate(url, timescale=storage_setting)
    yield url
    db.drop_database(url)


@pytest.fixture()
def pconn(private_url: str) -> Iterator[psycopg.Connection]:
    with db.connection(private_url, autocommit=True) as connection:
        connection.execute("TRUNCATE telemetry_message, quarantine")
        yield connection


def _message_ids(conn, ages: dict[str, timedelta], now: datetime = NOW) -> None:
    conn.cursor().executemany(
        "INSERT INTO telemetry_message (device_id, msg_id, received_at) VALUES ('wb-1', %s, %s)",
        [(msg_id, now - age) for msg_id, age in ages.items()],
    )


def _quarantine(conn, device_id: str | None, count: int, age: timedelta = timedelta(0)) -> None:
    conn.cursor().executemany(
        """INSERT INTO quarantine (received_at, topic, device_id, reason, detail, payload,
                                   payload_size)
           VALUES (%s, 't', %s, 'invalid_json', 'x', '\\x00', 1)""",
        [(NOW - age, device_id)] * count,
    )


def test_message_ids_are_kept_for_the_backfill_window_plus_the_margin(pconn):
    retention = IngestSettings().retention  # the defaults: 7 days + 1 day + 5 minutes
    _message_ids(pconn, {"old": 8 * DAY + timedelta(minutes=6), "edge": 8 * DAY, "new": DAY})
    pruned = prune(pconn, retention, NOW)
    assert pruned.telemetry_messages == 1
    kept = pconn.execute("SELECT msg_id FROM telemetry_message ORDER BY msg_id").fetchall()
    assert kept == [("edge",), ("new",)]


def test_a_re_send_of_a_forgotten_message_is_refused_as_too_old():
    """Why pruning message ids cannot let a duplicate in: by then its ts is outside the window."""
    settings = IngestSettings()
    received = NOW
    # The latest ts a message received at `received` can carry: the future tolerance.
    ts = received + timedelta(seconds=settings.future_tolerance_s)
    forgotten_at = received + settings.retention.message_ids
    body = {"msg_id": "m", "ts": ts.isoformat(), "readings": {"spo2": 97}}
    parsed = parse_telemetry("wb-1", orjson.dumps(body), forgotten_at, settings.limits)
    assert [r.reason for r in parsed.rejections] == [Reason.TOO_OLD]


def test_message_ids_are_pruned_in_batches(pconn, monkeypatch):
    monkeypatch.setattr(maintenance, "BATCH", 100)
    pconn.execute(
        """INSERT INTO telemetry_message (device_id, msg_id, received_at)
           SELECT 'wb-1', 'm' || i, %s FROM generate_series(1, 1050) i""",
        (NOW - 30 * DAY,),
    )
    _message_ids(pconn, {"new": timedelta(hours=1)})
    assert prune(pconn, IngestSettings().retention, NOW).telemetry_messages == 1050
    assert pconn.execute("SELECT msg_id FROM telemetry_message").fetchall() == [("new",)]


def test_quarantine_expires_and_each_device_keeps_only_its_newest(pconn):
    retention = Retention(message_ids=8 * DAY, quarantine=30 * DAY, quarantine_per_device=5)
    _quarantine(pconn, "flood", 3, age=31 * DAY)
    _quarantine(pconn, "flood", 12)
    _quarantine(pconn, "quiet", 3, age=29 * DAY)
    _quarantine(pconn, None, 7)  # bad topics: no device, counted together
    newest_flood = [
        r[0]
        for r in pconn.execute(
            "SELECT id FROM quarantine WHERE device_id = 'flood' ORDER BY id DESC LIMIT 5"
        )
    ]
    pruned = prune(pconn, retention, NOW)
    assert (pruned.quarantine_expired, pruned.quarantine_over_cap) == (3, 7 + 2)
    counts = dict(
        pconn.execute(
            "SELECT coalesce(device_id, '-'), count(*) FROM quarantine GROUP BY 1"
        ).fetchall()
    )
    assert counts == {"flood": 5, "quiet": 3, "-": 5}
    kept = [r[0] for r in pconn.execute("SELECT id FROM quarantine WHERE device_id = 'flood'")]
    assert sorted(kept, reverse=True) == newest_flood


def test_one_process_prunes_at_a_time(pconn, private_url):
    _message_ids(pconn, {"old": 30 * DAY})
    with db.connection(private_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s, %s)", maintenance.LOCK)
        assert prune(pconn, IngestSettings().retention, NOW).skipped
        other.execute("SELECT pg_advisory_unlock(%s, %s)", maintenance.LOCK)
    assert prune(pconn, IngestSettings().retention, NOW).telemetry_messages == 1


def test_the_ingestors_maintenance_thread_applies_the_retention(pconn, private_url):
    _message_ids(pconn, {"old": 30 * DAY, "new": timedelta(0)}, now=datetime.now(UTC))
    _quarantine(pconn, "flood", 4)
    job = Maintenance(
        private_url, IngestSettings(maintenance_interval_s=0.05, quarantine_per_device=2)
    )
    job.start()
    try:
        wait_for(
            lambda: pconn.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 2,
            what="quarantine capped",
        )
        wait_for(
            lambda: pconn.execute("SELECT msg_id FROM telemetry_message").fetchall() == [("new",)],
            what="old message id pruned",
        )
    finally:
        job.stop()
