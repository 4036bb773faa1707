"""The operator's command line: JSON output, clear errors, registry life cycle, broker-auth watch."""

from __future__ import annotations

import base64
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from devices import service
from eldercare.mqtt import accepts_login
from tests.conftest import SERVICE_PASSWORD, SERVICE_USER
from tests.support import ELDERCARE, ROOT, cli, cli_json, now_ms, wait_for


def test_resident_and_device_life_cycle(env, endpoint):
    resident = cli_json(
        "residents",
        "add",
        "--name",
        "王秀英",
        "--archive-id",
        "31011500100100001",
        "--birth-date",
        "1941-03-08",
        "--gender",
        "female",
        "--contact",
        "李明,13800000000,son",
        env=env,
    )
    assert resident["id"] > 0 and resident["archive_id"] == "31011500100100001"
    other = cli_json("residents", "add", "--name", "张建国", env=env)
    device_id = f"wb-cli-{resident['id']}"
    device = cli_json(
        "devices",
        "add",
        device_id,
        "--kind",
        "wristband",
        "--resident",
        str(resident["id"]),
        env=env,
    )
    assert device["device_id"] == device_id and device["mqtt_username"] == device_id
    assert len(device["mqtt_password"]) >= 24 and device["resident_id"] == resident["id"]
    listed = cli_json("devices", "list", "--resident", str(resident["id"]), env=env)
    assert [d["device_id"] for d in listed] == [device_id]
    assert "mqtt_password" not in listed[0], "a password is shown only once"
    assert (
        cli_json("devices", "bind", device_id, "--resident", str(other["id"]), env=env)[
            "resident_id"
        ]
        == other["id"]
    )
    assert cli_json("devices", "unbind", device_id, env=env)["resident_id"] is None
    rotated = cli_json("devices", "rotate", device_id, env=env)
    assert rotated["mqtt_password"] != device["mqtt_password"]
    retired = cli_json("devices", "retire", device_id, env=env)
    assert retired["status"] == "retired"
    assert cli_json("devices", "list", env=env) == [] or device_id not in {
        d["device_id"] for d in cli_json("devices", "list", env=env)
    }
    assert device_id in {d["device_id"] for d in cli_json("devices", "list", "--all", env=env)}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["residents", "add", "--name", "王", "--archive-id", "123"], "17 digits"),
        (["residents", "add", "--name", "王", "--birth-date", "1941-13-40"], "YYYY-MM-DD"),
        (["devices", "add", "x-1", "--kind", "toaster"], "unknown device kind"),
        (["devices", "add", "bad id!", "--kind", "wristband"], "invalid device id"),
        (
            ["devices", "add", "x-2", "--kind", "wristband", "--resident", "999999"],
            "no resident 999999",
        ),
        (["devices", "bind", "nope", "--resident", "1"], "no device 'nope'"),
        (["readings", "--resident", "1", "--since", "yesterday"], "duration"),
        (["readings", "--resident", "1", "--bucket", "week"], "minute, hour or day"),
    ],
)
def test_errors_say_what_to_do(env, args, message):
    result = cli(*args, env=env, check=False)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_without_configuration_commands_say_how_to_configure(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "ELDERCARE_VAR_DIR": str(tmp_path)}
    result = subprocess.run(
        [ELDERCARE, "residents", "list"], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert (
        result.returncode == 1
        and "make run" in result.stderr
        and "ELDERCARE_DATABASE_URL" in result.stderr
    )


def test_duplicate_archive_number_is_refused(env):
    cli_json("residents", "add", "--name", "甲", "--archive-id", "31011500100100002", env=env)
    result = cli(
        "residents",
        "add",
        "--name",
        "乙",
        "--archive-id",
        "31011500100100002",
        env=env,
        check=False,
    )
    assert result.returncode == 1 and "already belongs" in result.stderr


def test_broker_sync_watch_lets_a_new_device_in_without_manual_steps(env, broker, endpoint):
    watcher = subprocess.Popen(
        [
            ELDERCARE,
            "broker",
            "sync",
            "--watch",
            "--auth-dir",
            str(broker.auth_dir),
            "--pid-file",
            str(broker.pid_file),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert watcher.stderr is not None
        wait_for(
            lambda: b"watching the registry" in watcher.stderr.peek(4096), 20, "watcher started"
        )
        resident = cli_json("residents", "add", "--name", "周桂兰", env=env)
        device = cli_json(
            "devices",
            "add",
            f"wb-watch-{resident['id']}",
            "--kind",
            "wristband",
            "--resident",
            str(resident["id"]),
            env=env,
        )
        login = (endpoint, device["device_id"], device["mqtt_password"])
        wait_for(lambda: accepts_login(*login), 20, "login accepted after the watcher's sync")
        cli_json("devices", "retire", device["device_id"], env=env)
        wait_for(lambda: not accepts_login(*login), 20, "login revoked after retirement")
    finally:
        watcher.terminate()
        watcher.wait(10)
        if watcher.stderr:
            watcher.stderr.close()


def test_reassigned_device_backlog_goes_to_the_resident_who_wore_it(register, ingestor, conn):
    device = register("wristband")
    first = device.resident_id
    second = service.add_resident(conn, name="第二位老人").id
    handover = datetime.now(UTC) - timedelta(minutes=10)
    service.bind(conn, device_id=device.device_id, resident_id=second, at=handover)
    before = int((handover - timedelta(minutes=5)).timestamp() * 1000)
    device.publish(
        "telemetry",
        [
            {"msg_id": "old", "ts": before, "readings": {"heart_rate": 70}},
            {"msg_id": "new", "ts": now_ms(), "readings": {"heart_rate": 80}},
        ],
    )
    rows = wait_for(
        lambda: (
            conn.execute(
                "SELECT msg_id, resident_id FROM reading WHERE device_id = %s ORDER BY msg_id",
                (device.device_id,),
            ).fetchall()
            if len(
                conn.execute(
                    "SELECT 1 FROM reading WHERE device_id = %s", (device.device_id,)
                ).fetchall()
            )
            == 2
            else None
        ),
        what="both stored",
    )
    assert rows == [("new", second), ("old", first)]


def test_a_device_cannot_take_over_the_service_account(env, conn, endpoint):
    before = conn.execute(
        "SELECT role, password_hash, device_id FROM broker_account WHERE username = %s",
        (SERVICE_USER,),
    ).fetchone()
    try:
        result = cli("devices", "add", SERVICE_USER, "--kind", "wristband", env=env, check=False)
        assert result.returncode != 0
        assert "are reserved for eldercare's own" in result.stderr + result.stdout
        assert "Traceback" not in result.stderr
        after = conn.execute(
            "SELECT role, password_hash, device_id FROM broker_account WHERE username = %s",
            (SERVICE_USER,),
        ).fetchone()
        assert after == before == ("service", before[1], None)
        assert (
            conn.execute("SELECT 1 FROM device WHERE device_id = %s", (SERVICE_USER,)).fetchone()
            is None
        )
        assert accepts_login(endpoint, SERVICE_USER, SERVICE_PASSWORD)
    finally:  # should this ever fail: give the rest of the session its service login back
        conn.execute(
            "UPDATE broker_account SET role = %s, password_hash = %s, device_id = NULL "
            "WHERE username = %s",
            (before[0], before[1], SERVICE_USER),
        )


def test_quarantine_list_gives_the_exact_bytes_in_base64(register, ingestor, conn, env):
    device = register("wristband")
    raw = b'{"msg_id": "x", "ts": 1, "readings": {"heart_rate": 70}, "note": "\xff\xfe\\x"}'
    device.publish("telemetry", raw, raw=True)
    wait_for(
        lambda: conn.execute(
            "SELECT 1 FROM quarantine WHERE device_id = %s", (device.device_id,)
        ).fetchone(),
        what="quarantined",
    )
    listed = cli_json("quarantine", "list", "--reason", "invalid_utf8", env=env)
    (row,) = [r for r in listed if r["device_id"] == device.device_id]
    assert base64.b64decode(row["payload_base64"]) == raw
    assert "\\xff\\xfe" in row["payload"]  # still readable as text


def test_a_piped_table_keeps_every_figure_whole():
    """Logged or piped (`eldercare drill all > drill.txt`), a wide table is not folded to 80
    columns with its figures cut to '16…'."""
    columns = [f"column {i}" for i in range(14)]
    figures = [f"{123_456 + i}" for i in range(14)]
    script = f"from eldercare.output import table; table('wide', {columns!r}, [{figures!r}])"
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert all(figure in out for figure in figures), out
    assert all(column in out for column in columns), out
