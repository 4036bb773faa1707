"""The fault drill runs all three scenarios end to end on a small scale: nothing published is lost or
stored twice (its figures at full scale are in docs/performance.md, "Fault drill")."""

from __future__ import annotations

import subprocess

import orjson
import pytest

from tests.support import ELDERCARE


def test_drill_runs_every_scenario_and_loses_nothing(tmp_path):
    run = subprocess.run(
        [
            ELDERCARE,
            "drill",
            "all",
            "--duration",
            "3",
            "--broker-down",
            "2",
            "--rate",
            "200",
            "--flood-rate",
            "1000",
            "--lead",
            "1",
            "--tail",
            "1",
            "--json",
        ],
        capture_output=True,
        timeout=240,
        cwd=tmp_path,
        check=False,
    )
    assert run.stdout, run.stderr.decode(errors="replace")
    result = orjson.loads(run.stdout)
    scenarios = {s["scenario"]: s for s in result["scenarios"]}
    assert list(scenarios) == ["db-outage", "broker-restart", "status-flood"]
    for name, s in scenarios.items():
        assert s["published"] > 0 and s["sos_pressed"] > 0, name
        assert s["duplicated"] == 0 and s["sos_duplicated"] == 0, name
        assert set(s["peak_rss_mb"]) == {
            "ingest telemetry",
            "ingest events+status",
            "alerts",
            "mosquitto",
        }
        assert all(mb > 0 for mb in s["peak_rss_mb"].values()), name
    for name, s in scenarios.items():
        # SOS buttons re-send until acked (docs/mqtt.md): no emergency is lost, whatever the fault.
        assert s["sos_lost"] == 0 and s["sos_acked"] == s["sos_pressed"], name
    for name in ("db-outage", "status-flood"):
        s = scenarios[name]
        assert s["lost"] == 0 and s["stored"] == s["published"], name
    assert scenarios["status-flood"]["status_published"] > 0
    restart = scenarios["broker-restart"]
    if restart["lost"]:
        assert run.returncode == 1, "a loss makes the drill fail"
        # Known and not fixed (docs/operations.md, "Delivery guarantees"): Mosquitto 2.0 does not
        # restore shared subscriptions from its persistence file, so telemetry sent after it
        # restarts and before ingest re-subscribes is acknowledged to the device and dropped.
        pytest.xfail(f"broker restart lost {restart['lost']} telemetry messages (Mosquitto)")
    assert run.returncode == 0, run.stderr.decode(errors="replace")
