"""The HTTP API against the real database: authentication, per-doctor scope (404, not 403),
platform keys that cannot write, expired tokens, validation errors and the audit trail."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from fastapi.testclient import TestClient

from alerts import lifecycle
from alerts.models import Finding
from api import access, platforms
from api.app import create_app
from care import service as care
from store import db, rollups


@pytest.fixture()
def client(settings):
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture()
def world(conn, circle):
    tag = uuid.uuid4().hex[:6]
    users = {}
    for name, role, doctor, institution in (
        ("a", "doctor", circle["a"], None),
        ("b", "doctor", circle["b"], None),
        ("admin", "system_admin", None, None),
    ):
        username = f"{name}-{tag}"
        access.add_user(
            conn,
            username=username,
            password=f"pw-{tag}-{name}",
            role=role,
            doctor_id=doctor,
            institution_id=institution,
        )
        users[name] = (username, f"pw-{tag}-{name}")
    other = care.add_institution(conn, name=f"其他中心 {tag}", kind="community_health_centre")
    _, own_key = platforms.add(conn, name=f"platform-{tag}", institution_ids=[circle["centre"]])
    _, other_key = platforms.add(conn, name=f"elsewhere-{tag}", institution_ids=[other["id"]])
    conn.execute(
        "INSERT INTO reading (device_id, metric, measured_at, resident_id, value, received_at, msg_id) "
        "SELECT 'api-dev', 'heart_rate', now() - n * INTERVAL '5 minutes', %s, 60 + n %% 10, now(), 'm' || n "
        "FROM generate_series(1, 100) n",
        (circle["resident"],),
    )
    alert = lifecycle.raise_finding(
        conn,
        resident_id=circle["resident"],
        now=datetime.now(UTC),
        finding=Finding(rule="fever", severity="warning", title="发热 / Fever"),
    )
    return {**circle, "users": users, "own_key": own_key, "other_key": other_key, "alert": alert.id}


def _token(client, world, who):
    username, password = world["users"][who]
    response = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def test_the_contracted_doctor_sees_and_acts(client, world, conn):
    a = _token(client, world, "a")
    rid = world["resident"]
    assert rid in [r["id"] for r in client.get("/api/v1/residents", headers=a).json()]
    detail = client.get(f"/api/v1/residents/{rid}", headers=a).json()
    assert detail["name"] == "王秀英" and detail["contracted_doctor"]["id"] == world["a"]
    raw = client.get(
        f"/api/v1/residents/{rid}/readings", params={"metric": "heart_rate"}, headers=a
    ).json()
    assert len(raw["readings"]) == 100
    page = client.get(
        f"/api/v1/residents/{rid}/readings", params={"metric": "heart_rate", "limit": 60}, headers=a
    ).json()
    rest = client.get(
        f"/api/v1/residents/{rid}/readings",
        params={"metric": "heart_rate", "limit": 60, "cursor": page["next"]},
        headers=a,
    ).json()
    assert len(page["readings"]) + len(rest["readings"]) == 100 and rest["next"] is None
    # These readings were written into the past: the rollups include them once refreshed, which a
    # running system does within minutes (TimescaleDB's policies, or the ingest maintenance thread)
    # — and which a policy run earlier in this session could otherwise have left for later.
    rollups.refresh(conn, storage=db.storage_kind(conn), now=datetime.now(UTC))
    hourly = client.get(
        f"/api/v1/residents/{rid}/readings", params={"bucket": "hour"}, headers=a
    ).json()
    assert sum(r["samples"] for r in hourly["readings"]) == 100
    assert client.get(f"/api/v1/residents/{rid}/latest", headers=a).json()[0]["unit"] == "/min"
    queue = client.get("/api/v1/alerts", headers=a).json()
    assert world["alert"] in [x["id"] for x in queue]
    acked = client.post(f"/api/v1/alerts/{world['alert']}/ack", json={"note": "在路上"}, headers=a)
    assert acked.status_code == 200 and acked.json()["state"] == "acknowledged"
    timeline = client.get(f"/api/v1/alerts/{world['alert']}", headers=a).json()["timeline"]
    assert [t["action"] for t in timeline][-1] == "acknowledged"
    actions = {
        r[0]
        for r in conn.execute(
            "SELECT action FROM audit_log WHERE actor LIKE %s AND resident_id = %s",
            (f"user:%:{world['users']['a'][0]}", rid),
        )
    }
    assert {
        "read.resident",
        "read.readings",
        "read.latest",
        "alert.acknowledge",
        "read.alert",
    } <= actions


def test_another_doctor_gets_404_for_a_resident_who_is_not_theirs(client, world):
    b = _token(client, world, "b")
    rid = world["resident"]
    assert rid not in [r["id"] for r in client.get("/api/v1/residents", headers=b).json()]
    for path in (
        f"/api/v1/residents/{rid}",
        f"/api/v1/residents/{rid}/readings",
        f"/api/v1/residents/{rid}/latest",
        f"/api/v1/alerts/{world['alert']}",
    ):
        response = client.get(path, headers=b)
        assert response.status_code == 404, path
        assert "not one of" in response.json()["detail"]
    assert world["alert"] not in [x["id"] for x in client.get("/api/v1/alerts", headers=b).json()]
    assert (
        client.post(f"/api/v1/alerts/{world['alert']}/ack", json={}, headers=b).status_code == 404
    )


def test_platform_keys_read_their_institutions_and_cannot_write(client, world, conn):
    own = {"Authorization": f"Bearer {world['own_key']}"}
    other = {"Authorization": f"Bearer {world['other_key']}"}
    assert client.get(f"/api/v1/residents/{world['resident']}", headers=own).status_code == 200
    assert client.get(f"/api/v1/residents/{world['resident']}", headers=other).status_code == 404
    refused = client.post(
        f"/api/v1/alerts/{world['alert']}/resolve", json={"note": "x"}, headers=own
    )
    assert refused.status_code == 403 and "may read but not act" in refused.json()["detail"]
    outcome = conn.execute(
        "SELECT outcome, detail->>'operation' FROM audit_log WHERE action = 'access.refused' "
        "AND actor LIKE 'platform:%%' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert outcome == ("refused", "resolve")


def test_tokens_expire_and_are_revoked(client, world, conn):
    a = _token(client, world, "a")
    assert client.get("/api/v1/auth/me", headers=a).status_code == 200
    conn.execute(
        "UPDATE api_token SET expires_at = now() - INTERVAL '1 second' WHERE kind = 'session' "
        "AND user_id = (SELECT id FROM app_user WHERE username = %s)",
        (world["users"]["a"][0],),
    )
    expired = client.get("/api/v1/auth/me", headers=a)
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    a = _token(client, world, "a")
    assert client.post("/api/v1/auth/logout", headers=a).status_code == 204
    assert client.get("/api/v1/auth/me", headers=a).status_code == 401
    assert client.get("/api/v1/residents").status_code == 401
    assert (
        client.get("/api/v1/residents", headers={"Authorization": "Bearer nonsense"}).status_code
        == 401
    )


def test_logins_are_rate_limited(client, world):
    username, password = world["users"]["b"]
    for _ in range(5):
        assert (
            client.post(
                "/api/v1/auth/login", json={"username": username, "password": "wrong"}
            ).status_code
            == 401
        )
    limited = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert limited.status_code == 429 and "wait" in limited.json()["detail"]


def test_bad_requests_get_a_4xx_with_a_message(client, world):
    a = _token(client, world, "a")
    rid = world["resident"]
    assert (
        client.get(
            f"/api/v1/residents/{rid}/readings", params={"metric": "mood"}, headers=a
        ).status_code
        == 422
    )
    assert (
        client.get(
            f"/api/v1/residents/{rid}/readings", params={"bucket": "week"}, headers=a
        ).status_code
        == 422
    )
    assert (
        client.get(
            f"/api/v1/residents/{rid}/readings", params={"since": "yesterday"}, headers=a
        ).status_code
        == 422
    )
    assert (
        client.post(f"/api/v1/alerts/{world['alert']}/resolve", json={}, headers=a).status_code
        == 422
    )
    assert client.post("/api/v1/auth/login", json={"username": ""}).status_code == 422


def test_the_audit_log_is_for_admins_and_append_only(client, world, conn):
    a = _token(client, world, "a")
    client.get(f"/api/v1/residents/{world['resident']}", headers=a)
    assert client.get("/api/v1/audit", headers=a).status_code == 403
    admin = _token(client, world, "admin")
    entries = client.get(
        "/api/v1/audit", params={"resident_id": world["resident"]}, headers=admin
    ).json()
    assert any(e["action"] == "read.resident" and e["address"] for e in entries)
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        conn.execute("UPDATE audit_log SET actor = 'someone else'")
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        conn.execute("DELETE FROM audit_log")


def _events(text):
    """(id, event, data) of an event-stream body's alert events."""
    events = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1)
            for line in block.splitlines()
            if ": " in line and not line.startswith(":")
        )
        if fields.get("event") == "alert":
            events.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return events


def test_the_live_stream_resumes_from_last_event_id_and_respects_scope(client, world, conn):
    a = _token(client, world, "a")
    first = client.get("/api/v1/stream", params={"once": True}, headers={**a, "Last-Event-ID": "0"})
    assert first.headers["content-type"].startswith("text/event-stream")
    mine = [e for e in _events(first.text) if e[2]["alert_id"] == world["alert"]]
    assert [e[2]["action"] for e in mine] == ["raised"]
    client.post(f"/api/v1/alerts/{world['alert']}/ack", json={}, headers=a)
    resumed = client.get(
        "/api/v1/stream",
        params={"once": True},
        headers={**a, "Last-Event-ID": str(mine[-1][0])},
    )
    assert [(e[2]["alert_id"], e[2]["action"]) for e in _events(resumed.text)] == [
        (world["alert"], "acknowledged")
    ]
    b = _token(client, world, "b")
    theirs = client.get(
        "/api/v1/stream", params={"once": True}, headers={**b, "Last-Event-ID": "0"}
    )
    assert world["alert"] not in {e[2]["alert_id"] for e in _events(theirs.text)}
    assert client.get("/api/v1/stream", params={"once": True}).status_code == 401


def test_resident_page_data_news2_thresholds_and_overview(client, world, conn):
    a = _token(client, world, "a")
    rid = world["resident"]
    news2 = client.get(f"/api/v1/residents/{rid}/news2", headers=a).json()
    assert (
        news2["complete"] is False
        and "heart_rate" in news2["parameters"]
        and "resp_rate" in news2["missing"]
    )
    conn.execute(
        "INSERT INTO resident_threshold (resident_id, metric, low, high, set_by) "
        "VALUES (%s, 'systolic_bp', 90, 200, 'doctor')",
        (rid,),
    )
    limits = client.get(f"/api/v1/residents/{rid}/thresholds", headers=a).json()
    assert limits["systolic_bp"] == {"low": 90, "high": 200} and limits["spo2"]["low"] == 94
    # What the rules apply: a one-sided override keeps the other side's default, and a resident on
    # SpO2 scale 2 (hypercapnic) has that scale's target, not the textbook's 94 %.
    conn.execute(
        "INSERT INTO resident_threshold (resident_id, metric, low, high, set_by) "
        "VALUES (%s, 'heart_rate', NULL, 130, 'doctor')",
        (rid,),
    )
    conn.execute("UPDATE resident SET spo2_scale = 2 WHERE id = %s", (rid,))
    try:
        limits = client.get(f"/api/v1/residents/{rid}/thresholds", headers=a).json()
        assert limits["heart_rate"] == {"low": 45, "high": 130}
        assert limits["spo2"]["low"] == 87
        scored = client.get(f"/api/v1/residents/{rid}/news2", headers=a).json()
        assert scored["facts"]["air_or_oxygen"].startswith("not known")
    finally:
        conn.execute("UPDATE resident SET spo2_scale = 1 WHERE id = %s", (rid,))
        conn.execute(
            "DELETE FROM resident_threshold WHERE resident_id = %s AND metric = 'heart_rate'",
            (rid,),
        )
    overview = client.get("/api/v1/overview", headers=a).json()
    mine = next(r for r in overview["residents"] if r["id"] == rid)
    assert (
        mine["open_alerts"] >= 1
        and mine["worst_severity"] == "warning"
        and mine["risk"] == "medium"
    )
    assert set(overview["unacknowledged_by_age"]) == {"<5m", "5-30m", "30m-2h", ">2h"}
    b = _token(client, world, "b")
    assert rid not in {
        r["id"] for r in client.get("/api/v1/overview", headers=b).json()["residents"]
    }
    assert client.get(f"/api/v1/residents/{rid}/news2", headers=b).status_code == 404


def test_health_and_metrics(client, world, ready_components):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {
        "database": True,
        "broker": True,
        "components": True,
    }
    text = client.get("/metrics").text
    for name in (
        "eldercare_ingest_messages_last_minute",
        "eldercare_quarantine_messages",
        'eldercare_alerts_unresolved{severity="warning"}',
        "eldercare_notifications_failed",
    ):
        assert name in text


def test_administration_through_the_api(client, world, conn):
    tag = uuid.uuid4().hex[:6]
    access.add_user(
        conn,
        username=f"ia-{tag}",
        password="admin-password",
        role="institution_admin",
        institution_id=world["centre"],
    )
    admin = {
        "Authorization": "Bearer "
        + client.post(
            "/api/v1/auth/login", json={"username": f"ia-{tag}", "password": "admin-password"}
        ).json()["token"]
    }
    a = _token(client, world, "a")
    doctor = client.post(
        "/api/v1/doctors", json={"name": "新医生", "institution_id": world["centre"]}, headers=admin
    )
    assert doctor.status_code == 201
    other = care.add_institution(conn, name=f"别处 {tag}", kind="care_home")
    assert (
        client.post(
            "/api/v1/doctors", json={"name": "x", "institution_id": other["id"]}, headers=admin
        ).status_code
        == 403
    )
    assert (
        client.post(
            "/api/v1/doctors", json={"name": "x", "institution_id": world["centre"]}, headers=a
        ).status_code
        == 403
    )
    resident = client.post(
        "/api/v1/residents",
        json={"name": "孙秀兰", "archive_id": "31011500100100077"},
        headers=admin,
    )
    assert resident.status_code == 201 and resident.json()["institution_id"] == world["centre"]
    rid = resident.json()["id"]
    dup = client.post(
        "/api/v1/residents", json={"name": "x", "archive_id": "31011500100100077"}, headers=admin
    )
    assert dup.status_code == 409 and "already belongs" in dup.json()["detail"]
    contract = client.post(
        "/api/v1/contracts", json={"resident_id": rid, "doctor_id": world["a"]}, headers=admin
    )
    assert contract.status_code == 201
    assert client.get(f"/api/v1/residents/{rid}", headers=a).status_code == 200, (
        "now one of doctor A's"
    )
    device_id = f"wb-api-{tag}"
    device = client.post(
        "/api/v1/devices",
        json={"device_id": device_id, "kind": "wristband", "resident_id": rid},
        headers=admin,
    )
    assert device.status_code == 201 and len(device.json()["mqtt_password"]) >= 24
    assert (
        client.post(f"/api/v1/devices/{device_id}/unbind", headers=admin).json()["resident_id"]
        is None
    )
    assert (
        client.post(
            f"/api/v1/devices/{device_id}/bind", json={"resident_id": rid}, headers=admin
        ).json()["resident_id"]
        == rid
    )
    rotated = client.post(f"/api/v1/devices/{device_id}/rotate", headers=admin).json()
    assert rotated["mqtt_password"] != device.json()["mqtt_password"]
    assert (
        client.post(f"/api/v1/devices/{device_id}/retire", headers=admin).json()["status"]
        == "retired"
    )
    again = client.post(f"/api/v1/devices/{device_id}/retire", headers=admin)
    assert again.status_code == 409 and "already retired" in again.json()["detail"]
    assert client.post("/api/v1/devices/nope-1/retire", headers=admin).status_code == 404
    threshold = client.put(
        f"/api/v1/residents/{rid}/thresholds/systolic_bp", json={"low": 95, "high": 195}, headers=a
    )
    assert threshold.status_code == 200 and threshold.json()["high"] == 195
    b = _token(client, world, "b")
    assert (
        client.put(
            f"/api/v1/residents/{rid}/thresholds/systolic_bp", json={"high": 300}, headers=b
        ).status_code
        == 404
    )
    own = {"Authorization": f"Bearer {world['own_key']}"}
    assert (
        client.put(
            f"/api/v1/residents/{rid}/thresholds/systolic_bp", json={"high": 300}, headers=own
        ).status_code
        == 403
    )
    tiers = [
        {"after_s": 0, "notify": ["contracted_doctor"]},
        {"after_s": 600, "notify": ["duty_desk"]},
    ]
    policy = client.put(
        "/api/v1/policies/warning",
        json={"institution_id": world["centre"], "tiers": tiers, "reminder_every_s": 600},
        headers=admin,
    )
    assert policy.status_code == 200 and policy.json()["reminder_every_s"] == 600
    assert (
        client.put("/api/v1/policies/warning", json={"tiers": tiers}, headers=admin).status_code
        == 403
    )
    bad = client.put(
        "/api/v1/policies/warning",
        json={
            "institution_id": world["centre"],
            "tiers": [{"after_s": 60, "notify": ["duty_desk"]}],
        },
        headers=admin,
    )
    assert bad.status_code == 409 and "first tier" in bad.json()["detail"]
    actions = {
        r[0]
        for r in conn.execute(
            "SELECT action FROM audit_log WHERE actor LIKE %s", (f"user:%:ia-{tag}",)
        )
    }
    assert {"resident.add", "contract.add", "device.add", "device.bind", "device.retire"} <= actions
