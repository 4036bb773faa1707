"""Per-resident thresholds and the SpO2 scale as stored, judged by the engine on real readings:
a one-sided override set with the CLI keeps the other side, a scale-2 resident's target is theirs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alerts.clock import ManualClock
from alerts.engine import AlertEngine
from alerts.settings import AlertSettings
from tests.support import cli, cli_json, now_ms, wait_telemetry_stored


@pytest.fixture()
def engine(settings):
    instance = AlertEngine(settings, AlertSettings(), clock=ManualClock(datetime.now(UTC)))
    instance.connect()
    yield instance
    instance.close()


def _judge(engine, conn, resident_id):
    now = datetime.now(UTC)
    return {f.rule: f.severity for f in engine.evaluate_resident(conn, resident_id, now)}


def test_a_one_sided_override_from_the_cli_keeps_hypotension_alerts(
    register, ingestor, engine, conn, env
):
    cuff = register("bp_cuff")
    resident = str(cuff.resident_id)
    set_high = cli_json(
        "care", "threshold", "--resident", resident, "--metric", "systolic_bp", "--high", "200",
        "--by", "doctor:1", env=env,
    )  # fmt: skip
    assert set_high["low"] is None and set_high["effective"] == {"low": 90, "high": 200}

    cuff.telemetry({"systolic_bp": 185, "diastolic_bp": 95}, ts=now_ms() - 60_000)
    wait_telemetry_stored(conn, cuff.device_id, 1)
    assert _judge(engine, conn, cuff.resident_id) == {}, "185 is below this resident's 200"
    cuff.telemetry({"systolic_bp": 86, "diastolic_bp": 55})
    wait_telemetry_stored(conn, cuff.device_id, 2)
    assert _judge(engine, conn, cuff.resident_id) == {"hypotension": "warning"}

    bad = cli(
        "care", "threshold", "--resident", resident, "--metric", "systolic_bp", "--low", "190",
        env=env, check=False,
    )  # fmt: skip
    assert bad.returncode == 1 and "must be below high 180" in bad.stderr
    row = conn.execute(
        "SELECT low, high FROM resident_threshold WHERE resident_id = %s AND metric = 'systolic_bp'",
        (cuff.resident_id,),
    ).fetchone()
    assert row == (None, 200), "the refused change stored nothing"


def test_a_scale_2_residents_own_target_decides_spo2_alerts(register, ingestor, engine, conn):
    scale_2 = register("spo2_clip", name="慢阻肺老人")
    scale_1 = register("spo2_clip", name="对照老人")
    conn.execute("UPDATE resident SET spo2_scale = 2 WHERE id = %s", (scale_2.resident_id,))
    start = datetime.now(UTC) - timedelta(minutes=2)
    for clip in (scale_2, scale_1):
        for i in range(13):  # 90 % for two minutes: on target for scale 2, severe on scale 1
            at = start + timedelta(seconds=10 * i)
            clip.telemetry({"spo2": 90}, ts=int(at.timestamp() * 1000))
        wait_telemetry_stored(conn, clip.device_id, 13)
    assert _judge(engine, conn, scale_2.resident_id) == {}
    assert _judge(engine, conn, scale_1.resident_id)["spo2_low"] == "critical"
