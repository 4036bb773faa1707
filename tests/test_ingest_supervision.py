"""A writer that meets an unknown error ends its process (a supervisor restarts it) and loses nothing;
transient database errors are retried, not quarantined (tests/test_ingest_emergency.py has the
read-only failover end to end)."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest

from ingest.consumer import EXIT_FATAL, _run_with_database
from tests.support import IngestProcess, wait_for


def test_an_unknown_error_is_reported_to_the_fatal_handler_once(database_url):
    calls: list[int] = []
    fatal: list[str] = []

    def build(conn: psycopg.Connection) -> None:
        calls.append(conn.info.backend_pid)
        if len(calls) == 1:
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute("CREATE TABLE never_created (x int)")  # real ReadOnlySqlTransaction
        raise RuntimeError("a bug")

    _run_with_database(database_url, "writer-x", threading.Event(), build, fatal.append)
    # First a transient error (retried on a fresh connection), then the bug (not retried).
    assert len(calls) == len(set(calls)) == 2
    assert fatal == ["writer-x"]


@pytest.mark.timeout(120)
def test_a_dead_writer_ends_the_process_and_a_restart_loses_nothing(register, env, conn, tmp_path):
    device = register("wristband")
    guard = f"refuse_{uuid.uuid4().hex[:8]}"
    # Quarantine itself refuses this device's rows: the writer has no way left to handle it.
    conn.execute(
        f"""
        CREATE FUNCTION {guard}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.device_id = '{device.device_id}' THEN
                RAISE EXCEPTION 'quarantine unavailable for this test';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER {guard} BEFORE INSERT ON quarantine
            FOR EACH ROW EXECUTE FUNCTION {guard}();
        """
    )
    instance = f"sup{uuid.uuid4().hex[:6]}"
    log = tmp_path / "ingest.log"
    first = IngestProcess(env, instance, log).start()
    try:
        first.wait_subscribed()
        device.publish("telemetry", b"{not json", raw=True)
        assert first.process is not None
        assert first.process.wait(60) == EXIT_FATAL  # not a live process with a dead writer
        text = log.read_text()
        assert "quarantine unavailable for this test" in text and "Traceback" in text
        assert f"exiting with status {EXIT_FATAL}" in text
    finally:
        first.stop()
        conn.execute(f"DROP TRIGGER {guard} ON quarantine")
        conn.execute(f"DROP FUNCTION {guard}()")
    # The supervisor's restart: the broker redelivers what the dead process never acknowledged.
    second = IngestProcess(env, instance, log).start()
    try:
        rows = wait_for(
            lambda: conn.execute(
                "SELECT reason FROM quarantine WHERE device_id = %s", (device.device_id,)
            ).fetchall(),
            60,
            "the redelivered message quarantined",
        )
        assert rows == [("invalid_json",)]
    finally:
        second.stop()
