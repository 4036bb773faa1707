"""`eldercare alerts …`, `eldercare care …` and `eldercare news2` on the command line, with --json."""

from __future__ import annotations

from datetime import UTC, datetime

from alerts import lifecycle
from alerts.models import Finding
from tests.support import cli, cli_json


def _raise(conn, resident_id, rule, severity):
    finding = Finding(rule=rule, severity=severity, title=f"{rule} test")
    return lifecycle.raise_finding(
        conn, resident_id=resident_id, finding=finding, now=datetime.now(UTC)
    )


def test_list_show_ack_snooze_resolve(env, conn, circle):
    warning = _raise(conn, circle["resident"], "fever", "warning")
    critical = _raise(conn, circle["resident"], "sos", "critical")
    listed = cli_json("alerts", "list", "--resident", str(circle["resident"]), env=env)
    assert [a["id"] for a in listed] == [critical.id, warning.id], "critical on top"
    shown = cli_json("alerts", "show", str(critical.id), env=env)
    assert shown["timeline"][0]["action"] == "raised"
    assert {n["recipient_id"] for n in shown["notifications"]} >= {
        str(circle["a"]),
        str(circle["desk"]),
    }

    refused = cli(
        "alerts", "snooze", str(critical.id), "--doctor", str(circle["a"]), env=env, check=False
    )
    assert refused.returncode == 1 and "cannot be snoozed" in refused.stderr
    snoozed = cli_json(
        "alerts", "snooze", str(warning.id), "--doctor", str(circle["a"]), "--for", "1h", env=env
    )
    assert snoozed["state"] == "open"

    acked = cli_json("alerts", "ack", str(critical.id), "--by", f"doctor:{circle['a']}", env=env)
    assert acked["state"] == "acknowledged" and acked["acknowledged_by"] == f"doctor:{circle['a']}"
    resolved = cli_json(
        "alerts", "resolve", str(critical.id), "--by", "doctor:1", "--note", "家访, 无碍", env=env
    )
    assert resolved["state"] == "resolved" and resolved["resolution_note"] == "家访, 无碍"
    again = cli(
        "alerts", "resolve", str(critical.id), "--by", "x", "--note", "y", env=env, check=False
    )
    assert again.returncode == 1 and "already resolved" in again.stderr
    missing = cli("alerts", "ack", "999999999", "--by", "x", env=env, check=False)
    assert missing.returncode == 1 and "no alert 999999999" in missing.stderr
    assert (
        cli_json(
            "alerts", "list", "--state", "resolved", "--resident", str(circle["resident"]), env=env
        )[0]["id"]
        == critical.id
    )


def test_care_commands_build_a_circle(env):
    centre = cli_json(
        "care",
        "institution",
        "--name",
        "浦东某社区卫生服务中心",
        "--kind",
        "community_health_centre",
        env=env,
    )
    assert centre["duty_desk_id"]
    doctor = cli_json(
        "care",
        "doctor",
        "--name",
        "陈医生",
        "--institution",
        str(centre["id"]),
        "--team",
        "一队",
        env=env,
    )
    resident = cli_json("residents", "add", "--name", "赵桂英", env=env)
    contract = cli_json(
        "care",
        "contract",
        "--resident",
        str(resident["id"]),
        "--doctor",
        str(doctor["id"]),
        env=env,
    )
    assert contract["doctor_id"] == doctor["id"]
    prefs = cli_json(
        "care",
        "preferences",
        str(doctor["id"]),
        "--quiet",
        "22:00-07:00",
        "--channels",
        '{"critical": ["mqtt", "email"], "warning": ["mqtt"]}',
        env=env,
    )
    assert prefs["quiet_start"] == "22:00:00"
    bad = cli(
        "care",
        "preferences",
        str(doctor["id"]),
        "--channels",
        '{"critical": ["email"]}',
        env=env,
        check=False,
    )
    assert bad.returncode == 1 and "critical alerts always go" in bad.stderr
    threshold = cli_json(
        "care",
        "threshold",
        "--resident",
        str(resident["id"]),
        "--metric",
        "systolic_bp",
        "--high",
        "200",
        "--by",
        f"doctor:{doctor['id']}",
        env=env,
    )
    assert threshold["high"] == 200
    policy = cli_json(
        "care",
        "policy",
        "--institution",
        str(centre["id"]),
        "--severity",
        "warning",
        "--tiers",
        '[{"after_s": 0, "notify": ["contracted_doctor"]}, {"after_s": 600, "notify": ["duty_desk"]}]',
        "--reminder-every",
        "300",
        env=env,
    )
    assert policy["reminder_every_s"] == 300
    wrong = cli(
        "care",
        "policy",
        "--severity",
        "warning",
        "--tiers",
        '[{"after_s": 60, "notify": ["x"]}]',
        env=env,
        check=False,
    )
    assert wrong.returncode == 1 and "first tier" in wrong.stderr


def test_news2_calculator(env):
    full = cli_json(
        "news2",
        "--resp-rate",
        "22",
        "--spo2",
        "95",
        "--systolic-bp",
        "105",
        "--heart-rate",
        "95",
        "--body-temp",
        "38.4",
        "--consciousness",
        "A",
        env=env,
    )
    assert (full["score"], full["band"], full["complete"]) == (6, "medium", True)
    partial = cli_json("news2", "--spo2", "91", "--heart-rate", "72", env=env)
    assert (
        partial["score"] == 3
        and partial["band"] == "low-medium"
        and "resp_rate" in partial["missing"]
    )
    bad = cli("news2", "--consciousness", "X", env=env, check=False)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
