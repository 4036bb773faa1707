"""`make run`'s command: everything comes up, describes itself, stops cleanly, keeps data."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devices import service
from store import db
from tests.support import (
    ELDERCARE,
    ROOT,
    SubscribeGate,
    cli_json,
    new_msg_id,
    now_ms,
    wait_for,
)


def _start(env: dict[str, str], log: Path, *options: str) -> tuple[subprocess.Popen[bytes], object]:
    handle = open(log, "ab")  # noqa: SIM115 - closed by the caller
    process = subprocess.Popen(
        [ELDERCARE, "run", "--residents", "3", "--http-port", "0", *options],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,
    )
    return process, handle


def _stop(process: subprocess.Popen[bytes], handle) -> int:
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    try:
        return process.wait(60)
    finally:
        handle.close()


@pytest.mark.timeout(240)
def test_run_brings_everything_up_and_stops_cleanly_keeping_data(database_url, tmp_path):
    url = db.with_dbname(database_url, f"eldercare_run_{uuid.uuid4().hex[:8]}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELDERCARE_")}
    env.update({"ELDERCARE_VAR_DIR": str(tmp_path / "var"), "ELDERCARE_DATABASE_URL": url})
    log = tmp_path / "run.log"
    try:
        process, handle = _start(env, log)
        try:
            wait_for(
                lambda: b"Press Ctrl-C to stop." in log.read_bytes() or process.poll() is not None,
                120,
                "ready",
            )
            assert process.poll() is None, log.read_text()
            config = cli_json("config", env=env)
            assert config["mqtt_host"] == "127.0.0.1" and config["mqtt_port"]
            assert "doctor1 / " in log.read_text(), (
                "demo doctors' credentials are printed at start-up"
            )
            assert (
                config["database_url"].endswith(url.rsplit("/", 1)[-1])
                or "dbname" in config["database_url"]
            )
            with urllib.request.urlopen(config["http_url"] + "/readyz", timeout=5) as response:
                assert response.status == 200
            # The demo doctors' phones (`care app-listen`) receive and acknowledge their
            # notifications, logged in with their own app logins.
            logs = tmp_path / "var" / "logs"
            wait_for(
                lambda: (
                    len([p for p in logs.glob("app-*.log") if "listening as" in p.read_text()]) == 2
                ),
                30,
                "both demo doctors' apps listening",
            )
            residents = wait_for(
                lambda: cli_json("residents", "list", env=env), 60, "demo residents"
            )
            assert len(residents) == 3
            rows = wait_for(
                lambda: cli_json(
                    "readings", "--resident", str(residents[0]["id"]), "--since", "1h", env=env
                ),
                90,
                "simulated readings stored",
            )
            assert {r["resident_id"] for r in rows} == {residents[0]["id"]}
        finally:
            code = _stop(process, handle)
        assert code == 0, log.read_text()[-3000:]
        text = log.read_text()
        assert "stopped." in text
        broker_port = config["mqtt_port"]
        wait_for(lambda: _port_closed(broker_port), 10, "broker stopped")

        # Running again keeps the data (same database, same demo fleet).
        with db.connection(url) as conn:
            before = conn.execute("SELECT count(*) FROM reading").fetchone()[0]
        process, handle = _start(env, log)
        try:
            wait_for(
                lambda: text.count("Press Ctrl-C") < log.read_text().count("Press Ctrl-C"),
                120,
                "ready again",
            )
            assert len(cli_json("residents", "list", env=env)) == 3
            with db.connection(url) as conn:
                assert conn.execute("SELECT count(*) FROM reading").fetchone()[0] >= before > 0
        finally:
            assert _stop(process, handle) == 0
    finally:
        db.drop_database(url)


def _port_closed(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


HOLD_S = 20  # how long the broker withholds SUBACKs when nothing was announced meanwhile


@pytest.mark.timeout(240)
def test_what_a_device_sends_the_moment_run_says_running_is_stored_and_alerted(
    database_url, broker, register, env, storage_setting, tmp_path
):
    """`eldercare run` announces "running" (and /readyz says 200) only once ingest's subscriptions
    are acknowledged and the alert engine listens. The system's broker connection goes through a
    gate that withholds SUBACKs: an announcement while they are withheld would be a lie, and a
    device believing it would lose its messages (no broker session exists yet on a first start)."""
    device = register("wristband")  # its broker login; the run's own database gets it below
    url = db.with_dbname(database_url, f"eldercare_ready_{uuid.uuid4().hex[:8]}")
    db.ensure_database(url)
    db.migrate(url, timescale=storage_setting)
    with db.connection(url, autocommit=True) as conn:
        resident = service.add_resident(conn, name="赵桂兰")
        service.add_device(
            conn,
            device_id=device.device_id,
            kind="wristband",
            resident_id=resident.id,
            bound_from=datetime.now(UTC) - timedelta(days=1),
        )
    gate = SubscribeGate(broker.port)
    run_env = {
        **env,
        "ELDERCARE_DATABASE_URL": url,
        "ELDERCARE_MQTT_URL": f"mqtt://127.0.0.1:{gate.port}",
        "ELDERCARE_VAR_DIR": str(tmp_path / "var"),
    }
    log = tmp_path / "run.log"
    process, handle = _start(run_env, log, "--no-simulate")
    try:

        def announced() -> bool:
            return b"eldercare is running" in log.read_bytes()

        wait_for(
            lambda: (
                announced()
                or process.poll() is not None
                or (gate.held_at is not None and time.monotonic() - gate.held_at > HOLD_S)
            ),
            120,
            "running announced, or SUBACKs withheld long enough",
        )
        announced_while_held = announced()
        if not announced_while_held:
            gate.open()
            wait_for(lambda: announced() or process.poll() is not None, 90, "running announced")
        assert process.poll() is None, log.read_text()[-3000:]
        # The instant it says so: a reading and an SOS.
        reading = device.telemetry({"heart_rate": 72})
        sos = new_msg_id()
        device.publish("events", {"msg_id": sos, "type": "sos", "ts": now_ms()})
        gate.open()
        config = cli_json("config", env=run_env)
        with urllib.request.urlopen(config["http_url"] + "/readyz", timeout=5) as response:
            assert response.status == 200
        with db.connection(url, autocommit=True) as conn:
            wait_for(
                lambda: conn.execute(
                    "SELECT 1 FROM reading WHERE msg_id = %s", (reading,)
                ).fetchone(),
                30,
                "the reading published right after 'running' stored",
            )
            wait_for(
                lambda: conn.execute(
                    "SELECT 1 FROM alert WHERE resident_id = %s AND rule = 'sos'", (resident.id,)
                ).fetchone(),
                30,
                "the SOS published right after 'running' alerted",
            )
        assert not announced_while_held, "announced 'running' before ingest had subscribed"
    finally:
        assert _stop(process, handle) == 0, log.read_text()[-3000:]
        gate.close()
        db.drop_database(url)


def test_run_gives_up_naming_the_components_that_did_not_become_ready(database_url, conn, tmp_path):
    """A child that never reports (here: one that is not eldercare at all) is named, with its log,
    and another process's rows on the same database do not count for this run's children."""
    import threading

    from eldercare.supervisor import Child, _wait_ready
    from store import readiness

    other = f"test-{uuid.uuid4().hex[:8]}"
    for component in readiness.REQUIRED:  # a system elsewhere, ready
        conn.execute(readiness.UPSERT_READY, {"component": component, "host": other, "pid": 1})
    sleeper = subprocess.Popen(["sleep", "60"])
    children = [
        Child(name, [], sleeper, log=tmp_path / f"{name}.log")
        for name in ("ingest", "ingest-events", "alerts")
    ]
    try:
        with pytest.raises(RuntimeError) as raised:
            _wait_ready(database_url, children, threading.Event(), timeout=0.5)
    finally:
        sleeper.kill()
        sleeper.wait()
        conn.execute(readiness.DELETE_PROCESS, {"host": other, "pid": 1})
    message = str(raised.value)
    assert "ingest-telemetry, ingest-events, ingest-status, alerts" in message
    for name in ("ingest", "ingest-events", "alerts"):
        assert str(tmp_path / f"{name}.log") in message


def test_run_gives_up_at_once_when_a_child_exits_before_it_is_ready(database_url, tmp_path):
    import threading

    from eldercare.supervisor import Child, _wait_ready

    failed = subprocess.Popen(["false"])
    failed.wait()
    child = Child("alerts", [], failed, log=tmp_path / "alerts.log")
    started = time.monotonic()
    with pytest.raises(
        RuntimeError, match=r"alerts exited \(1\) before it was ready; see .*alerts\.log"
    ):
        _wait_ready(database_url, [child], threading.Event(), timeout=60)
    assert time.monotonic() - started < 30
