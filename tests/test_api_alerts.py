"""The alert queue through the API: comments on the timeline (service, endpoint and CLI), the
`until` filter and cursor paging, snooze refused to callers who are not doctors, and handlers
shown by the name people know them by."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from alerts import lifecycle, transitions
from alerts.models import AlertError, Finding
from api import access
from tests.support import cli, cli_json
from tests.test_api import _token, client, world  # noqa: F401 - fixtures


def _transitions(conn, alert_id):
    return conn.execute(
        "SELECT action, from_state, to_state, actor, note FROM alert_transition "
        "WHERE alert_id = %s ORDER BY id",
        (alert_id,),
    ).fetchall()


def test_a_comment_is_a_timeline_note_that_leaves_the_state_alone(conn, world):  # noqa: F811
    now = datetime.now(UTC)
    before = transitions.get_alert(conn, world["alert"])
    after = lifecycle.comment(
        conn, world["alert"], actor="doctor:1", now=now, note="  called the son  "
    )
    assert after.state == before.state == "open"
    assert after.acknowledged_by is None and after.next_reminder_at == before.next_reminder_at
    assert _transitions(conn, world["alert"])[-1] == (
        "commented",
        "open",
        "open",
        "doctor:1",
        "called the son",
    )
    for empty in ("", "   "):
        with pytest.raises(AlertError, match="needs a note"):
            lifecycle.comment(conn, world["alert"], actor="doctor:1", now=now, note=empty)
    assert len(_transitions(conn, world["alert"])) == 2  # raised, commented
    with pytest.raises(AlertError, match="no alert"):
        lifecycle.comment(conn, 2**40, actor="doctor:1", now=now, note="x")


def test_comment_through_the_api_is_scoped_audited_and_shown_by_name(client, world, conn):  # noqa: F811
    a = _token(client, world, "a")
    url = f"/api/v1/alerts/{world['alert']}/comment"
    done = client.post(url, json={"note": "已电话联系家属"}, headers=a)
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "open"
    timeline = client.get(f"/api/v1/alerts/{world['alert']}", headers=a).json()["timeline"]
    last = timeline[-1]
    assert last["action"] == "commented" and last["note"] == "已电话联系家属"
    assert last["actor"].startswith("user:") and last["actor_name"] == "张医生"
    for bad in ({}, {"note": ""}, {"note": "   "}, {"note": "x" * 2001}):
        response = client.post(url, json=bad, headers=a)
        assert response.status_code == 422, bad
    b = _token(client, world, "b")
    refused = client.post(url, json={"note": "not mine"}, headers=b)
    assert refused.status_code == 404 and "not one of" in refused.json()["detail"]
    platform = {"Authorization": f"Bearer {world['own_key']}"}
    readonly = client.post(url, json={"note": "sync"}, headers=platform)
    assert readonly.status_code == 403 and "may read but not act" in readonly.json()["detail"]
    outcomes = conn.execute(
        "SELECT actor LIKE 'platform:%%', outcome FROM audit_log WHERE action = 'alert.comment' "
        "AND resident_id = %s ORDER BY id",
        (world["resident"],),
    ).fetchall()
    assert outcomes == [(False, "ok")]
    # Platforms are refused before the view, by the central check, which audits the attempt.
    platform_refusal = conn.execute(
        "SELECT outcome, detail->>'operation' FROM audit_log WHERE action = 'access.refused' "
        "AND actor LIKE 'platform:%%' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert platform_refusal == ("refused", "comment")
    assert [t[0] for t in _transitions(conn, world["alert"])].count("commented") == 1


def test_comment_from_the_command_line(env, world, conn):  # noqa: F811
    out = cli_json("alerts", "comment", str(world["alert"]), "--note", "visited, all well", env=env)
    assert out["id"] == world["alert"] and out["state"] == "open"
    action, _, _, actor, note = _transitions(conn, world["alert"])[-1]
    assert (action, note) == ("commented", "visited, all well") and actor.startswith("cli:")
    empty = cli("alerts", "comment", str(world["alert"]), "--note", " ", env=env, check=False)
    assert empty.returncode != 0 and "needs a note" in empty.stderr + empty.stdout


@pytest.fixture()
def many_alerts(conn, world):  # noqa: F811
    """Nine alerts of one resident: three severities, three of them opened at the same moment."""
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    ids = []
    for i, (severity, minutes) in enumerate(
        [
            ("critical", 10),
            ("warning", 20),
            ("warning", 20),
            ("warning", 20),
            ("info", 30),
            ("critical", 40),
            ("info", 50),
            ("warning", 60),
            ("info", 60),
        ]
    ):
        alert = lifecycle.raise_finding(
            conn,
            resident_id=world["resident"],
            now=base + timedelta(minutes=minutes),
            finding=Finding(rule=f"paging-{i}", severity=severity, title=f"paging {i}"),
        )
        ids.append(alert.id)
    return {"base": base, "ids": ids}


def test_alerts_page_by_cursor_without_skips_or_repeats(client, world, many_alerts):  # noqa: F811
    a = _token(client, world, "a")
    base = many_alerts["base"]
    query = {
        "resident_id": world["resident"],
        "since": base.isoformat(),
        "until": (base + timedelta(hours=2)).isoformat(),  # not world's own alert, opened now
    }
    whole = client.get("/api/v1/alerts", headers=a, params={**query, "limit": 1000})
    assert "X-Next-Cursor" not in whole.headers
    expected = [row["id"] for row in whole.json()]
    assert sorted(expected) == sorted(many_alerts["ids"])
    ranks = {"critical": 0, "warning": 1, "info": 2}
    rows = whole.json()
    opened = {r["id"]: datetime.fromisoformat(r["opened_at"]).timestamp() for r in rows}
    assert expected == sorted(
        expected,
        key=lambda i: (ranks[next(r["severity"] for r in rows if r["id"] == i)], -opened[i], -i),
    )
    paged, token = [], None
    for _ in range(20):
        response = client.get(
            "/api/v1/alerts",
            headers=a,
            params={**query, "limit": 2, **({"cursor": token} if token else {})},
        )
        assert response.status_code == 200
        paged += [row["id"] for row in response.json()]
        token = response.headers.get("X-Next-Cursor")
        if token is None:
            break
    assert paged == expected
    bad = client.get("/api/v1/alerts", headers=a, params={"cursor": "garbage"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "cursor"]


def test_alerts_until_filter(client, world, many_alerts):  # noqa: F811
    a = _token(client, world, "a")
    base = many_alerts["base"]
    rows = client.get(
        "/api/v1/alerts",
        headers=a,
        params={
            "resident_id": world["resident"],
            "since": (base + timedelta(minutes=20)).isoformat(),
            "until": (base + timedelta(minutes=50)).isoformat(),
        },
    ).json()
    # since is inclusive, until exclusive: the alerts opened at +20, +30 and +40 minutes.
    assert sorted(r["id"] for r in rows) == sorted(many_alerts["ids"][1:6])
    assert client.get("/api/v1/alerts", headers=a, params={"until": "soon"}).status_code == 422


def test_snooze_is_for_doctors_only(client, world, conn):  # noqa: F811
    url = f"/api/v1/alerts/{world['alert']}/snooze"
    admin = _token(client, world, "admin")
    refused = client.post(url, json={"minutes": 5}, headers=admin)
    assert refused.status_code == 403 and "only a doctor" in refused.json()["detail"]
    platform = {"Authorization": f"Bearer {world['own_key']}"}
    assert client.post(url, json={"minutes": 5}, headers=platform).status_code == 403
    b = _token(client, world, "b")
    assert client.post(url, json={"minutes": 5}, headers=b).status_code == 404
    a = _token(client, world, "a")
    snoozed = client.post(url, json={"minutes": 5}, headers=a)
    assert snoozed.status_code == 200 and snoozed.json()["state"] == "open"
    assert conn.execute(
        "SELECT outcome FROM audit_log WHERE action = 'alert.snooze' AND resident_id = %s "
        "ORDER BY id",
        (world["resident"],),
    ).fetchall() == [("refused",), ("ok",)]  # the admin's refusal, then the doctor's snooze
    # The platform key is refused by the central check, which audits it as access.refused.
    assert conn.execute(
        "SELECT outcome, detail->>'operation' FROM audit_log WHERE action = 'access.refused' "
        "AND actor LIKE 'platform:%%' ORDER BY id DESC LIMIT 1"
    ).fetchone() == ("refused", "snooze")
    critical = lifecycle.raise_finding(
        conn,
        resident_id=world["resident"],
        now=datetime.now(UTC),
        finding=Finding(rule="sos", severity="critical", title="SOS"),
    )
    again = client.post(f"/api/v1/alerts/{critical.id}/snooze", json={"minutes": 5}, headers=a)
    assert again.status_code == 409 and "cannot be snoozed" in again.json()["detail"]


def test_handlers_are_shown_by_name(client, world, conn):  # noqa: F811
    a = _token(client, world, "a")
    acked = client.post(f"/api/v1/alerts/{world['alert']}/ack", json={}, headers=a).json()
    assert acked["acknowledged_by"].startswith("user:")
    assert acked["acknowledged_by_name"] == "张医生"
    row = next(
        r for r in client.get("/api/v1/alerts", headers=a).json() if r["id"] == world["alert"]
    )
    assert row["acknowledged_by_name"] == "张医生"
    # A login that is not a doctor's is shown by its display name (never by its username).
    username = f"desk-{uuid.uuid4().hex[:6]}"
    access.add_user(
        conn,
        username=username,
        password="desk-password-1",
        role="duty_desk",
        institution_id=world["centre"],
        display_name="值班台 王护士",
    )
    desk = {
        "Authorization": "Bearer "
        + client.post(
            "/api/v1/auth/login", json={"username": username, "password": "desk-password-1"}
        ).json()["token"]
    }
    resolved = client.post(
        f"/api/v1/alerts/{world['alert']}/resolve", json={"note": "fever down"}, headers=desk
    )
    assert resolved.status_code == 200, resolved.text
    detail = client.get(f"/api/v1/alerts/{world['alert']}", headers=a).json()
    assert detail["acknowledged_by_name"] == "张医生"
    assert detail["resolved_by_name"] == "值班台 王护士"
    assert [t["actor_name"] for t in detail["timeline"]][-2:] == ["张医生", "值班台 王护士"]
    assert username not in str(detail)
    assert detail["timeline"][0]["actor_name"] == "system"
    blank = client.post(f"/api/v1/alerts/{world['alert']}/resolve", json={"note": "  "}, headers=a)
    assert blank.status_code == 422
