"""Who may see and do what, route by route: doctor B on doctor A's resident (404 everywhere, and
audited), platform keys on every write (403) and their scopes, expired and revoked credentials (401),
the duty desk and the institution admin within their institution, and every write about a resident,
a device or an alert refused to an institution admin who sees the resident but does not own it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from alerts import lifecycle
from alerts.models import Finding
from api import access, platforms
from care import service as care
from devices import service as devices
from devices.service import EmergencyContact
from tests.test_api import _token, client, world  # noqa: F401 - fixtures

API = "/api/v1"
# Reached without a token (they hand one out).
UNAUTHENTICATED = {("POST", f"{API}/auth/login"), ("POST", f"{API}/auth/token")}


@pytest.fixture()
def scene(world, conn):  # noqa: F811
    """The world of tests/test_api.py, plus a second institution with its own resident, doctor and
    alert, a duty desk and an institution admin for each, devices owned by each and one of nobody's,
    a narrow platform key, a contract and a platform to name in paths."""
    tag = uuid.uuid4().hex[:6]
    other = care.add_institution(conn, name=f"养老院 {tag}", kind="care_home")
    doctor_c = care.add_doctor(conn, name="陈医生", institution_id=other["id"])
    theirs = devices.add_resident(conn, name="赵桂兰")
    care.set_resident_institution(conn, resident_id=theirs.id, institution_id=other["id"])
    care.add_contract(conn, resident_id=theirs.id, doctor_id=doctor_c["id"])
    their_alert = lifecycle.raise_finding(
        conn,
        resident_id=theirs.id,
        now=datetime.now(UTC),
        finding=Finding(rule="fever", severity="warning", title="发热 / Fever"),
    )
    users = dict(world["users"])
    for name, role, institution in (
        ("desk", "duty_desk", world["centre"]),
        ("ia", "institution_admin", world["centre"]),
        ("ia_other", "institution_admin", other["id"]),
    ):
        username = f"{name}-{tag}"
        access.add_user(
            conn,
            username=username,
            password=f"pw-{tag}-{name}",
            role=role,
            institution_id=institution,
        )
        users[name] = (username, f"pw-{tag}-{name}")
    owned = {}
    for key, resident, institution in (
        ("own", world["resident"], world["centre"]),
        ("theirs", theirs.id, other["id"]),
        ("stock", None, None),
    ):
        device_id = f"wb-{key}-{tag}"
        devices.add_device(conn, device_id=device_id, kind="wristband", resident_id=resident)
        devices.set_owner(conn, device_id=device_id, institution_id=institution)
        owned[key] = device_id
    platform_id, narrow_key = platforms.add(
        conn,
        name=f"narrow-{tag}",
        institution_ids=[world["centre"]],
        scopes=("read:residents",),
    )
    contract = conn.execute(
        "SELECT id FROM contract WHERE resident_id = %s", (world["resident"],)
    ).fetchone()
    return {
        **world,
        "tag": tag,
        "users": users,
        "other": other["id"],
        "doctor_c": doctor_c["id"],
        "theirs": theirs.id,
        "their_alert": their_alert.id,
        "devices": owned,
        "narrow_key": narrow_key,
        "platform_id": platform_id,
        "contract": contract[0],
    }


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _routes(client):  # noqa: F811
    """(method, path template) of every documented operation of the API."""
    return [
        (method.upper(), path)
        for path, operations in client.app.openapi()["paths"].items()
        if path.startswith(API)
        for method in operations
    ]


def _path(template: str, scene: dict, *, resident: int | None = None, **named: object) -> str:
    values = {
        "resident_id": resident or scene["resident"],
        "alert_id": scene["alert"],
        "device_id": scene["devices"]["own"],
        "metric": "heart_rate",
        "severity": "warning",
        "doctor_id": scene["a"],
        "contract_id": scene["contract"],
        "platform_id": scene["platform_id"],
        **named,
    }
    return template.format(**values)


def _bodies(scene: dict, *, resident: int | None = None) -> dict[tuple[str, str], dict | None]:
    """A valid body for every write, so that what answers is the authorisation, not validation
    (`resident`: the resident the bodies name, default the scene's)."""
    tag = uuid.uuid4().hex[:6]
    rid = resident or scene["resident"]
    tiers = [{"after_s": 0, "notify": ["duty_desk"]}]
    return {
        ("POST", f"{API}/auth/logout"): None,
        ("POST", f"{API}/institutions"): {"name": f"x {tag}", "kind": "care_home"},
        ("POST", f"{API}/doctors"): {"name": "x", "institution_id": scene["centre"]},
        ("POST", f"{API}/contracts"): {"resident_id": rid, "doctor_id": scene["b"]},
        ("POST", f"{API}/contracts/{{contract_id}}/end"): {},
        ("POST", f"{API}/residents"): {"name": "x"},
        ("PATCH", f"{API}/residents/{{resident_id}}"): {"address": "x"},
        ("PUT", f"{API}/residents/{{resident_id}}/thresholds/{{metric}}"): {"high": 120},
        ("PUT", f"{API}/policies/{{severity}}"): {
            "institution_id": scene["centre"],
            "tiers": tiers,
        },
        ("POST", f"{API}/devices"): {
            "device_id": f"x-{tag}",
            "kind": "wristband",
            "resident_id": rid,
        },
        ("POST", f"{API}/devices/{{device_id}}/bind"): {"resident_id": rid},
        ("POST", f"{API}/devices/{{device_id}}/unbind"): None,
        ("POST", f"{API}/devices/{{device_id}}/retire"): None,
        ("POST", f"{API}/devices/{{device_id}}/rotate"): None,
        ("POST", f"{API}/platforms"): {"name": f"x-{tag}", "institution_ids": [scene["centre"]]},
        ("POST", f"{API}/platforms/{{platform_id}}/rotate"): {},
        ("POST", f"{API}/platforms/{{platform_id}}/disable"): None,
        ("POST", f"{API}/alerts/{{alert_id}}/ack"): {},
        ("POST", f"{API}/alerts/{{alert_id}}/snooze"): {"minutes": 5},
        ("POST", f"{API}/alerts/{{alert_id}}/resolve"): {"note": "x"},
        ("POST", f"{API}/alerts/{{alert_id}}/comment"): {"note": "x"},
        ("POST", f"{API}/stream/ticket"): None,
    }


def _writes(client, scene, *, resident: int | None = None):  # noqa: F811
    bodies = _bodies(scene, resident=resident)
    writes = [r for r in _routes(client) if r[0] in ("POST", "PUT", "PATCH", "DELETE")]
    missing = [r for r in writes if r not in bodies and r not in UNAUTHENTICATED]
    assert not missing, f"give these new write routes a valid body in _bodies(): {missing}"
    return [(r, bodies[r]) for r in writes if r not in UNAUTHENTICATED]


def _call(client, method, path, headers, body=None):  # noqa: F811
    return client.request(method, path, headers=headers, json=body)


def test_doctor_b_gets_404_for_everything_about_doctor_a_resident(client, scene, conn):  # noqa: F811
    b = _token(client, scene, "b")
    rid, alert = scene["resident"], scene["alert"]
    reads = [
        (f"{API}/residents/{{resident_id}}", ""),
        (f"{API}/residents/{{resident_id}}/readings", ""),
        (f"{API}/residents/{{resident_id}}/readings", "?bucket=hour"),
        (f"{API}/residents/{{resident_id}}/latest", ""),
        (f"{API}/residents/{{resident_id}}/news2", ""),
        (f"{API}/residents/{{resident_id}}/thresholds", ""),
        (f"{API}/residents/{{resident_id}}/contacts", ""),
        (f"{API}/alerts/{{alert_id}}", ""),
    ]
    for template, query in reads:
        response = client.get(_path(template, scene) + query, headers=b)
        assert response.status_code == 404, template
        assert "not one of" in response.json()["detail"], template
    bodies = _bodies(scene)
    acts = [
        ("POST", f"{API}/alerts/{{alert_id}}/ack"),
        ("POST", f"{API}/alerts/{{alert_id}}/snooze"),
        ("POST", f"{API}/alerts/{{alert_id}}/resolve"),
        ("POST", f"{API}/alerts/{{alert_id}}/comment"),
        ("PUT", f"{API}/residents/{{resident_id}}/thresholds/{{metric}}"),
        ("PATCH", f"{API}/residents/{{resident_id}}"),
    ]
    # Every route about one resident or alert is tried here.
    about_one = {r for r in _routes(client) if "{resident_id}" in r[1] or "{alert_id}" in r[1]}
    covered = {("GET", template) for template, _ in reads} | set(acts)
    assert about_one <= covered, f"test doctor B on these too: {about_one - covered}"
    for method, template in acts:
        response = _call(client, method, _path(template, scene), b, bodies[(method, template)])
        assert response.status_code == 404, template
    # The lists simply leave the resident out.
    assert rid not in {r["id"] for r in client.get(f"{API}/residents", headers=b).json()}
    queue = client.get(f"{API}/alerts", params={"resident_id": rid}, headers=b)
    assert queue.status_code == 200 and queue.json() == []
    # Nothing changed, and every refusal is on the resident's trail, attributed to doctor B.
    state = conn.execute("SELECT state FROM alert WHERE id = %s", (alert,)).fetchone()
    assert state == ("open",)
    assert conn.execute(
        "SELECT count(*) FROM resident_threshold WHERE resident_id = %s", (rid,)
    ).fetchone() == (0,)
    # A refusal records what was asked for: the resident's id, or the alert's id (never the
    # resident behind the alert, which the audit log's readers would learn from it).
    by_resident = conn.execute(
        "SELECT count(*) FROM audit_log WHERE actor LIKE %s AND resident_id = %s "
        "AND action = 'access.refused' AND outcome = 'refused'",
        (f"user:%:{scene['users']['b'][0]}", rid),
    ).fetchone()
    by_alert = conn.execute(
        "SELECT count(*) FROM audit_log WHERE actor LIKE %s AND detail->>'alert_id' = %s "
        "AND resident_id IS NULL AND action = 'access.refused' AND outcome = 'refused'",
        (f"user:%:{scene['users']['b'][0]}", str(alert)),
    ).fetchone()
    about_alert = sum("{alert_id}" in t for t, _ in reads) + sum("{alert_id}" in t for _, t in acts)
    assert by_alert == (about_alert,)
    assert by_resident == (len(reads) + len(acts) - about_alert,)


def test_platform_keys_cannot_write_anywhere(client, scene, conn):  # noqa: F811
    own = _bearer(scene["own_key"])
    before = conn.execute("SELECT count(*) FROM institution").fetchone()
    for (method, template), body in _writes(client, scene):
        response = _call(client, method, _path(template, scene), own, body)
        assert response.status_code == 403, (method, template, response.text)
    assert conn.execute("SELECT count(*) FROM institution").fetchone() == before
    assert conn.execute("SELECT state FROM alert WHERE id = %s", (scene["alert"],)).fetchone() == (
        "open",
    )
    assert client.get(f"{API}/auth/me", headers=own).status_code == 200, "the key still works"


def test_expired_and_revoked_tokens_are_refused_everywhere(client, scene, conn):  # noqa: F811
    a = _token(client, scene, "a")
    conn.execute(
        "UPDATE api_token SET expires_at = now() - INTERVAL '1 second' WHERE kind = 'session' "
        "AND user_id = (SELECT id FROM app_user WHERE username = %s)",
        (scene["users"]["a"][0],),
    )
    routes = [r for r in _routes(client) if r not in UNAUTHENTICATED]
    assert len(routes) >= 30
    for method, template in routes:
        response = _call(client, method, _path(template, scene), a)
        assert response.status_code == 401, (method, template)
        assert "expired" in response.json()["detail"], (method, template)
    # A disabled account's session stops at once.
    desk = _token(client, scene, "desk")
    conn.execute(
        "UPDATE app_user SET active = false WHERE username = %s", (scene["users"]["desk"][0],)
    )
    assert client.get(f"{API}/residents", headers=desk).status_code == 401


def test_the_duty_desk_sees_its_institutions_residents_and_does_not_administer(
    client,  # noqa: F811
    scene,
):
    desk = _token(client, scene, "desk")
    ids = {r["id"] for r in client.get(f"{API}/residents", headers=desk).json()}
    assert scene["resident"] in ids and scene["theirs"] not in ids
    assert client.get(f"{API}/residents/{scene['resident']}", headers=desk).status_code == 200
    assert client.get(f"{API}/residents/{scene['theirs']}", headers=desk).status_code == 404
    queue = {a["id"] for a in client.get(f"{API}/alerts", headers=desk).json()}
    assert scene["alert"] in queue and scene["their_alert"] not in queue
    assert client.get(f"{API}/alerts/{scene['their_alert']}", headers=desk).status_code == 404
    acked = client.post(f"{API}/alerts/{scene['alert']}/ack", json={}, headers=desk)
    assert acked.status_code == 200 and acked.json()["state"] == "acknowledged"
    assert (
        client.post(f"{API}/alerts/{scene['their_alert']}/ack", json={}, headers=desk).status_code
        == 404
    )
    for method, path, body in (
        ("GET", f"{API}/doctors", None),
        ("GET", f"{API}/devices", None),
        ("GET", f"{API}/contracts", None),
        ("GET", f"{API}/policies", None),
        ("GET", f"{API}/audit", None),
        ("POST", f"{API}/doctors", {"name": "x", "institution_id": scene["centre"]}),
        ("POST", f"{API}/residents", {"name": "x"}),
        ("POST", f"{API}/devices/{scene['devices']['own']}/rotate", None),
        ("PATCH", f"{API}/residents/{scene['resident']}", {"address": "x"}),
    ):
        assert _call(client, method, path, desk, body).status_code == 403, (method, path)


def test_the_institution_admin_stays_within_its_institution(client, scene, conn):  # noqa: F811
    ia = _token(client, scene, "ia")
    theirs, their_device = scene["theirs"], scene["devices"]["theirs"]
    assert scene["theirs"] not in {
        r["id"] for r in client.get(f"{API}/residents", headers=ia).json()
    }
    assert client.get(f"{API}/residents/{theirs}", headers=ia).status_code == 404
    assert (
        client.patch(f"{API}/residents/{theirs}", json={"address": "x"}, headers=ia).status_code
        == 404
    )
    # No new institutions: that is for system admins.
    created = client.post(
        f"{API}/institutions", json={"name": "rogue", "kind": "care_home"}, headers=ia
    )
    assert created.status_code == 403
    # Another institution's devices and nobody's stock do not exist for it.
    for device_id in (their_device, scene["devices"]["stock"]):
        assert client.get(f"{API}/devices/{device_id}", headers=ia).status_code == 404
        for action in ("rotate", "retire", "unbind"):
            assert (
                client.post(f"{API}/devices/{device_id}/{action}", headers=ia).status_code == 404
            ), (device_id, action)
        bind = client.post(
            f"{API}/devices/{device_id}/bind", json={"resident_id": scene["resident"]}, headers=ia
        )
        assert bind.status_code == 404, device_id
    listed = {d["device_id"] for d in client.get(f"{API}/devices", headers=ia).json()}
    assert listed == {scene["devices"]["own"]}
    # Its own device cannot go to a resident it does not look after.
    assert (
        client.post(
            f"{API}/devices/{scene['devices']['own']}/bind",
            json={"resident_id": theirs},
            headers=ia,
        ).status_code
        == 404
    )
    # Nor can it put things into another institution.
    for method, path, body in (
        ("POST", f"{API}/doctors", {"name": "x", "institution_id": scene["other"]}),
        ("POST", f"{API}/residents", {"name": "x", "institution_id": scene["other"]}),
        (
            "POST",
            f"{API}/devices",
            {"device_id": f"x-{scene['tag']}", "kind": "scale", "institution_id": scene["other"]},
        ),
        (
            "PUT",
            f"{API}/policies/critical",
            {"institution_id": scene["other"], "tiers": [{"after_s": 0, "notify": ["duty_desk"]}]},
        ),
        ("PUT", f"{API}/policies/critical", {"tiers": [{"after_s": 0, "notify": ["duty_desk"]}]}),
        ("PATCH", f"{API}/residents/{scene['resident']}", {"institution_id": scene["other"]}),
        (
            "POST",
            f"{API}/contracts",
            {"resident_id": scene["resident"], "doctor_id": scene["doctor_c"]},
        ),
        ("GET", f"{API}/platforms", None),
    ):
        assert _call(client, method, path, ia, body).status_code == 403, (method, path)
    assert client.get(f"{API}/doctors/{scene['doctor_c']}", headers=ia).status_code == 404
    assert scene["doctor_c"] not in {
        d["id"] for d in client.get(f"{API}/doctors", headers=ia).json()
    }
    their_contract = conn.execute(
        "SELECT id FROM contract WHERE resident_id = %s", (theirs,)
    ).fetchone()[0]
    assert client.get(f"{API}/contracts/{their_contract}", headers=ia).status_code == 404
    assert (
        client.post(f"{API}/contracts/{their_contract}/end", json={}, headers=ia).status_code == 404
    )
    # Nothing of the other institution's changed.
    device = devices.get_device(conn, their_device)
    assert device.status == "active" and device.resident_id == theirs
    assert devices.owner(conn, scene["devices"]["stock"]) is None


# What names a resident, a device or an alert in a write: a path parameter or a body field.
OWNED_NAMES = {"resident_id", "device_id", "alert_id", "contract_id"}


def _names(schema: dict, method: str, template: str) -> set[str]:
    """The path, query and body field names of an operation of the OpenAPI schema."""
    operation = schema["paths"][template][method.lower()]
    names = {p["name"] for p in operation.get("parameters", [])}
    for content in operation.get("requestBody", {}).get("content", {}).values():
        body = content.get("schema", {})
        if "$ref" in body:
            body = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]
        names |= set(body.get("properties", {}))
    return names


@pytest.fixture()
def shared(scene, conn):
    """A resident of the other institution signed with doctor A of the centre, so that the centre's
    admin sees it (may_see_resident) without owning it; with an alert, and a device of the centre's
    bound to it (as a system admin may do)."""
    tag = uuid.uuid4().hex[:6]
    resident = devices.add_resident(
        conn, name="钱淑珍", contacts=[EmergencyContact("钱小红", "13700000000", "daughter")]
    )
    care.set_resident_institution(conn, resident_id=resident.id, institution_id=scene["other"])
    contract = care.add_contract(conn, resident_id=resident.id, doctor_id=scene["a"])
    alert = lifecycle.raise_finding(
        conn,
        resident_id=resident.id,
        now=datetime.now(UTC),
        finding=Finding(rule="fever", severity="warning", title="发热 / Fever"),
    )
    device_id = f"wb-shared-{tag}"
    devices.add_device(conn, device_id=device_id, kind="wristband", resident_id=resident.id)
    devices.set_owner(conn, device_id=device_id, institution_id=scene["centre"])
    return {
        "resident_id": resident.id,
        "alert_id": alert.id,
        "device_id": device_id,
        "contract_id": contract["id"],
    }


def _state_of(conn, shared: dict) -> list:
    """Everything a write about the shared resident, its alert or its device could change."""
    rid, device_id = shared["resident_id"], shared["device_id"]
    return [
        conn.execute(
            "SELECT name, address, gender, archive_id, spo2_scale, institution_id "
            "FROM resident WHERE id = %s",
            (rid,),
        ).fetchall(),
        conn.execute(
            "SELECT id, name, phone, priority FROM emergency_contact WHERE resident_id = %s "
            "ORDER BY id",
            (rid,),
        ).fetchall(),
        conn.execute(
            "SELECT id, doctor_id, valid_to FROM contract WHERE resident_id = %s ORDER BY id",
            (rid,),
        ).fetchall(),
        conn.execute(
            "SELECT metric, low, high FROM resident_threshold WHERE resident_id = %s", (rid,)
        ).fetchall(),
        conn.execute(
            "SELECT device_id, unbound_at FROM device_binding WHERE resident_id = %s ORDER BY id",
            (rid,),
        ).fetchall(),
        conn.execute(
            "SELECT d.status, b.resident_id, a.password_hash, a.revoked_at FROM device d "
            "LEFT JOIN device_binding b ON b.device_id = d.device_id AND b.unbound_at IS NULL "
            "LEFT JOIN broker_account a ON a.device_id = d.device_id WHERE d.device_id = %s",
            (device_id,),
        ).fetchall(),
        conn.execute(
            "SELECT a.state, a.acknowledged_by, count(t.id) FROM alert a "
            "JOIN alert_transition t ON t.alert_id = a.id WHERE a.id = %s "
            "GROUP BY a.state, a.acknowledged_by",
            (shared["alert_id"],),
        ).fetchall(),
    ]


def test_seeing_a_resident_is_not_owning_it_every_write_needs_ownership(
    client,  # noqa: F811
    scene,
    shared,
    conn,
):
    """The centre's admin sees the other institution's resident (signed with the centre's doctor A)
    and may not change anything about it, its alerts or the device it wears: walked over every
    write of the schema that names a resident, a device, an alert or a contract, so that a route
    added later is tried too."""
    ia = _token(client, scene, "ia")
    rid = shared["resident_id"]
    assert client.get(f"{API}/residents/{rid}", headers=ia).status_code == 200, "it sees it"
    assert client.get(f"{API}/alerts/{shared['alert_id']}", headers=ia).status_code == 200
    before = _state_of(conn, shared)
    start = conn.execute("SELECT coalesce(max(id), 0) FROM audit_log").fetchone()[0]
    schema = client.app.openapi()
    writes = [
        (route, body)
        for route, body in _writes(client, scene, resident=rid)
        if _names(schema, *route) & OWNED_NAMES
    ]
    tried = {route for route, _ in writes}
    assert {
        ("PATCH", f"{API}/residents/{{resident_id}}"),
        ("PUT", f"{API}/residents/{{resident_id}}/thresholds/{{metric}}"),
        ("POST", f"{API}/contracts"),
        ("POST", f"{API}/contracts/{{contract_id}}/end"),
        ("POST", f"{API}/devices"),
        ("POST", f"{API}/devices/{{device_id}}/bind"),
        ("POST", f"{API}/alerts/{{alert_id}}/ack"),
    } <= tried, tried
    for (method, template), body in writes:
        path = _path(template, scene, **shared)
        response = _call(client, method, path, ia, body)
        assert response.status_code in (403, 404), (method, template, response.text)
    assert _state_of(conn, shared) == before, "nothing changed"
    # The owner may: the other institution's own admin changes the record, the contracted doctor
    # acknowledges the alert.
    ia_other = _token(client, scene, "ia_other")
    moved = client.patch(f"{API}/residents/{rid}", json={"address": "x"}, headers=ia_other)
    assert moved.status_code == 200, moved.text
    a = _token(client, scene, "a")
    acked = client.post(f"{API}/alerts/{shared['alert_id']}/ack", json={}, headers=a)
    assert acked.status_code == 200
    refused = conn.execute(
        "SELECT count(*) FROM audit_log WHERE actor LIKE %s AND outcome = 'refused' AND id > %s",
        (f"user:%:{scene['users']['ia'][0]}", start),
    ).fetchone()[0]
    assert refused == len(writes), "every refusal is on the trail, once"


def test_doctor_a_snoozes_and_resolves(client, scene, conn):  # noqa: F811
    a = _token(client, scene, "a")
    alert = scene["alert"]
    snoozed = client.post(f"{API}/alerts/{alert}/snooze", json={"minutes": 30}, headers=a)
    assert snoozed.status_code == 200 and snoozed.json()["state"] == "open"
    until = conn.execute(
        "SELECT until FROM alert_snooze WHERE alert_id = %s AND doctor_id = %s", (alert, scene["a"])
    ).fetchone()[0]
    assert timedelta(minutes=29) < until - datetime.now(UTC) <= timedelta(minutes=30)
    resolved = client.post(f"{API}/alerts/{alert}/resolve", json={"note": "已电话随访"}, headers=a)
    assert resolved.status_code == 200 and resolved.json()["state"] == "resolved"
    detail = client.get(f"{API}/alerts/{alert}", headers=a).json()
    assert detail["resolution_note"] == "已电话随访"
    assert [t["action"] for t in detail["timeline"]][-2:] == ["snoozed", "resolved"]
    again = client.post(f"{API}/alerts/{alert}/resolve", json={"note": "x"}, headers=a)
    assert again.status_code == 409
    actions = {
        r[0]
        for r in conn.execute(
            "SELECT action FROM audit_log WHERE actor LIKE %s AND resident_id = %s AND outcome = 'ok'",
            (f"user:%:{scene['users']['a'][0]}", scene["resident"]),
        )
    }
    assert {"alert.snooze", "alert.resolve"} <= actions


def test_platform_key_scopes_are_enforced(client, scene, conn):  # noqa: F811
    narrow = _bearer(scene["narrow_key"])
    rid = scene["resident"]
    assert client.get(f"{API}/residents/{rid}", headers=narrow).status_code == 200
    for path, scope in (
        (f"{API}/residents/{rid}/readings", "read:readings"),
        (f"{API}/residents/{rid}/latest", "read:readings"),
        (f"{API}/residents/{rid}/news2", "read:readings"),
        (f"{API}/alerts", "read:alerts"),
        (f"{API}/alerts/{scene['alert']}", "read:alerts"),
        (f"{API}/overview", "read:alerts"),
    ):
        response = client.get(path, headers=narrow)
        assert response.status_code == 403 and scope in response.json()["detail"], path
    # Administration and the audit trail are for people, whatever the scopes.
    full = _bearer(scene["own_key"])
    for path in ("/doctors", "/devices", "/contracts", "/policies", "/audit", "/platforms"):
        response = client.get(f"{API}{path}", headers=full)
        assert response.status_code == 403, path
    assert client.get(f"{API}/residents/{rid}/readings", headers=full).status_code == 200
    reasons = [
        r[0]
        for r in conn.execute(
            "SELECT detail->>'reason' FROM audit_log WHERE actor LIKE %s "
            "AND action = 'access.refused' AND resident_id = %s ORDER BY id",
            (f"platform:{scene['platform_id']}:%", rid),
        )
    ]
    assert reasons == ["this key lacks the scope read:readings"] * 3
    refused_alert = conn.execute(
        "SELECT resident_id, detail->>'reason' FROM audit_log WHERE actor LIKE %s "
        "AND action = 'access.refused' AND detail->>'alert_id' = %s",
        (f"platform:{scene['platform_id']}:%", str(scene["alert"])),
    ).fetchall()
    assert len(refused_alert) == 1 and refused_alert[0][0] is None, "what was asked, no resident"
    assert "read:alerts" in refused_alert[0][1]


def test_platform_keys_rotate_expire_and_revoke(client, scene, conn):  # noqa: F811
    pid, old = scene["platform_id"], scene["narrow_key"]
    rid = scene["resident"]
    new = platforms.rotate(conn, pid)
    assert client.get(f"{API}/residents/{rid}", headers=_bearer(old)).status_code == 401
    assert client.get(f"{API}/residents/{rid}", headers=_bearer(new)).status_code == 200
    assert platforms.get(conn, pid)["keys"][0]["scopes"] == ["read:residents"], "scopes kept"
    expiring = platforms.rotate(
        conn, pid, expires_at=datetime.now(UTC) + timedelta(days=1), scopes=("read:alerts",)
    )
    assert client.get(f"{API}/alerts", headers=_bearer(expiring)).status_code == 200
    conn.execute(
        "UPDATE api_token SET expires_at = now() - INTERVAL '1 second' WHERE client_id = %s", (pid,)
    )
    expired = client.get(f"{API}/alerts", headers=_bearer(expiring))
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    latest = platforms.rotate(conn, pid)
    assert client.get(f"{API}/alerts", headers=_bearer(latest)).status_code == 200
    platforms.disable(conn, pid)
    revoked = client.get(f"{API}/alerts", headers=_bearer(latest))
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    with pytest.raises(access.AccessError, match="disabled"):
        platforms.rotate(conn, pid)
    # The key is stored as a digest only.
    stored = conn.execute(
        "SELECT token_hash FROM api_token WHERE client_id = %s", (pid,)
    ).fetchall()
    assert all(latest.encode() not in bytes(row[0]) for row in stored)


def test_oauth2_client_credentials(client, scene, conn):  # noqa: F811
    pid = str(scene["platform_id"])
    form = {
        "grant_type": "client_credentials",
        "client_id": pid,
        "client_secret": scene["narrow_key"],
    }
    granted = client.post(f"{API}/auth/token", data=form)
    assert granted.status_code == 200, granted.text
    body = granted.json()
    assert body["token_type"] == "bearer" and body["scope"] == "read:residents"
    assert 3500 < body["expires_in"] <= 3600 and granted.headers["cache-control"] == "no-store"
    token = _bearer(body["access_token"])
    assert client.get(f"{API}/residents/{scene['resident']}", headers=token).status_code == 200
    assert client.get(f"{API}/alerts", headers=token).status_code == 403, "no wider than the key"
    assert (
        client.post(f"{API}/alerts/{scene['alert']}/ack", json={}, headers=token).status_code == 403
    )
    # HTTP Basic works too; a scope the key lacks is refused.
    basic = client.post(
        f"{API}/auth/token",
        data={"grant_type": "client_credentials", "scope": "read:alerts"},
        auth=(pid, scene["narrow_key"]),
    )
    assert basic.status_code == 400 and basic.json()["error"] == "invalid_scope"
    wrong = client.post(f"{API}/auth/token", data={**form, "client_secret": "guess"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    other = client.post(f"{API}/auth/token", data={**form, "grant_type": "password"})
    assert other.status_code == 400 and other.json()["error"] == "unsupported_grant_type"
    # Rotating the key ends the tokens obtained with it.
    platforms.rotate(conn, scene["platform_id"])
    assert client.get(f"{API}/residents/{scene['resident']}", headers=token).status_code == 401
    outcomes = [
        r[0]
        for r in conn.execute(
            "SELECT outcome FROM audit_log WHERE action = 'auth.token' AND actor LIKE %s ORDER BY id",
            (f"%platform:{pid}%",),
        )
    ]
    assert outcomes == ["ok", "failed", "failed"]  # granted; the wrong scope; the wrong secret
