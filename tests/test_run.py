"""`make run`'s command: everything comes up, describes itself, stops cleanly, keeps data."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest

from store import db
from tests.support import ELDERCARE, ROOT, cli_json, wait_for


def _start(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], object]:
    handle = open(log, "ab")  # noqa: SIM115 - closed by the caller
    process = subprocess.Popen(
        [ELDERCARE, "run", "--residents", "3", "--http-port", "0"],
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
