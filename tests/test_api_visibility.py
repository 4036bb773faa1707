"""Who sees what: an SOS from a button bound to nobody reaches the system admins and the duty desk
that was notified (API, live stream), nobody else; refusals in the audit log name only what was
asked for; a duplicate archive number is confirmed only to someone who may see its holder."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from alerts import escalation, lifecycle
from alerts.models import Finding
from api import access
from devices import service as devices
from tests.support import cli, cli_json
from tests.test_api import _token, client, world  # noqa: F401 - fixtures
from tests.test_api_access import API, _bearer, scene  # noqa: F401 - fixture
from tests.test_api_stream import FAST, _login, _parse, _ticket, live_server, readers  # noqa: F401


def _archive_number() -> str:
    return f"3101150010020{uuid.uuid4().int % 10000:04d}"


def test_a_refused_alert_id_does_not_tell_the_audit_log_whose_alert_it_is(client, scene, conn):  # noqa: F811
    a, ia = _token(client, scene, "a"), _token(client, scene, "ia")
    start = datetime.now(UTC)
    # Doctor A (the centre) probes the other institution's alert, and an id that is nobody's.
    for alert_id in (scene["their_alert"], 2**40):
        assert client.get(f"{API}/alerts/{alert_id}", headers=a).status_code == 404
    rows = conn.execute(
        "SELECT resident_id, detail->>'alert_id' FROM audit_log WHERE actor LIKE %s "
        "AND action = 'access.refused' AND at >= %s ORDER BY id",
        (f"user:%:{scene['users']['a'][0]}", start),
    ).fetchall()
    assert rows == [(None, str(scene["their_alert"])), (None, str(2**40))]
    # The centre's admin sees the refusals of its doctor, never the other institution's resident,
    # not even when asking for that resident by id.
    ours = client.get(f"{API}/audit", params={"since": start.isoformat()}, headers=ia).json()
    assert [e["detail"].get("alert_id") for e in ours if e["action"] == "access.refused"] == [
        str(2**40),
        str(scene["their_alert"]),
    ]
    assert all(e["resident_id"] is None for e in ours if e["action"] == "access.refused")
    client.get(f"{API}/residents/{scene['theirs']}", headers=a)
    listed = client.get(f"{API}/audit", params={"since": start.isoformat()}, headers=ia).json()
    assert scene["theirs"] not in {e["resident_id"] for e in listed}
    about = client.get(f"{API}/audit", params={"resident_id": scene["theirs"]}, headers=ia).json()
    assert about == []


def test_a_taken_archive_number_is_named_only_to_who_may_see_its_holder(client, scene, conn):  # noqa: F811
    number = _archive_number()
    holder = devices.add_resident(conn, name="x", archive_id=number)
    conn.execute(
        "UPDATE resident SET institution_id = %s WHERE id = %s", (scene["other"], holder.id)
    )
    ia, ia_other = _token(client, scene, "ia"), _token(client, scene, "ia_other")
    for attempt in (
        lambda h: client.post(
            f"{API}/residents", json={"name": "y", "archive_id": number}, headers=h
        ),
        lambda h: client.patch(
            f"{API}/residents/{scene['resident']}", json={"archive_id": number}, headers=h
        ),
    ):
        blind = attempt(ia)
        assert blind.status_code == 409
        assert number not in blind.text and "belongs" not in blind.text, blind.text
    seen = client.post(
        f"{API}/residents", json={"name": "y", "archive_id": number}, headers=ia_other
    )
    assert seen.status_code == 409 and f"belongs to resident {holder.id}" in seen.json()["detail"]


@pytest.fixture()
def unbound_sos(scene, conn):  # noqa: F811
    """An SOS from a button bound to nobody (notified to the default duty desk), and a login of
    that desk; the scene's own duty desk (of the health centre) was not notified."""
    device_id = f"sos-nobody-{scene['tag']}"
    devices.add_device(conn, device_id=device_id, kind="sos_button")
    alert = lifecycle.raise_finding(
        conn,
        resident_id=None,
        now=datetime.now(UTC),
        finding=Finding(
            rule="sos", severity="critical", title="紧急呼叫 / SOS", device_id=device_id
        ),
    )
    (desk_institution,) = conn.execute(
        "SELECT DISTINCT d.institution_id FROM notification n "
        "JOIN doctor d ON n.recipient_id = d.id::text WHERE n.alert_id = %s "
        "AND n.recipient_kind = 'doctor' AND d.role = 'duty_desk'",
        (alert.id,),
    ).fetchone()
    username = f"default-desk-{scene['tag']}"
    access.add_user(
        conn,
        username=username,
        password=f"pw-{scene['tag']}-dd",
        role="duty_desk",
        institution_id=desk_institution,
    )
    users = {**scene["users"], "default_desk": (username, f"pw-{scene['tag']}-dd")}
    return {**scene, "users": users, "sos": alert.id, "sos_device": device_id}


def test_an_unbound_button_s_sos_is_seen_and_acked_by_the_desk_told_and_system_admins(
    client,  # noqa: F811
    unbound_sos,
    conn,
):
    world_ = unbound_sos
    sos, device_id = world_["sos"], world_["sos_device"]
    for who in ("default_desk", "admin"):
        headers = _token(client, world_, who)
        queue = client.get(f"{API}/alerts", headers=headers)
        assert queue.status_code == 200, queue.text
        row = next((a for a in queue.json() if a["id"] == sos), None)
        assert row is not None, f"{who} does not see the unbound SOS"
        assert row["resident_id"] is None and row["device_id"] == device_id
        assert row["severity"] == "critical" and row["state"] == "open"
        got = client.get(f"{API}/alerts/{sos}", headers=headers)
        assert got.status_code == 200 and got.json()["timeline"][0]["action"] == "raised"
    # Nobody else: another institution's duty desk, doctors, admins of an institution, platforms.
    for headers in (
        *(_token(client, world_, who) for who in ("desk", "a", "ia", "ia_other")),
        _bearer(world_["own_key"]),
    ):
        assert sos not in {a["id"] for a in client.get(f"{API}/alerts", headers=headers).json()}
        assert client.get(f"{API}/alerts/{sos}", headers=headers).status_code == 404
    desk = _token(client, world_, "default_desk")
    refused = client.post(
        f"{API}/alerts/{sos}/ack", json={}, headers=_token(client, world_, "desk")
    )
    assert refused.status_code == 404
    # The desk acknowledges it through the API: reminders and escalation stop.
    acked = client.post(f"{API}/alerts/{sos}/ack", json={"note": "calling"}, headers=desk)
    assert acked.status_code == 200, acked.text
    assert acked.json()["state"] == "acknowledged" and acked.json()["device_id"] == device_id
    before = conn.execute(
        "SELECT count(*) FROM notification WHERE alert_id = %s", (sos,)
    ).fetchone()
    escalation.run_due(conn, datetime.now(UTC) + timedelta(hours=3))
    reminders = conn.execute(
        "SELECT count(*) FROM notification WHERE alert_id = %s AND kind IN ('reminder', 'escalation')",
        (sos,),
    ).fetchone()
    assert reminders == (0,)
    assert (
        conn.execute("SELECT count(*) FROM notification WHERE alert_id = %s", (sos,)).fetchone()
        == before
    )
    resolved = client.post(
        f"{API}/alerts/{sos}/resolve", json={"note": "a test press"}, headers=desk
    )
    assert resolved.status_code == 200 and resolved.json()["state"] == "resolved"
    audited = conn.execute(
        "SELECT action, resident_id FROM audit_log WHERE action LIKE 'alert.%%' "
        "AND resource LIKE %s ORDER BY id",
        (f"%/alerts/{sos}/%",),
    ).fetchall()
    assert audited == [("alert.acknowledge", None), ("alert.resolve", None)]


def test_the_live_stream_shows_an_unbound_sos_to_the_desk_told_only(
    live_server,  # noqa: F811
    readers,  # noqa: F811
    unbound_sos,
    database_url,
):
    world_ = unbound_sos
    base = live_server(FAST)
    url = f"{base}/api/v1/stream"
    told, other_desk, admin = (
        readers(url, params={"ticket": _ticket(base, _login(base, world_, who))})
        for who in ("default_desk", "desk", "admin")
    )
    for reader in (told, other_desk, admin):
        reader.wait(lambda r: r.of("ready"), what="ready")
    with psycopg.connect(database_url, autocommit=True) as other:
        lifecycle.comment(other, world_["sos"], actor="system", now=datetime.now(UTC), note="n")

    def got(reader) -> bool:
        return any(e["data"]["alert_id"] == world_["sos"] for e in reader.of("alert"))

    for reader in (told, admin):
        reader.wait(got, what="the unbound SOS's comment")
    event = next(e for e in told.of("alert") if e["data"]["alert_id"] == world_["sos"])
    assert event["data"]["resident_id"] is None
    assert event["data"]["device_id"] == world_["sos_device"]
    beats = other_desk.heartbeats
    other_desk.wait(lambda r: r.heartbeats > beats, what="the other desk's next heartbeat")
    assert not got(other_desk)
    # Catching up from the database (a reconnect) shows it to the desk told, not to the other.
    start = told.of("ready")[0]["id"]
    for who, expected in (("default_desk", True), ("desk", False)):
        replay = httpx.get(
            url,
            params={"once": "true"},
            headers={**_login(base, world_, who), "Last-Event-ID": str(start)},
        ).text
        events = [_parse(b) for b in replay.split("\n\n")]
        ids = [e["data"] for e in events if e and e["event"] == "alert"]
        assert any(f'"alert_id":{world_["sos"]}' in d for d in ids) is expected, who


def test_usernames_never_leave_the_server(client, scene, conn, database_url):  # noqa: F811
    """People see who acted by name, platforms by an opaque id; no response, stream event or
    notification payload carries a username."""
    alert_id = scene["alert"]
    usernames = [u for u, _ in scene["users"].values()]
    a = _token(client, scene, "a")
    (user_a,) = conn.execute(
        "SELECT id FROM app_user WHERE username = %s", (scene["users"]["a"][0],)
    ).fetchone()
    # A login with neither a doctor nor a display name is shown as its id.
    tag = scene["tag"]
    access.add_user(
        conn,
        username=f"plain-{tag}",
        password=f"pw-{tag}-plain",
        role="institution_admin",
        institution_id=scene["centre"],
    )
    plain = client.post(
        f"{API}/auth/login", json={"username": f"plain-{tag}", "password": f"pw-{tag}-plain"}
    ).json()
    plain_headers = _bearer(plain["token"])
    (plain_id,) = conn.execute(
        "SELECT id FROM app_user WHERE username = %s", (f"plain-{tag}",)
    ).fetchone()
    usernames.append(f"plain-{tag}")
    start = datetime.now(UTC)
    acked = client.post(f"{API}/alerts/{alert_id}/ack", json={"note": "on it"}, headers=a)
    assert acked.status_code == 200, acked.text
    assert acked.json()["acknowledged_by"] == f"user:{user_a}"
    assert acked.json()["acknowledged_by_name"] == "张医生"
    commented = client.post(
        f"{API}/alerts/{alert_id}/comment", json={"note": "家属已到"}, headers=plain_headers
    )
    assert commented.status_code == 200, commented.text
    seen = {
        "list": client.get(f"{API}/alerts", headers=a).text,
        "alert": client.get(f"{API}/alerts/{alert_id}", headers=a).text,
        "platform list": client.get(f"{API}/alerts", headers=_bearer(scene["own_key"])).text,
        "platform alert": client.get(
            f"{API}/alerts/{alert_id}", headers=_bearer(scene["own_key"])
        ).text,
        "stream": client.get(
            f"{API}/stream",
            params={"once": "true"},
            headers={**a, "Last-Event-ID": "0"},
        ).text,
        "platform stream": client.get(
            f"{API}/stream",
            params={"once": "true"},
            headers={**_bearer(scene["own_key"]), "Last-Event-ID": "0"},
        ).text,
        "audit": client.get(
            f"{API}/audit", params={"since": start.isoformat()}, headers=plain_headers
        ).text,
    }
    assert f'"actor":"user:{user_a}","actor_name":"张医生"' in seen["stream"]
    assert f'"actor":"user:{user_a}","actor_name":"user:{user_a}"' in seen["platform stream"]
    for where, text in seen.items():
        for username in usernames:
            assert username not in text, f"{username} in {where}"
    detail = client.get(f"{API}/alerts/{alert_id}", headers=a).json()
    assert [(t["actor"], t["actor_name"]) for t in detail["timeline"][-2:]] == [
        (f"user:{user_a}", "张医生"),
        (f"user:{plain_id}", f"user:{plain_id}"),
    ]
    platform = client.get(f"{API}/alerts/{alert_id}", headers=_bearer(scene["own_key"])).json()
    assert platform["acknowledged_by"] == platform["acknowledged_by_name"] == f"user:{user_a}"
    assert "张医生" not in str(platform["timeline"])
    # Notifications: doctors' apps are told who by name.
    payloads = [
        r[0]
        for r in conn.execute(
            "SELECT payload FROM notification WHERE alert_id = %s AND kind = 'acknowledged'",
            (alert_id,),
        )
    ]
    assert payloads and all(p["by"] == "张医生" for p in payloads)
    # Resolved while the condition holds: the new alert says whom it follows by opaque id (its
    # detail goes to webhooks and platforms).
    resolved = client.post(f"{API}/alerts/{alert_id}/resolve", json={"note": "ok"}, headers=a)
    assert resolved.status_code == 200, resolved.text
    again = lifecycle.raise_finding(
        conn,
        resident_id=scene["resident"],
        now=datetime.now(UTC),
        finding=Finding(rule="fever", severity="warning", title="发热 / Fever"),
    )
    assert again.id != alert_id
    assert again.detail["follows"]["by"] == f"user:{user_a}"
    everything = str(
        conn.execute(
            "SELECT array_agg(payload::text) FROM notification WHERE alert_id = %s", (again.id,)
        ).fetchone()[0]
    )
    for username in usernames:
        assert username not in everything


def test_a_login_gets_its_display_name_from_the_command_line(env, scene, conn):  # noqa: F811
    username = f"desk-cli-{scene['tag']}"
    made = cli_json(
        "users",
        "add",
        username,
        "--role",
        "duty_desk",
        "--institution",
        str(scene["centre"]),
        "--display-name",
        "夜班 值班台",
        env=env,
    )
    shown = conn.execute("SELECT actor_name(%s)", (f"user:{made['id']}",)).fetchone()
    assert shown == ("夜班 值班台",)
    too_long = cli(
        "users",
        "add",
        f"{username}-2",
        "--role",
        "duty_desk",
        "--institution",
        str(scene["centre"]),
        "--display-name",
        "x" * 101,
        env=env,
        check=False,
    )
    assert too_long.returncode == 1 and "display name" in too_long.stderr
