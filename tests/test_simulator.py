"""The simulator: pure tests of the episodes and the plan, and one run through the real broker."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import typer
from typer.testing import CliRunner

from devices import broker_auth
from devices.simulator import fleet as fleet_mod
from devices.simulator.cli import simulate as simulate_command
from devices.simulator.episodes import EPISODES, ScheduledEpisode, messages, timeline
from devices.simulator.plan import PlannedDevice, default_mix, plan, sim_clock
from devices.simulator.run import Options, simulate
from devices.simulator.vitals import Message, baseline, epoch_ms
from ingest.contract.envelope import Limits
from ingest.contract.events import parse_event
from ingest.contract.status import parse_status
from ingest.contract.telemetry import parse_telemetry
from ingest.metrics import METRICS
from tests.support import wait_for

START = datetime(2025, 3, 1, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai: the residents are up
AT = START + timedelta(minutes=2)
INTERVAL = timedelta(seconds=5)
KIND_FOR = {"hypertensive_crisis": "bp_cuff", "sos": "sos_button", "sos_cancelled": "sos_button"}


def run(
    key: str | None, kind: str = "wristband", minutes: int = 40, seed: int = 7
) -> list[Message]:
    profile = baseline(random.Random(seed))
    scheduled = [ScheduledEpisode(key, AT)] if key else []
    return timeline(
        profile, kind, START, timedelta(minutes=minutes), INTERVAL, scheduled, random.Random(seed)
    )


def objects(msgs: list[Message]) -> list[dict]:
    """Every telemetry object, backlog arrays unpacked, in measured order."""
    out: list[dict] = []
    for m in msgs:
        if m.channel == "telemetry":
            out.extend(m.payload if isinstance(m.payload, list) else [m.payload])
    return sorted(out, key=lambda o: o["ts"])


def series(msgs: list[Message], metric: str) -> list[tuple[datetime, float]]:
    return [
        (datetime.fromtimestamp(o["ts"] / 1000, UTC), o["readings"][metric])
        for o in objects(msgs)
        if metric in o["readings"]
    ]


def longest_run(points: list[tuple[datetime, float]], inside) -> timedelta:
    best, first = timedelta(0), None
    for at, value in points:
        if inside(value):
            first = first or at
            best = max(best, at - first)
        else:
            first = None
    return best


def events(msgs: list[Message]) -> list[dict]:
    return [m.payload for m in msgs if m.channel == "events"]


@pytest.mark.parametrize("key", [e.key for e in EPISODES] + [None])
def test_every_payload_passes_the_contract_and_metric_table(key):
    msgs = run(key, KIND_FOR.get(key or "", "wristband"))
    now, limits, ids = START + timedelta(hours=1), Limits(), []
    assert msgs == sorted(msgs, key=lambda m: m.at), "messages come in send order"
    for m in msgs:
        raw = orjson.dumps(m.payload)
        if m.channel == "telemetry":
            parsed = parse_telemetry("dev-1", raw, now, limits)
            assert parsed.rejections == [] and parsed.objects
            ids += [o.msg_id for o in parsed.objects]
        elif m.channel == "events":
            ids.append(parse_event("dev-1", raw, now, limits).msg_id)
        else:
            assert parse_status("dev-1", raw, now, limits).online
    assert len(ids) == len(set(ids)), "msg_id is unique"
    for obj in objects(msgs):
        assert isinstance(obj["ts"], int)
        for metric, value in obj["readings"].items():
            spec = METRICS[metric]
            assert spec.low <= value <= spec.high
            assert round(value, spec.decimals) == value


def test_baselines_are_those_of_healthy_older_adults():
    for seed in range(200):
        p = baseline(random.Random(seed))
        assert 60 <= p.heart_rate <= 85 and 95 <= p.spo2 <= 99 and 12 <= p.resp_rate <= 18
        assert 36.2 <= p.body_temp <= 36.9 and 120 <= p.systolic_bp <= 145
        assert 70 <= p.diastolic_bp <= 90 and 5 <= p.blood_glucose <= 7


def test_normal_data_crosses_no_threshold():
    msgs = run(None, minutes=120)
    assert min(v for _, v in series(msgs, "spo2")) >= 95
    assert max(v for _, v in series(msgs, "heart_rate")) <= 100
    assert max(v for _, v in series(msgs, "body_temp")) <= 37.2
    steps = [v for _, v in series(msgs, "steps")]
    assert steps == sorted(steps), "steps count up during the day"


def test_hypoxia_holds_spo2_at_or_below_90_for_at_least_two_minutes():
    points = series(run("hypoxia"), "spo2")
    assert longest_run(points, lambda v: v <= 90) >= timedelta(minutes=2)
    assert min(v for _, v in points) >= 86
    assert all(v >= 95 for at, v in points if at < AT or at > AT + timedelta(minutes=6))


def test_tachycardia_is_sustained_for_ten_minutes():
    points = series(run("tachycardia"), "heart_rate")
    assert longest_run(points, lambda v: 130 <= v <= 150) >= timedelta(minutes=10)
    assert max(v for _, v in points) <= 150


def test_fever_reaches_38_3_to_39_5():
    points = series(run("fever", minutes=60), "body_temp")
    peak = max(v for _, v in points)
    assert 38.3 <= peak <= 39.5
    assert longest_run(points, lambda v: v >= 38.3) >= timedelta(minutes=15)
    assert all(v <= 37.2 for at, v in points if at < AT)


def test_hypertensive_crisis_on_the_cuff():
    msgs = run("hypertensive_crisis", "bp_cuff")
    crisis = [o["readings"] for o in objects(msgs) if o["readings"]["systolic_bp"] >= 185]
    assert len(crisis) >= 3
    assert all(r["diastolic_bp"] >= 120 for r in crisis)


def test_fall_is_one_event_with_location():
    (fall,) = events(run("fall"))
    assert fall["type"] == "fall" and fall["ts"] == epoch_ms(AT)
    assert set(fall["location"]) == {"lat", "lon"}


def test_sos_is_followed_by_nothing_and_sos_cancelled_by_a_cancel():
    assert [e["type"] for e in events(run("sos", "sos_button"))] == ["sos"]
    cancelled = events(run("sos_cancelled", "sos_button"))
    assert [e["type"] for e in cancelled] == ["sos", "sos_cancel"]
    assert cancelled[1]["ts"] - cancelled[0]["ts"] == 40_000


def test_noisy_sample_is_exactly_one_low_value_between_normal_ones():
    points = series(run("noisy_sample"), "spo2")
    low = [i for i, (_, v) in enumerate(points) if v < 95]
    assert len(low) == 1
    (i,) = low
    assert 86 <= points[i][1] <= 89
    assert points[i - 1][1] >= 95 and points[i + 1][1] >= 95


def test_offline_backlog_arrives_as_one_array_with_the_original_timestamps():
    msgs, normal = run("offline_backlog"), run(None)
    arrays = [m for m in msgs if isinstance(m.payload, list)]
    assert len(arrays) == 1
    (backlog,) = arrays
    assert backlog.at == AT + timedelta(minutes=4)
    stamps = [o["ts"] for o in backlog.payload]
    assert len(stamps) == 48
    assert epoch_ms(AT) <= min(stamps) and max(stamps) < epoch_ms(backlog.at)
    quiet = [m for m in msgs if AT <= m.at < backlog.at]
    assert quiet == [], "nothing is sent while the device is offline"
    # Nothing is lost: the same readings as without the episode, just delivered later.
    assert objects(msgs) == objects(normal)


def test_device_silent_sends_nothing_after_its_start():
    msgs = run("device_silent")
    assert msgs and all(m.at < AT for m in msgs)
    assert msgs[-1].at >= AT - INTERVAL


def test_same_seed_same_timeline_other_seed_other_timeline():
    assert run("hypoxia") == run("hypoxia")
    assert run("hypoxia") != run("hypoxia", seed=8)


def test_an_episode_on_an_unsuitable_device_is_refused():
    profile = baseline(random.Random(1))
    with pytest.raises(ValueError, match="cannot happen"):
        messages(
            profile,
            "sos_button",
            START,
            INTERVAL,
            [ScheduledEpisode("hypoxia", AT)],
            random.Random(1),
        )


def _fleet(residents: int) -> list[PlannedDevice]:
    return [
        PlannedDevice(fleet_mod.device_id("f", i, kind), kind, i)
        for i in range(residents)
        for kind in fleet_mod.device_kinds(i)
    ]


@pytest.mark.parametrize("residents", [1, 2, 5, 8])
def test_default_mix_puts_every_episode_on_the_fleet_early(residents):
    result = plan(_fleet(residents), default_mix(), START, INTERVAL)
    assert result.skipped == ()
    assert sorted(a.episode.key for a in result.assignments) == sorted(default_mix())
    if residents >= 5:
        assert all(a.episode.at < START + timedelta(minutes=6) for a in result.assignments)
    for a in result.assignments:
        if a.episode.key == "device_silent":
            later = [
                b
                for b in result.assignments
                if b.device_id == a.device_id and b.end > a.episode.at and b is not a
            ]
            assert later == [], "a silenced device has no episode left to show"


def test_accelerated_time_never_runs_ahead_of_the_wall_clock():
    now = datetime(2025, 3, 1, tzinfo=UTC)
    clock = sim_clock(now, 60, timedelta(seconds=10))
    for elapsed in (0, 1, 5, 9.99, 10, 20):
        assert clock.sim_at(elapsed) <= now + timedelta(seconds=elapsed)
        assert clock.elapsed_for(clock.sim_at(elapsed)) == pytest.approx(elapsed)
    assert clock.sim_at(10) == now + timedelta(seconds=10)
    assert clock.sim_at(10) - clock.start == timedelta(minutes=10)
    assert sim_clock(now, 1, None).sim_at(3) == now + timedelta(seconds=3)


def test_demo_people_have_valid_archive_numbers_and_birth_dates():
    for index in range(50):
        archive = fleet_mod.archive_id("demo", index)
        assert len(archive) == 17 and archive.isdigit() and archive.startswith("310115")
        person = fleet_mod.demo_person("demo", index)
        assert 1930 <= person.birth_date.year <= 1955 and person.contact.phone.isdigit()
    assert fleet_mod.device_kinds(0) == ("wristband", "bp_cuff", "sos_button")
    assert fleet_mod.device_kinds(1) == ("wristband",)


def test_cli_lists_episodes_and_explains_its_options():
    app = typer.Typer()
    app.command("simulate")(simulate_command)
    app.command("other")(lambda: None)  # a group, so `simulate` is a subcommand as in eldercare
    runner = CliRunner()
    listed = runner.invoke(app, ["simulate", "--list-episodes", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [e["key"] for e in json.loads(listed.output)] == [e.key for e in EPISODES]
    helped = runner.invoke(app, ["simulate", "--help"])
    assert all(opt in helped.output for opt in ("--residents", "--speed", "--episode", "--fleet"))
    bad = runner.invoke(app, ["simulate", "--episode", "bogus"])
    assert bad.exit_code == 2


def test_simulated_fleet_reaches_the_database(settings, database_url, broker, ingestor, conn):
    def broker_sync(c):
        broker_auth.sync(c, broker.passwd_path, broker.acl_path, None)
        broker.reload()

    name = f"t{uuid.uuid4().hex[:8]}"
    options = Options(
        residents=2,
        duration=timedelta(seconds=4),
        speed=60,
        interval=INTERVAL,
        episodes=("sos", "hypoxia"),
        fleet=name,
        seed=3,
    )
    summary = simulate(conn, settings.mqtt, options, after_provision=broker_sync)
    assert summary.stopped_by == "duration" and summary.messages_unacknowledged == 0
    assert (summary.residents, summary.devices, summary.residents_created) == (2, 4, 2)
    assert {e["key"] for e in summary.episodes_scheduled} == {"sos", "hypoxia"}
    like = f"{name}-%"

    def stored_messages():
        return conn.execute(
            "SELECT count(*) FROM telemetry_message WHERE device_id LIKE %s", (like,)
        ).fetchone()[0]

    wait_for(
        lambda: stored_messages() == summary.messages_by_channel["telemetry"], 20, "all telemetry"
    )
    per_resident = conn.execute(
        "SELECT resident_id, count(*) FROM reading WHERE device_id LIKE %s GROUP BY resident_id",
        (like,),
    ).fetchall()
    assert len(per_resident) == 2 and all(n > 50 for _, n in per_resident)
    wait_for(
        lambda: conn.execute(
            "SELECT 1 FROM device_event WHERE device_id = %s AND type = 'sos'",
            (f"{name}-001-sos_button",),
        ).fetchone(),
        20,
        "sos event stored",
    )
    low = conn.execute(
        "SELECT count(*) FROM reading WHERE device_id LIKE %s AND metric = 'spo2' AND value <= 90",
        (like,),
    ).fetchone()[0]
    assert low > 0, "the hypoxia episode reached the database"
    assert (
        conn.execute(
            "SELECT reason, detail FROM quarantine WHERE device_id LIKE %s", (like,)
        ).fetchall()
        == []
    )

    # The same fleet again: residents and devices are reused, with rotated broker passwords.
    again = simulate(
        conn,
        settings.mqtt,
        Options(
            residents=2, duration=timedelta(seconds=1), speed=10, fleet=name, seed=3, episodes=()
        ),
        after_provision=broker_sync,
    )
    assert (again.residents_created, again.devices_created) == (0, 0)
    assert again.messages_by_channel.get("telemetry", 0) > 0


def test_an_sos_nobody_answered_is_sent_again_until_the_backend_acks_it(
    settings, database_url, broker, endpoint, conn
):
    """The contract's device behaviour (docs/mqtt.md): a PUBACK only says the broker took it; the
    button re-sends the same SOS until the backend answers on its ack topic. Here the first one is
    lost for good — no ingest session exists yet — and the re-send is what gets it stored."""
    import threading

    from ingest.consumer import Ingestor
    from ingest.settings import IngestSettings
    from tests.conftest import SERVICE_PASSWORD, SERVICE_USER
    from tests.support import Subscriber

    def broker_sync(c):
        broker_auth.sync(c, broker.passwd_path, broker.acl_path, None)
        broker.reload()

    name = f"t{uuid.uuid4().hex[:8]}"
    button = f"{name}-001-sos_button"
    watcher = Subscriber(
        endpoint, SERVICE_USER, SERVICE_PASSWORD, f"eldercare/v1/devices/{button}/events"
    )
    options = Options(
        residents=1,
        duration=timedelta(seconds=8),
        speed=60,
        interval=INTERVAL,
        episodes=("sos",),
        fleet=name,
        seed=5,
    )
    result = {}
    run_thread = threading.Thread(
        target=lambda: result.update(
            summary=simulate(conn, settings.mqtt, options, after_provision=broker_sync)
        )
    )
    ingestor = Ingestor(
        settings,
        IngestSettings(instance=f"t{uuid.uuid4().hex[:6]}", share_group=f"g{uuid.uuid4().hex[:8]}"),
    )
    try:
        run_thread.start()
        first = watcher.wait(lambda m: len(m) >= 1, timeout=20)
        msg_id = orjson.loads(first[0][1])["msg_id"]
        # Only now does an ingestor subscribe: the first SOS went to nobody.
        ingestor.start()
        assert ingestor.wait_subscribed(20)
        run_thread.join(60)
    finally:
        ingestor.stop(leave=True)
        watcher.close()
    summary = result["summary"]
    assert summary.emergencies_resent >= 1 and summary.emergencies_unanswered == 0
    stored = conn.execute(
        "SELECT count(*) FROM device_event WHERE device_id = %s AND msg_id = %s", (button, msg_id)
    ).fetchone()
    assert stored == (1,), "stored once, however often it was sent"
