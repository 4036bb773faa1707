"""Alert life cycle against the real database and broker, time moved by a controllable clock:
escalation tiers, reminders, acknowledgement, snooze, restart without lost or doubled notifications."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest

from alerts import lifecycle, outbox, transitions
from alerts.clock import ManualClock
from alerts.engine import AlertEngine
from alerts.escalation import run_due
from alerts.models import AlertError, Finding
from alerts.settings import AlertSettings
from tests.support import DoctorApp, wait_for


@pytest.fixture()
def clock():
    return ManualClock(datetime.now(UTC))


def _finding(rule="spo2_low", severity="warning"):
    return Finding(rule=rule, severity=severity, title="血氧过低 / Low SpO2", detail={"value": 93})


def _sent(conn, alert_id, kind=None):
    rows = conn.execute(
        "SELECT kind, recipient_kind, recipient_id, channel, idempotency_key, state FROM notification "
        "WHERE alert_id = %s AND (%s::text IS NULL OR kind = %s) ORDER BY id",
        (alert_id, kind, kind),
    ).fetchall()
    return rows


def _doctors(rows, channel="mqtt"):
    return sorted(int(r[2]) for r in rows if r[1] == "doctor" and r[3] == channel)


def test_not_acknowledged_escalates_on_time_and_acknowledging_stops_reminders(conn, circle, clock):
    alert = lifecycle.raise_finding(
        conn, resident_id=circle["resident"], finding=_finding(), now=clock.now()
    )
    assert alert.state == "open"
    assert _doctors(_sent(conn, alert.id, "raised")) == [circle["a"]]
    assert {r[3] for r in _sent(conn, alert.id, "raised") if r[1] == "doctor"} == {"mqtt", "email"}

    clock.advance(timedelta(minutes=15))
    run_due(conn, clock.now())
    assert _doctors(_sent(conn, alert.id, "reminder")) == [circle["a"]], "first reminder at 15 min"
    clock.advance(timedelta(minutes=14, seconds=59))
    run_due(conn, clock.now())
    assert _sent(conn, alert.id, "escalation") == [], (
        "warning policy escalates at 30 min, not before"
    )
    clock.advance(timedelta(seconds=1))
    run_due(conn, clock.now())
    assert _doctors(_sent(conn, alert.id, "escalation")) == [circle["desk"]]

    lifecycle.acknowledge(conn, alert.id, actor=f"doctor:{circle['a']}", now=clock.now())
    before = len(_sent(conn, alert.id, "reminder"))
    clock.advance(timedelta(hours=3))
    run_due(conn, clock.now())
    assert len(_sent(conn, alert.id, "reminder")) == before, (
        "no reminders after the acknowledgement"
    )
    acked = _sent(conn, alert.id, "acknowledged")
    assert {int(r[2]) for r in acked if r[1] == "doctor"} == {circle["a"], circle["desk"]}, (
        "others learn who took it"
    )
    timeline = [
        r[0]
        for r in conn.execute(
            "SELECT action FROM alert_transition WHERE alert_id = %s ORDER BY id", (alert.id,)
        )
    ]
    assert timeline == ["raised", "escalated", "acknowledged"]


def test_dedup_counts_repeats_and_worsening_raises_severity_and_renotifies(conn, circle, clock):
    first = lifecycle.raise_finding(
        conn, resident_id=circle["resident"], finding=_finding(), now=clock.now()
    )
    again = lifecycle.raise_finding(
        conn,
        resident_id=circle["resident"],
        finding=_finding(),
        now=clock.advance(timedelta(seconds=30)),
    )
    assert again.id == first.id and again.occurrences == 2 and again.severity == "warning"
    worse = lifecycle.raise_finding(
        conn,
        resident_id=circle["resident"],
        finding=_finding(severity="critical"),
        now=clock.advance(timedelta(seconds=30)),
    )
    assert worse.id == first.id and worse.severity == "critical"
    assert _doctors(_sent(conn, first.id, "severity_raised")) == [circle["a"]]
    open_alerts = conn.execute(
        "SELECT count(*) FROM alert WHERE resident_id = %s AND rule = 'spo2_low' AND state <> 'resolved'",
        (circle["resident"],),
    ).fetchone()[0]
    assert open_alerts == 1


def test_critical_cannot_be_snoozed_and_snooze_is_per_person(conn, circle, clock):
    critical = lifecycle.raise_finding(
        conn, resident_id=circle["resident"], finding=_finding("sos", "critical"), now=clock.now()
    )
    with pytest.raises(AlertError, match="cannot be snoozed"):
        lifecycle.snooze(
            conn,
            critical.id,
            doctor_id=circle["a"],
            until=clock.now() + timedelta(hours=1),
            now=clock.now(),
        )

    warning = lifecycle.raise_finding(
        conn, resident_id=circle["resident"], finding=_finding("fever"), now=clock.now()
    )
    clock.advance(timedelta(minutes=31))
    run_due(conn, clock.now())  # escalated to the duty desk: two people are on it now
    lifecycle.snooze(
        conn,
        warning.id,
        doctor_id=circle["a"],
        until=clock.now() + timedelta(hours=2),
        now=clock.now(),
    )
    before = {r[4] for r in _sent(conn, warning.id, "reminder")}
    clock.advance(timedelta(minutes=15))
    run_due(conn, clock.now())
    new = [r for r in _sent(conn, warning.id, "reminder") if r[4] not in before]
    assert _doctors(new) == [circle["desk"]], "A's snooze silences A only"
    assert transitions.get_alert(conn, warning.id).state == "open", (
        "a snooze is not an acknowledgement"
    )


def test_restart_mid_escalation_loses_and_doubles_nothing(conn, database_url, circle, clock):
    alert = lifecycle.raise_finding(
        conn, resident_id=circle["resident"], finding=_finding("sos", "critical"), now=clock.now()
    )
    clock.advance(timedelta(minutes=5))
    # A process dies in the middle of escalating: its transaction never commits.
    with pytest.raises(RuntimeError), conn.transaction():
        run_due(conn, clock.now())
        raise RuntimeError("kill -9")
    assert _sent(conn, alert.id, "escalation") == []
    # Another process (a restart) continues; running the same step twice changes nothing more.
    from store.db import connection

    with connection(database_url, autocommit=True) as restarted:
        run_due(restarted, clock.now())
        run_due(restarted, clock.now())
    escalation = _sent(conn, alert.id, "escalation")
    assert _doctors(escalation) == [circle["b"]], "tier 2 of the critical policy: the team"
    # The same notification twice would be the same kind to the same recipient on one channel.
    sent = [(r[0], r[1], r[2], r[3]) for r in _sent(conn, alert.id)]
    assert len(sent) == len(set(sent)), "no notification doubled"
    clock.advance(timedelta(minutes=5))
    run_due(conn, clock.now())
    contacts = [r for r in _sent(conn, alert.id, "escalation") if r[1] == "contact"]
    assert len(contacts) == 1, "tier 3: the emergency contacts (through the platforms' webhooks)"


def _app_state(conn, alert_id, doctor_id, kind="raised"):
    return conn.execute(
        "SELECT state FROM notification WHERE alert_id = %s AND kind = %s "
        "AND recipient_kind = 'doctor' AND recipient_id = %s AND channel = 'mqtt'",
        (alert_id, kind, str(doctor_id)),
    ).fetchone()[0]


def test_notifications_reach_the_doctors_mqtt_topic_exactly_once(
    conn, circle, clock, settings, endpoint, app_login, app_acks
):
    """Delivered means the doctor's app acknowledged it (docs/alerts.md); then never again."""
    engine = AlertEngine(settings, AlertSettings(), clock=clock)
    engine.connect()
    app_acks(clock)
    inbox = DoctorApp(endpoint, *app_login(circle["a"]), circle["a"])
    try:
        alert = lifecycle.raise_finding(
            conn, resident_id=circle["resident"], finding=_finding(), now=clock.now()
        )
        outbox.dispatch(conn, engine.fast, clock.now(), alert_id=alert.id)
        wait_for(
            lambda: _app_state(conn, alert.id, circle["a"]) == "sent", 10, "acknowledged by the app"
        )
        later = clock.advance(outbox.ACK_WAIT + timedelta(minutes=5))
        assert outbox.dispatch(conn, engine.fast, later, alert_id=alert.id) == 0, (
            "sent rows stay sent"
        )
        messages = inbox.wait(lambda m: len(m) >= 1)
        body = orjson.loads(messages[0][1])
        assert body["kind"] == "raised" and body["alert"]["id"] == alert.id
        assert body["alert"]["resident"]["name"] == "王秀英" and body["idempotency_key"]
        assert len(inbox.messages) == 1
    finally:
        inbox.close()
        engine.close()


def test_a_channel_that_is_not_configured_retries_with_backoff_without_blocking_others(
    conn, circle, clock, settings, endpoint, app_login, app_acks
):
    engine = AlertEngine(settings, AlertSettings(), clock=clock)
    engine.connect()
    app_acks(clock)
    app = DoctorApp(endpoint, *app_login(circle["a"]), circle["a"])
    try:
        alert = lifecycle.raise_finding(
            conn, resident_id=circle["resident"], finding=_finding(), now=clock.now()
        )
        channels = {**engine.fast, "email": _Failing()}
        outbox.dispatch(conn, channels, clock.now(), alert_id=alert.id)
        # The app got it and acknowledged it: delivered, whatever the e-mail does.
        wait_for(lambda: _app_state(conn, alert.id, circle["a"]) == "sent", 10, "app delivery")
        states = {r[3]: r[5] for r in _sent(conn, alert.id, "raised") if r[1] == "doctor"}
        assert states == {"mqtt": "sent", "email": "pending"}
        attempts, next_at = conn.execute(
            "SELECT attempts, next_attempt_at FROM notification WHERE alert_id = %s AND channel = 'email'",
            (alert.id,),
        ).fetchone()
        assert attempts == 1 and next_at > clock.now()
    finally:
        app.close()
        engine.close()


class _Failing:
    name = "email"

    def send(self, delivery):
        from alerts.channels.base import ChannelError

        raise ChannelError("SMTP server down")


def test_every_change_is_announced_on_the_cross_process_stream(conn, database_url, circle, clock):
    from store.db import connection

    with connection(database_url, autocommit=True) as listener:
        listener.execute("LISTEN eldercare_alert")
        alert = lifecycle.raise_finding(
            conn, resident_id=circle["resident"], finding=_finding("fever"), now=clock.now()
        )
        lifecycle.acknowledge(conn, alert.id, actor="doctor:1", now=clock.now())
        events = [orjson.loads(n.payload) for n in listener.notifies(timeout=5, stop_after=2)]
    assert [(e["alert_id"], e["action"], e["state"]) for e in events] == [
        (alert.id, "raised", "open"),
        (alert.id, "acknowledged", "acknowledged"),
    ]


def test_quiet_hours_hold_warnings_back_until_they_end_but_never_critical(
    conn, circle, clock, settings, endpoint, app_login, app_acks
):
    """Held back, not dropped: delivered when the doctor's quiet hours end (the test used to expect
    'suppressed' rows that were never sent)."""
    from care import service as care

    local = clock.now().astimezone(ZoneInfo("Asia/Shanghai"))
    start, end = f"{local.hour:02d}:00", f"{(local.hour + 2) % 24:02d}:00"
    care.set_preferences(conn, doctor_id=circle["a"], quiet_start=start, quiet_end=end)
    quiet_end = (local.replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)).astimezone(
        UTC
    )
    warning = lifecycle.raise_finding(
        conn, resident_id=circle["resident"], finding=_finding("fever"), now=clock.now()
    )
    critical = lifecycle.raise_finding(
        conn, resident_id=circle["resident"], finding=_finding("sos", "critical"), now=clock.now()
    )
    held = conn.execute(
        "SELECT state, next_attempt_at, payload->>'held_back_until' FROM notification "
        "WHERE alert_id = %s AND kind = 'raised' AND recipient_kind = 'doctor'",
        (warning.id,),
    ).fetchall()
    assert {(state, at) for state, at, _ in held} == {("pending", quiet_end)}
    assert {datetime.fromisoformat(until) for _, _, until in held} == {quiet_end}
    assert {r[5] for r in _sent(conn, critical.id, "raised") if r[1] == "doctor"} == {"pending"}

    # A reminder inside the quiet hours is only recorded: the held-back notice says the same.
    run_due(conn, clock.advance(timedelta(minutes=15)))
    assert {r[5] for r in _sent(conn, warning.id, "reminder")} == {"suppressed"}

    engine = AlertEngine(settings, AlertSettings(), clock=clock)
    engine.connect()
    app_acks(clock)
    inbox = DoctorApp(endpoint, *app_login(circle["a"]), circle["a"])
    try:
        before_end = quiet_end - timedelta(seconds=1)
        outbox.dispatch(conn, engine.fast, before_end, alert_id=warning.id)
        assert [r[5] for r in _sent(conn, warning.id, "raised") if r[3] == "mqtt"] == ["pending"]
        assert conn.execute(
            "SELECT attempts FROM notification WHERE alert_id = %s AND kind = 'raised' "
            "AND channel = 'mqtt'",
            (warning.id,),
        ).fetchone() == (0,), "not published before the quiet hours end"
        outbox.dispatch(conn, engine.fast, quiet_end, alert_id=warning.id)
        body = orjson.loads(inbox.wait(lambda m: len(m) >= 1)[0][1])
        assert body["kind"] == "raised" and body["alert"]["id"] == warning.id
        wait_for(lambda: _app_state(conn, warning.id, circle["a"]) == "sent", 10, "delivered")
        assert len(inbox.messages) == 1
    finally:
        inbox.close()
        engine.close()


def test_a_worsening_follows_the_new_policy_counted_from_when_the_alert_opened(conn, circle, clock):
    opened = clock.now()
    alert = lifecycle.raise_finding(
        conn, resident_id=circle["resident"], finding=_finding(), now=opened
    )
    worsened = clock.advance(timedelta(seconds=30))
    lifecycle.raise_finding(
        conn, resident_id=circle["resident"], finding=_finding(severity="critical"), now=worsened
    )
    # Critical tier 0 at once: the doctor already knew (told it got worse), the duty desk is new.
    assert _doctors(_sent(conn, alert.id, "severity_raised")) == [circle["a"]]
    first = conn.execute(
        "SELECT recipient_id, min(created_at) FROM notification WHERE alert_id = %s "
        "AND kind = 'raised' AND channel = 'mqtt' GROUP BY 1",
        (alert.id,),
    ).fetchall()
    assert dict((int(r), at) for r, at in first) == {circle["a"]: opened, circle["desk"]: worsened}
    row = transitions.get_alert(conn, alert.id)
    assert row.next_tier_at == opened + timedelta(minutes=5), "tier 1 from opened_at"
    assert row.next_reminder_at == worsened + timedelta(minutes=2), "critical reminders"

    run_due(conn, opened + timedelta(minutes=4, seconds=59))
    assert _sent(conn, alert.id, "escalation") == []
    run_due(conn, opened + timedelta(minutes=5))
    assert _doctors(_sent(conn, alert.id, "escalation")) == [circle["b"]], "the team at 5 min"
    run_due(conn, opened + timedelta(minutes=10))
    assert [r[1] for r in _sent(conn, alert.id, "escalation") if r[1] == "contact"] == ["contact"]
    pairs = [
        (r[0], r[1], r[2], r[3])
        for r in _sent(conn, alert.id)
        if r[1] == "doctor" and r[0] != "reminder"
    ]
    assert len(pairs) == len(set(pairs)), "nobody told the same thing twice"


def test_a_late_worsening_notifies_every_tier_already_due_at_once(conn, circle, clock):
    opened = clock.now()
    alert = lifecycle.raise_finding(
        conn, resident_id=circle["resident"], finding=_finding(), now=opened
    )
    run_due(conn, clock.advance(timedelta(minutes=30)))  # warning tier 1: the desk
    worsened = clock.advance(timedelta(minutes=10))
    lifecycle.raise_finding(
        conn, resident_id=circle["resident"], finding=_finding(severity="critical"), now=worsened
    )
    # 40 minutes unacknowledged: under the critical policy the team (5 min) and the family
    # (10 min) are overdue.
    assert _doctors(_sent(conn, alert.id, "escalation")) == sorted([circle["desk"], circle["b"]])
    assert any(r[1] == "contact" for r in _sent(conn, alert.id, "escalation"))
    assert transitions.get_alert(conn, alert.id).next_tier_at is None


def test_a_worsening_after_an_acknowledgement_reopens_with_a_new_round(conn, circle, clock):
    alert = lifecycle.raise_finding(
        conn, resident_id=circle["resident"], finding=_finding(), now=clock.now()
    )
    lifecycle.acknowledge(conn, alert.id, actor=f"doctor:{circle['b']}", now=clock.now())
    worsened = clock.advance(timedelta(hours=1))
    after = lifecycle.raise_finding(
        conn, resident_id=circle["resident"], finding=_finding(severity="critical"), now=worsened
    )
    assert after.state == "open" and after.acknowledged_by is None
    assert after.next_tier_at == worsened + timedelta(minutes=5), "the new round counts from now"
    told = _doctors(_sent(conn, alert.id, "severity_raised"))
    assert circle["b"] in told, "the one who acknowledged hears it got worse"
    run_due(conn, worsened + timedelta(minutes=2))
    assert _doctors(_sent(conn, alert.id, "reminder")), "reminders again until acknowledged"


def test_a_snooze_does_not_survive_a_worsening_to_critical(conn, circle, clock):
    alert = lifecycle.raise_finding(
        conn, resident_id=circle["resident"], finding=_finding(), now=clock.now()
    )
    lifecycle.snooze(
        conn,
        alert.id,
        doctor_id=circle["a"],
        until=clock.now() + timedelta(hours=3),
        now=clock.now(),
    )
    lifecycle.raise_finding(
        conn,
        resident_id=circle["resident"],
        finding=_finding(severity="critical"),
        now=clock.advance(timedelta(seconds=10)),
    )
    assert (
        conn.execute(
            "SELECT count(*) FROM alert_snooze WHERE alert_id = %s", (alert.id,)
        ).fetchone()[0]
        == 0
    )
    run_due(conn, clock.advance(timedelta(minutes=2)))
    assert circle["a"] in _doctors(_sent(conn, alert.id, "reminder"))


def test_a_snooze_expires(conn, circle, clock):
    alert = lifecycle.raise_finding(
        conn, resident_id=circle["resident"], finding=_finding(), now=clock.now()
    )
    lifecycle.snooze(
        conn,
        alert.id,
        doctor_id=circle["a"],
        until=clock.now() + timedelta(minutes=20),
        now=clock.now(),
    )
    run_due(conn, clock.advance(timedelta(minutes=15)))
    assert _sent(conn, alert.id, "reminder") == [], "snoozed: the 15-minute reminder skips A"
    run_due(conn, clock.advance(timedelta(minutes=15)))
    second = [r for r in _sent(conn, alert.id, "reminder") if r[4].startswith(f"a{alert.id}:r2:")]
    assert circle["a"] in _doctors(second), "after the snooze ends, A is reminded again"


def test_acknowledging_one_alert_leaves_the_others_reminding(conn, circle, clock):
    fever, low_bp = (
        lifecycle.raise_finding(
            conn, resident_id=circle["resident"], finding=_finding(rule), now=clock.now()
        )
        for rule in ("fever", "hypotension")
    )
    lifecycle.acknowledge(conn, fever.id, actor=f"doctor:{circle['a']}", now=clock.now())
    run_due(conn, clock.advance(timedelta(minutes=15)))
    assert _sent(conn, fever.id, "reminder") == []
    assert _doctors(_sent(conn, low_bp.id, "reminder")) == [circle["a"]]


def test_resolving_while_the_condition_holds_raises_a_new_alert_that_says_so(conn, circle, clock):
    first = lifecycle.raise_finding(
        conn, resident_id=circle["resident"], finding=_finding("glucose_low"), now=clock.now()
    )
    lifecycle.resolve(
        conn, first.id, actor=f"doctor:{circle['a']}", now=clock.now(), note="打电话, 已进食"
    )
    again = lifecycle.raise_finding(
        conn,
        resident_id=circle["resident"],
        finding=_finding("glucose_low"),
        now=clock.advance(timedelta(seconds=5)),
    )
    assert again.id != first.id and again.state == "open"
    assert again.detail["follows"]["alert_id"] == first.id
    note = conn.execute(
        "SELECT note FROM alert_transition WHERE alert_id = %s AND action = 'raised'", (again.id,)
    ).fetchone()[0]
    assert f"persists after alert {first.id}" in note
    assert _doctors(_sent(conn, again.id, "raised")) == [circle["a"]], "notified as a new alert"
