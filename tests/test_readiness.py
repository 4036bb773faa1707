"""Readiness (store/readiness.py): the rule deciding "ready" from the rows, the rows a process keeps
while it is ready, and /readyz answering 503 with the components that are missing or silent."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from eldercare.settings import Settings
from store import db, readiness
from store.readiness import ALERTS, INGEST_EVENTS, INGEST_STATUS, INGEST_TELEMETRY, REQUIRED
from tests.support import wait_for

NOW = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


def _row(component: str, age_s: float, host: str = "h", pid: int = 1) -> readiness.Readiness:
    at = NOW - timedelta(seconds=age_s)
    return readiness.Readiness(component, host, pid, at - timedelta(minutes=5), at, NOW)


def test_nothing_reported_means_everything_is_missing_in_the_order_required():
    assert readiness.not_ready([], REQUIRED, NOW) == list(REQUIRED)


def test_a_component_counts_only_while_its_heartbeat_is_fresh():
    fresh = readiness.STALE_AFTER.total_seconds()
    rows = [_row(c, 0) for c in REQUIRED if c != ALERTS] + [_row(ALERTS, fresh + 0.001)]
    assert readiness.not_ready(rows, REQUIRED, NOW) == [ALERTS]
    rows[-1] = _row(ALERTS, fresh)
    assert readiness.not_ready(rows, REQUIRED, NOW) == []


def test_one_fresh_replica_is_enough_and_a_stale_one_does_not_hide_it():
    rows = [_row(INGEST_TELEMETRY, 600, "a"), _row(INGEST_TELEMETRY, 1, "b")]
    assert readiness.not_ready(rows, [INGEST_TELEMETRY], NOW) == []


def test_with_processes_only_those_processes_rows_count():
    """`eldercare run` waits for its own children, not for another system on the same database."""
    rows = [_row(c, 0, "other", 7) for c in REQUIRED] + [_row(INGEST_EVENTS, 0, "me", 42)]
    mine = {("me", 42), ("me", 43)}
    assert readiness.not_ready(rows, REQUIRED, NOW, processes=mine) == [
        INGEST_TELEMETRY,
        INGEST_STATUS,
        ALERTS,
    ]


def _components(conn, host: str, pid: int) -> set[str]:
    rows, _now = readiness.load(conn)
    return {r.component for r in rows if (r.host, r.pid) == (host, pid)}


def test_a_reporter_keeps_a_row_exactly_while_its_check_says_ready(database_url, conn):
    subscribed = threading.Event()
    name, other = f"test-{uuid.uuid4().hex[:8]}", f"test-{uuid.uuid4().hex[:8]}"
    checks = {name: subscribed.is_set, other: lambda: True}
    reporter = readiness.Reporter(database_url, checks, heartbeat_s=0.2)
    host, pid = reporter.host, reporter.pid
    reporter.start()
    try:
        wait_for(lambda: other in _components(conn, host, pid), 10, "the reporter writing")
        assert name not in _components(conn, host, pid)
        subscribed.set()
        wait_for(lambda: name in _components(conn, host, pid), 10, "ready row written")
        first = conn.execute(
            "SELECT heartbeat_at FROM readiness WHERE component = %s", (name,)
        ).fetchone()[0]
        wait_for(
            lambda: conn.execute(
                "SELECT heartbeat_at > %s FROM readiness WHERE component = %s", (first, name)
            ).fetchone()[0],
            10,
            "heartbeat refreshed",
        )
        subscribed.clear()  # e.g. the broker connection was lost
        wait_for(lambda: name not in _components(conn, host, pid), 10, "row deleted")
        subscribed.set()
        wait_for(lambda: name in _components(conn, host, pid), 10, "ready again")
    finally:
        reporter.stop()
    assert not _components(conn, host, pid) & {name, other}, "a clean exit deletes the rows"


@pytest.fixture(scope="module")
def fresh_database(database_url: str, storage_setting: str) -> Iterator[str]:
    """A database of its own: no other test's processes report into its readiness table."""
    url = db.with_dbname(database_url, f"eldercare_readyz_{uuid.uuid4().hex[:8]}")
    db.ensure_database(url)
    db.migrate(url, timescale=storage_setting)
    yield url
    db.drop_database(url)


def test_readyz_is_503_naming_what_is_missing_or_silent_and_200_when_all_are_ready(
    fresh_database, settings
):
    # No cache: each request sees the rows as they are now.
    cfg = Settings(
        database_url=fresh_database, mqtt_url=settings.mqtt_url, http_ready_cache_seconds=0
    )
    app = create_app(cfg)
    with TestClient(app) as client, db.connection(fresh_database, autocommit=True) as conn:

        def report(component: str, age: str = "0 s") -> None:
            conn.execute(
                """INSERT INTO readiness (component, host, pid, ready_at, heartbeat_at)
                   VALUES (%s, 'h', 1, now() - %s::interval, now() - %s::interval)
                   ON CONFLICT (component, host, pid) DO UPDATE
                   SET heartbeat_at = EXCLUDED.heartbeat_at""",
                (component, age, age),
            )

        nothing = client.get("/readyz")
        assert nothing.status_code == 503
        assert nothing.json() == {
            "ready": False,
            "checks": {"database": True, "broker": True, "components": False},
            "not_ready": list(REQUIRED),
        }
        for component in (INGEST_TELEMETRY, INGEST_EVENTS, INGEST_STATUS):
            report(component)
        report(ALERTS, "1 minute")  # killed a minute ago: no clean exit deleted its row
        silent = client.get("/readyz")
        assert silent.status_code == 503 and silent.json()["not_ready"] == [ALERTS]
        report(ALERTS)
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {
            "ready": True,
            "checks": {"database": True, "broker": True, "components": True},
            "not_ready": [],
        }


def test_the_ready_command_exits_1_naming_what_is_not_ready_on_this_host(env, fresh_database):
    """The containers' healthcheck: `eldercare ready --here COMPONENT…`."""
    import socket

    from tests.support import cli

    env = {**env, "ELDERCARE_DATABASE_URL": fresh_database}
    missing = cli("ready", "--here", INGEST_TELEMETRY, env=env, check=False)
    assert missing.returncode == 1 and "not ready: ingest-telemetry" in missing.stderr
    unknown = cli("ready", "nonsense", env=env, check=False)
    assert unknown.returncode == 1 and "unknown component nonsense" in unknown.stderr
    pid = 2**31 - 1
    key = {"component": INGEST_TELEMETRY, "host": socket.gethostname(), "pid": pid}
    with db.connection(fresh_database, autocommit=True) as conn:
        conn.execute(readiness.UPSERT_READY, key)
        ready = cli("ready", "--here", INGEST_TELEMETRY, env=env, check=False)
        assert ready.returncode == 0 and ready.stdout.strip() == "ready"
        conn.execute(readiness.DELETE_PROCESS, {"host": key["host"], "pid": pid})
