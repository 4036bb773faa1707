"""Ingest replicas without a name claim stable numbered slots."""

from __future__ import annotations

import subprocess
import threading
from subprocess import STDOUT

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ingest.slots import LOCK_CLASS, ROLE_OFFSET, claim_slot
from store import db
from tests.support import ELDERCARE, ROOT, TcpProxy, wait_for


def test_slots_are_claimed_lowest_first_and_reused_after_release(database_url):
    first = claim_slot(database_url)
    second = claim_slot(database_url)
    try:
        assert second.slot == first.slot + 1
        first.release()
        again = claim_slot(database_url)
        assert again.slot == first.slot, "a recreated replica takes its predecessor's slot"
        again.release()
    finally:
        second.release()


def _terminate(database_url, pid):
    with db.connection(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_lost_slot_lock_is_noticed(database_url):
    claim = claim_slot(database_url)
    lost = threading.Event()
    try:
        claim.watch(lost.set, interval_s=0.2)
        assert not lost.wait(1), "the lock is held: nothing to report"
        _terminate(database_url, claim.conn.info.backend_pid)  # e.g. a database restart
        assert lost.wait(5), "the lost lock was not noticed"
    finally:
        claim.release()


def test_an_ingest_process_whose_slot_lock_is_lost_exits_for_a_restart(database_url, env, tmp_path):
    log_path = tmp_path / "ingest.log"
    env = {**env, "ELDERCARE_INGEST_SLOT_CHECK_INTERVAL_S": "0.5"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [ELDERCARE, "ingest", "--role", "events"], env=env, stdout=log, stderr=STDOUT, cwd=ROOT
        )
    try:
        holder = wait_for(
            lambda: _slot_holder(database_url, process.pid), 30, "the slot lock's backend"
        )
        assert process.poll() is None
        _terminate(database_url, holder)
        assert process.wait(15) == 70, log_path.read_text()
        assert "slot" in log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _slot_holder(database_url, client_pid):
    """The backend holding an ingest slot lock for the process `client_pid` (via its socket's
    peer: the backend of a TCP or Unix connection from that process)."""
    with db.connection(database_url, autocommit=True) as conn:
        rows = conn.execute(
            """SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
               WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s
                 AND a.application_name = 'eldercare-ingest-slot' AND a.datname = current_database()""",
            (LOCK_CLASS + ROLE_OFFSET["events"],),
        ).fetchall()
    return rows[0][0] if len(rows) == 1 else None


def test_a_database_that_stops_answering_counts_as_a_lost_slot_lock(database_url):
    """A silent partition (no reset, no answer) would leave the check waiting for hours while
    another replica, after the server dropped our backend, claims the slot: fails on main."""
    params = conninfo_to_dict(database_url)
    proxy = TcpProxy(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
    via_proxy = make_conninfo("", **{**params, "host": "127.0.0.1", "port": proxy.port})
    claim = claim_slot(via_proxy)
    lost = threading.Event()
    try:
        claim.watch(lost.set, interval_s=0.2, deadline_s=1)
        assert not lost.wait(1), "the database answers: nothing to report"
        proxy.freeze()
        assert lost.wait(10), "an unanswered lock check was not noticed"
    finally:
        proxy.close()  # ends the hung check, so that release does not wait for it
        claim.release()
