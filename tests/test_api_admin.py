"""Administration through the API (institutions, doctors, contracts, residents, devices, policies,
platforms and their CLI), the audit trail (logins, refusals, lists, time range and paging, an
institution's own trail), the application's database role, trusted proxies, old login failures."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
import uvicorn
from fastapi.testclient import TestClient
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from alerts.engine import AlertEngine
from alerts.settings import AlertSettings
from api import access
from api.app import create_app
from api.cli import uvicorn_options
from devices import service as devices
from tests.support import cli, cli_json, new_msg_id, now_ms, wait_for
from tests.test_api import _token, client, world  # noqa: F401 - fixtures
from tests.test_api_access import API, _bearer, scene  # noqa: F401 - fixture

TIERS = [{"after_s": 0, "notify": ["contracted_doctor"]}, {"after_s": 900, "notify": ["team"]}]


def _audit_rows(conn, actor_like, action):
    return conn.execute(
        "SELECT resident_id, resident_ids, outcome, detail, address FROM audit_log "
        "WHERE actor LIKE %s AND action = %s ORDER BY id",
        (actor_like, action),
    ).fetchall()


def test_institutions_are_created_by_system_admins_only(client, scene, conn):  # noqa: F811
    admin, ia = _token(client, scene, "admin"), _token(client, scene, "ia")
    name = f"新区卫生院 {scene['tag']}"
    created = client.post(
        f"{API}/institutions",
        json={"name": name, "kind": "township_hospital", "phone": "021-1234"},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["kind"] == "township_hospital" and body["duty_desk_id"]
    desk = conn.execute(
        "SELECT role, institution_id FROM doctor WHERE id = %s", (body["duty_desk_id"],)
    ).fetchone()
    assert desk == ("duty_desk", body["id"]), "every institution has its duty desk"
    listed = client.get(f"{API}/institutions", headers=ia).json()
    assert {
        "id": body["id"],
        "name": name,
        "kind": "township_hospital",
        "phone": "021-1234",
    } in listed
    for who in ("ia", "a", "desk"):
        refused = client.post(
            f"{API}/institutions",
            json={"name": "x", "kind": "care_home"},
            headers=_token(client, scene, who),
        )
        assert refused.status_code == 403, who
    assert (
        client.post(f"{API}/institutions", json={"kind": "care_home"}, headers=admin).status_code
        == 422
    )
    assert _audit_rows(conn, f"user:%:{scene['users']['admin'][0]}", "institution.add")


def test_doctors_are_listed_within_the_institution(client, scene, conn):  # noqa: F811
    ia, admin = _token(client, scene, "ia"), _token(client, scene, "admin")
    mine = client.get(f"{API}/doctors", headers=ia).json()
    assert {d["institution_id"] for d in mine} == {scene["centre"]}
    assert {scene["a"], scene["b"], scene["desk"]} <= {d["id"] for d in mine}
    desks = client.get(f"{API}/doctors", params={"role": "duty_desk"}, headers=ia).json()
    assert [d["id"] for d in desks] == [scene["desk"]]
    one = client.get(f"{API}/doctors/{scene['a']}", headers=ia).json()
    assert one["name"] == "张医生" and one["email"] == "zhang@example.org"
    everyone = client.get(
        f"{API}/doctors", params={"institution_id": scene["other"]}, headers=admin
    ).json()
    assert [d["id"] for d in everyone if d["role"] == "doctor"] == [scene["doctor_c"]]
    new = client.post(
        f"{API}/doctors",
        json={"name": "王医生", "institution_id": scene["centre"], "team": "二组"},
        headers=ia,
    )
    assert new.status_code == 201 and new.json()["team"] == "二组"
    assert client.get(f"{API}/doctors/{new.json()['id']}", headers=ia).status_code == 200


def test_contracts_are_listed_and_ended(client, scene, conn):  # noqa: F811
    ia, a = _token(client, scene, "ia"), _token(client, scene, "a")
    rid = scene["resident"]
    listed = client.get(f"{API}/contracts", params={"resident_id": rid}, headers=ia).json()
    assert [(c["doctor_id"], c["active"]) for c in listed] == [(scene["a"], True)]
    contract = listed[0]
    assert contract["resident_name"] == "王秀英" and contract["doctor_name"] == "张医生"
    assert scene["theirs"] not in {
        c["resident_id"] for c in client.get(f"{API}/contracts", headers=ia).json()
    }
    signed = client.post(
        f"{API}/contracts", json={"resident_id": rid, "doctor_id": scene["b"]}, headers=ia
    )
    assert signed.status_code == 201
    b = _token(client, scene, "b")
    assert client.get(f"{API}/residents/{rid}", headers=b).status_code == 200
    # Ending doctor A's contract: A no longer sees the resident; B (still signed) does.
    ended = client.post(f"{API}/contracts/{contract['id']}/end", json={}, headers=ia)
    assert ended.status_code == 200 and ended.json()["valid_to"] is not None
    assert client.get(f"{API}/residents/{rid}", headers=a).status_code == 404
    assert client.get(f"{API}/residents/{rid}", headers=b).status_code == 200
    again = client.post(f"{API}/contracts/{contract['id']}/end", json={}, headers=ia)
    assert again.status_code == 409 and "ended already" in again.json()["detail"]
    got = client.get(f"{API}/contracts/{contract['id']}", headers=ia).json()
    assert got["active"] is False
    active = client.get(
        f"{API}/contracts", params={"resident_id": rid, "active": True}, headers=ia
    ).json()
    assert [c["doctor_id"] for c in active] == [scene["b"]]
    # A contract that ends in the future, and one that would end before it began.
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    future = client.post(
        f"{API}/contracts/{signed.json()['id']}/end", json={"valid_to": later}, headers=ia
    )
    assert future.status_code == 200
    assert client.get(f"{API}/residents/{rid}", headers=b).status_code == 200, "until then"
    before = client.post(
        f"{API}/contracts/{signed.json()['id']}/end",
        json={"valid_to": "2000-01-01T00:00:00Z"},
        headers=ia,
    )
    assert before.status_code == 409 and "after it began" in before.json()["detail"]
    ia_actor = f"user:%:{scene['users']['ia'][0]}"
    assert [r[0] for r in _audit_rows(conn, ia_actor, "contract.end")] == [rid, rid]
    reads = _audit_rows(conn, ia_actor, "read.contracts")
    assert reads[0][1] == [rid], "the residents a list returned are on the trail"


def test_residents_are_updated_by_admins_and_the_doctor_sets_the_spo2_scale(client, scene, conn):  # noqa: F811
    ia, a, b = (_token(client, scene, w) for w in ("ia", "a", "b"))
    rid = scene["resident"]
    contacts = [
        {"name": "王小明", "phone": "13800000000", "relation": "son"},
        {"name": "李芳", "phone": "13900000000", "relation": "daughter-in-law"},
    ]
    before_id = conn.execute(
        "SELECT id FROM emergency_contact WHERE resident_id = %s", (rid,)
    ).fetchone()[0]
    changed = client.patch(
        f"{API}/residents/{rid}",
        json={"address": "浦东新区 1 号", "emergency_contacts": contacts[::-1], "gender": "female"},
        headers=ia,
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["address"] == "浦东新区 1 号" and body["gender"] == "female"
    assert [(c["name"], c["priority"]) for c in body["emergency_contacts"]] == [
        ("李芳", 1),
        ("王小明", 2),
    ]
    kept = conn.execute(
        "SELECT id FROM emergency_contact WHERE resident_id = %s AND name = '王小明'", (rid,)
    ).fetchone()[0]
    assert kept == before_id, "a contact who stays keeps its row"
    assert client.get(f"{API}/residents/{rid}/contacts", headers=a).json()[0]["name"] == "李芳"
    # The doctor flags hypercapnic respiratory failure: NEWS2 scale 2; nothing else.
    scale = client.patch(f"{API}/residents/{rid}", json={"spo2_scale": 2}, headers=a)
    assert scale.status_code == 200 and scale.json()["spo2_scale"] == 2
    assert client.get(f"{API}/residents/{rid}", headers=a).json()["spo2_scale"] == 2
    refused = client.patch(f"{API}/residents/{rid}", json={"address": "x"}, headers=a)
    assert refused.status_code == 403
    assert (
        client.patch(f"{API}/residents/{rid}", json={"spo2_scale": 1}, headers=b).status_code == 404
    )
    # Clearing what cannot be empty, and bad values: 422; a taken archive number: 409.
    for bad in (
        {"name": None},
        {"spo2_scale": 3},
        {"archive_id": "123"},
        {"emergency_contacts": None},
    ):
        assert client.patch(f"{API}/residents/{rid}", json=bad, headers=ia).status_code == 422, bad
    other = devices.add_resident(
        conn, name="x", archive_id=f"3101150010010{uuid.uuid4().int % 10000:04d}"
    )
    conn.execute(
        "UPDATE resident SET institution_id = %s WHERE id = %s", (scene["centre"], other.id)
    )
    taken = client.patch(
        f"{API}/residents/{rid}", json={"archive_id": other.archive_id}, headers=ia
    )
    assert taken.status_code == 409 and "already belongs" in taken.json()["detail"]
    assert (
        client.patch(f"{API}/residents/{rid}", json={"address": None}, headers=ia).json()["address"]
        is None
    )
    fields = [r[3]["fields"] for r in _audit_rows(conn, "user:%", "resident.update") if r[0] == rid]
    assert ["address", "emergency_contacts", "gender"] in fields and ["spo2_scale"] in fields
    # New residents may come with their contacts and scale.
    new = client.post(
        f"{API}/residents",
        json={"name": "周建国", "spo2_scale": 2, "emergency_contacts": contacts},
        headers=ia,
    ).json()
    assert new["institution_id"] == scene["centre"] and new["spo2_scale"] == 2
    assert [c["priority"] for c in new["emergency_contacts"]] == [1, 2]


def test_devices_belong_to_an_institution(client, scene, conn):  # noqa: F811
    ia, admin = _token(client, scene, "ia"), _token(client, scene, "admin")
    tag = scene["tag"]
    mine = client.post(
        f"{API}/devices",
        json={"device_id": f"cuff-{tag}", "kind": "bp_cuff", "resident_id": scene["resident"]},
        headers=ia,
    )
    assert mine.status_code == 201 and mine.json()["institution_id"] == scene["centre"]
    assert len(mine.json()["mqtt_password"]) >= 24
    listed = client.get(
        f"{API}/devices", params={"resident_id": scene["resident"]}, headers=ia
    ).json()
    assert client.get(f"{API}/devices/cuff-{tag}", headers=ia).json()["kind"] == "bp_cuff"
    assert {d["device_id"] for d in listed} == {f"cuff-{tag}", scene["devices"]["own"]}
    # Stock registered by a system admin is nobody's until it serves someone's resident.
    stock = scene["devices"]["stock"]
    assert client.get(f"{API}/devices/{stock}", headers=admin).json()["institution_id"] is None
    assert client.get(f"{API}/devices/{stock}", headers=ia).status_code == 404
    bound = client.post(
        f"{API}/devices/{stock}/bind", json={"resident_id": scene["resident"]}, headers=admin
    )
    assert bound.status_code == 200 and bound.json()["institution_id"] == scene["centre"]
    rotated = client.post(f"{API}/devices/{stock}/rotate", headers=ia)
    assert rotated.status_code == 200 and rotated.json()["mqtt_username"] == stock
    # Binding elsewhere later does not hand it over.
    client.post(f"{API}/devices/{stock}/bind", json={"resident_id": scene["theirs"]}, headers=admin)
    assert devices.owner(conn, stock) == scene["centre"]
    # A system admin names the owner, or it follows the resident.
    theirs = client.post(
        f"{API}/devices",
        json={"device_id": f"scale-{tag}", "kind": "scale", "resident_id": scene["theirs"]},
        headers=admin,
    )
    assert theirs.json()["institution_id"] == scene["other"]
    nowhere = client.post(
        f"{API}/devices",
        json={"device_id": f"x-{tag}", "kind": "scale", "institution_id": 2**53 - 1},
        headers=admin,
    )
    assert nowhere.status_code == 404
    retired = client.get(f"{API}/devices", params={"status": "retired"}, headers=ia).json()
    assert all(d["status"] == "retired" for d in retired)
    actions = {
        r[0]
        for r in conn.execute(
            "SELECT action FROM audit_log WHERE actor LIKE %s",
            (f"user:%:{scene['users']['ia'][0]}",),
        )
    }
    assert {"device.add", "device.rotate_credentials", "read.devices", "read.device"} <= actions


def test_escalation_policies_are_read_and_changed_with_an_audit_row(client, scene, conn):  # noqa: F811
    ia, admin = _token(client, scene, "ia"), _token(client, scene, "admin")
    defaults = client.get(f"{API}/policies", headers=ia).json()
    assert {p["severity"] for p in defaults if p["institution_id"] is None} == {
        "info",
        "warning",
        "critical",
    }
    put = client.put(
        f"{API}/policies/warning",
        json={"institution_id": scene["centre"], "tiers": TIERS, "reminder_every_s": 600},
        headers=ia,
    )
    assert put.status_code == 200 and put.json()["tiers"] == TIERS
    ours = client.get(
        f"{API}/policies", params={"institution_id": scene["centre"]}, headers=ia
    ).json()
    assert [(p["severity"], p["reminder_every_s"]) for p in ours] == [("warning", 600)]
    client.put(
        f"{API}/policies/info",
        json={"institution_id": scene["other"], "tiers": TIERS},
        headers=admin,
    )
    assert scene["other"] not in {
        p["institution_id"] for p in client.get(f"{API}/policies", headers=ia).json()
    }
    assert scene["other"] in {
        p["institution_id"] for p in client.get(f"{API}/policies", headers=admin).json()
    }
    rows = _audit_rows(conn, f"user:%:{scene['users']['ia'][0]}", "policy.set")
    assert rows and rows[-1][3]["severity"] == "warning" and rows[-1][3]["tiers"] == TIERS


def test_platforms_through_the_api(client, scene, conn):  # noqa: F811
    admin, ia = _token(client, scene, "admin"), _token(client, scene, "ia")
    name = f"12349-{scene['tag']}"
    created = client.post(
        f"{API}/platforms",
        json={"name": name, "institution_ids": [scene["centre"]], "scopes": ["read:alerts"]},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    key, pid = body["api_key"], body["id"]
    assert body["keys"][0]["scopes"] == ["read:alerts"] and body["disabled_at"] is None
    assert "api_key" not in client.get(f"{API}/platforms/{pid}", headers=admin).json()
    assert client.get(f"{API}/alerts", headers=_bearer(key)).status_code == 200
    assert (
        client.post(
            f"{API}/platforms", json={"name": "y", "institution_ids": [scene["centre"]]}, headers=ia
        ).status_code
        == 403
    )
    dup = client.post(
        f"{API}/platforms", json={"name": name, "institution_ids": [scene["centre"]]}, headers=admin
    )
    assert dup.status_code == 409
    past = client.post(
        f"{API}/platforms",
        json={
            "name": "z",
            "institution_ids": [scene["centre"]],
            "expires_at": "2001-01-01T00:00:00Z",
        },
        headers=admin,
    )
    assert past.status_code == 409 and "future" in past.json()["detail"]
    rotated = client.post(f"{API}/platforms/{pid}/rotate", json={}, headers=admin)
    assert rotated.status_code == 200 and rotated.json()["api_key"] != key
    assert client.get(f"{API}/alerts", headers=_bearer(key)).status_code == 401, "old key revoked"
    new_key = rotated.json()["api_key"]
    assert client.get(f"{API}/alerts", headers=_bearer(new_key)).status_code == 200
    disabled = client.post(f"{API}/platforms/{pid}/disable", headers=admin)
    assert disabled.status_code == 200 and disabled.json()["disabled_at"] is not None
    assert client.get(f"{API}/alerts", headers=_bearer(new_key)).status_code == 401
    assert client.post(f"{API}/platforms/{pid}/disable", headers=admin).status_code == 409
    assert client.post(f"{API}/platforms/{pid}/rotate", json={}, headers=admin).status_code == 409
    actions = [
        r[0]
        for r in conn.execute(
            "SELECT action FROM audit_log WHERE detail->>'platform_id' = %s ORDER BY id",
            (str(pid),),
        )
    ]
    assert actions == ["platform.add", "platform.rotate", "platform.disable"]


def test_platforms_from_the_command_line(env, scene, settings):  # noqa: F811
    name = f"区域平台-{scene['tag']}"
    added = cli_json(
        "platforms",
        "add",
        name,
        "--institution",
        str(scene["centre"]),
        "--scope",
        "read:residents",
        "--scope",
        "read:readings",
        "--expires-in-days",
        "30",
        env=env,
    )
    assert added["scopes"] == ["read:residents", "read:readings"] and added["expires_at"]
    with TestClient(create_app(settings)) as http:
        rid = scene["resident"]
        assert (
            http.get(f"{API}/residents/{rid}/latest", headers=_bearer(added["api_key"])).status_code
            == 200
        )
        assert http.get(f"{API}/alerts", headers=_bearer(added["api_key"])).status_code == 403
        listed = next(p for p in cli_json("platforms", "list", env=env) if p["name"] == name)
        assert listed["keys"][0]["scopes"] == ["read:residents", "read:readings"]
        assert added["api_key"] not in cli("platforms", "list", env=env).stdout
        rotated = cli_json("platforms", "rotate", name, env=env)
        assert (
            http.get(f"{API}/residents/{rid}", headers=_bearer(added["api_key"])).status_code == 401
        )
        assert (
            http.get(f"{API}/residents/{rid}", headers=_bearer(rotated["api_key"])).status_code
            == 200
        )
        cli("platforms", "revoke", name, env=env)
        assert (
            http.get(f"{API}/residents/{rid}", headers=_bearer(rotated["api_key"])).status_code
            == 401
        )
    unknown = cli(
        "platforms", "add", "x", "--institution", "1", "--scope", "write:all", env=env, check=False
    )
    assert unknown.returncode != 0 and "read:residents" in unknown.stderr
    missing = cli("platforms", "rotate", f"none-{scene['tag']}", env=env, check=False)
    assert missing.returncode != 0 and "no platform" in missing.stderr


def test_a_doctor_login_never_gets_an_institution(conn, scene, env):  # noqa: F811
    with pytest.raises(access.AccessError, match="--doctor only"):
        access.add_user(
            conn,
            username=f"wide-{scene['tag']}",
            password="x" * 12,
            role="doctor",
            doctor_id=scene["a"],
            institution_id=scene["centre"],
        )
    failed = cli(
        "users",
        "add",
        f"wide2-{scene['tag']}",
        "--role",
        "doctor",
        "--doctor",
        str(scene["a"]),
        "--institution",
        str(scene["centre"]),
        env=env,
        check=False,
    )
    assert failed.returncode != 0 and "--doctor only" in failed.stderr
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO app_user (username, password_hash, role, doctor_id, institution_id) "
            "VALUES (%s, 'x', 'doctor', %s, %s)",
            (f"wide3-{scene['tag']}", scene["a"], scene["centre"]),
        )


def test_logins_and_refusals_are_audited_without_secrets(client, scene, conn):  # noqa: F811
    username, password = scene["users"]["desk"]
    assert (
        client.post(
            f"{API}/auth/login", json={"username": username, "password": "nope-nope"}
        ).status_code
        == 401
    )
    assert (
        client.post(
            f"{API}/auth/login", json={"username": f"ghost-{scene['tag']}", "password": "pw"}
        ).status_code
        == 401
    )
    _token(client, scene, "desk")
    rows = conn.execute(
        "SELECT actor, outcome, detail, address, actor_institutions FROM audit_log "
        "WHERE action = 'auth.login' AND (actor LIKE %s OR actor LIKE %s) ORDER BY id",
        (f"%:{username}", f"anonymous:ghost-{scene['tag']}"),
    ).fetchall()
    assert [(r[0].split(":")[0], r[1]) for r in rows] == [
        ("user", "failed"),
        ("anonymous", "failed"),
        ("user", "ok"),
    ]
    assert rows[0][2] == {"reason": "wrong password"} and rows[1][2] == {
        "reason": "unknown username"
    }
    assert all(r[3] == "testclient" for r in rows) and rows[2][4] == [scene["centre"]]
    dumped = str(conn.execute("SELECT array_agg(detail::text) FROM audit_log").fetchone()[0])
    assert "nope-nope" not in dumped and password not in dumped


def test_the_audit_trail_has_a_time_range_pages_and_an_institutions_own_view(client, scene, conn):  # noqa: F811
    admin, ia, ia_other = (_token(client, scene, w) for w in ("admin", "ia", "ia_other"))
    a, rid = _token(client, scene, "a"), scene["resident"]
    start = datetime.now(UTC)
    for _ in range(5):
        client.get(f"{API}/residents/{rid}/latest", headers=a)
    client.get(f"{API}/residents/{scene['theirs']}", headers=a)  # refused: not A's
    client.get(f"{API}/contracts", headers=ia)  # a list, about resident rid among others
    page = client.get(
        f"{API}/audit",
        params={"since": start.isoformat(), "action": "read.latest", "limit": 2},
        headers=admin,
    ).json()
    assert len(page) == 2 and page[0]["id"] > page[1]["id"]
    rest = client.get(
        f"{API}/audit",
        params={"since": start.isoformat(), "action": "read.latest", "before_id": page[-1]["id"]},
        headers=admin,
    ).json()
    assert len(rest) == 3 and all(e["id"] < page[-1]["id"] for e in rest)
    assert (
        client.get(
            f"{API}/audit",
            params={"until": start.isoformat(), "action": "read.latest", "actor": page[0]["actor"]},
            headers=admin,
        ).json()
        == []
    )
    # The centre's admin: its doctors' reads and refusals, and lists that showed its residents.
    ours = client.get(f"{API}/audit", params={"since": start.isoformat()}, headers=ia).json()
    actions = {(e["action"], e["resident_id"]) for e in ours}
    # Its doctor's refused look at another institution's resident: shown, without naming them.
    assert ("read.latest", rid) in actions and ("access.refused", None) in actions
    assert scene["theirs"] not in {e["resident_id"] for e in ours}
    about = client.get(
        f"{API}/audit", params={"resident_id": rid, "since": start.isoformat()}, headers=ia
    ).json()
    contracts = next(e for e in about if e["action"] == "read.contracts")
    assert contracts["resident_ids"] and set(contracts["resident_ids"]) <= {
        rid,
        *[
            r[0]
            for r in conn.execute(
                "SELECT id FROM resident WHERE institution_id = %s", (scene["centre"],)
            )
        ],
    }
    # The other institution's admin sees none of that, except what concerns its own resident.
    theirs = client.get(
        f"{API}/audit", params={"since": start.isoformat()}, headers=ia_other
    ).json()
    assert {(e["action"], e["resident_id"]) for e in theirs} == {
        ("access.refused", scene["theirs"])
    }
    assert client.get(f"{API}/audit", headers=_token(client, scene, "desk")).status_code == 403
    assert _audit_rows(conn, f"user:%:{scene['users']['ia'][0]}", "read.audit")


def test_old_login_failures_are_pruned(client, scene, conn):  # noqa: F811
    conn.execute(
        "INSERT INTO login_failure (username, address, at) VALUES ('old', 'x', now() - INTERVAL '1 day')"
    )
    client.post(f"{API}/auth/login", json={"username": f"ghost-{scene['tag']}", "password": "pw"})
    assert conn.execute("SELECT count(*) FROM login_failure WHERE username = 'old'").fetchone() == (
        0,
    )
    assert conn.execute(
        "SELECT count(*) FROM login_failure WHERE username = %s", (f"ghost-{scene['tag']}",)
    ).fetchone() == (1,), "recent ones stay: they are the rate limit"


def _serve(settings, trusted: str):
    cfg = settings.model_copy(update={"http_trusted_proxies": trusted})
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(cfg), host="127.0.0.1", port=0, log_level="warning", **uvicorn_options(cfg)
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 10, "uvicorn started")
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(("trusted", "seen"), [("127.0.0.1", "203.0.113.7"), ("", "127.0.0.1")])
def test_the_client_address_comes_from_trusted_proxies_only(settings, scene, conn, trusted, seen):  # noqa: F811
    server, thread, url = _serve(settings, trusted)
    try:
        username = f"proxy-{uuid.uuid4().hex[:6]}"
        forwarded = {"X-Forwarded-For": "203.0.113.7"}
        response = httpx.post(
            f"{url}{API}/auth/login",
            json={"username": username, "password": "pw"},
            headers=forwarded,
        )
        assert response.status_code == 401
        assert conn.execute(
            "SELECT address FROM login_failure WHERE username = %s", (username,)
        ).fetchone() == (seen,)
        token = httpx.post(
            f"{url}{API}/auth/login",
            json={"username": scene["users"]["a"][0], "password": scene["users"]["a"][1]},
            headers=forwarded,
        ).json()["token"]
        httpx.get(
            f"{url}{API}/residents/{scene['resident']}", headers={**forwarded, **_bearer(token)}
        )
        address = conn.execute(
            "SELECT address FROM audit_log WHERE action = 'read.resident' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        assert address == (seen,)
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture()
def app_role(database_url, conn):
    """A login of the role the processes run as in production (created by migration 0009)."""
    name = f"eldercare_test_{uuid.uuid4().hex[:8]}"
    conn.execute(f'CREATE ROLE "{name}" LOGIN IN ROLE eldercare_app')
    params = conninfo_to_dict(database_url)
    params.pop("password", None)
    yield make_conninfo("", **{**params, "user": name})
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,)
    )
    conn.execute(f'DROP ROLE "{name}"')


def test_the_app_role_cannot_touch_the_audit_trail(app_role):
    with psycopg.connect(app_role, autocommit=True) as role:
        role.execute(
            "INSERT INTO audit_log (actor, action, resource) VALUES ('test', 'test', 'test')"
        )
        assert role.execute("SELECT count(*) FROM audit_log").fetchone()[0] >= 1
        for statement in (
            "UPDATE audit_log SET actor = 'someone else'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update",
            "DROP TRIGGER audit_log_no_update ON audit_log",
            "DROP TABLE audit_log",
            "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RETURN NULL; END $$",
            "ALTER TABLE resident ADD COLUMN x int",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                role.execute(statement)


def test_the_system_runs_as_the_app_role(app_role, settings, scene, register, endpoint, conn):  # noqa: F811
    """Ingest, the alert engine and the API as the production role: its grants are enough."""
    from ingest.consumer import Ingestor
    from ingest.settings import IngestSettings

    cfg = settings.model_copy(update={"database_url": app_role})
    button = register("sos_button", resident_id=scene["resident"])
    band = register("wristband", resident_id=scene["resident"])
    ingestor = Ingestor(
        cfg,
        IngestSettings(instance=f"r{uuid.uuid4().hex[:6]}", share_group=f"g{uuid.uuid4().hex[:8]}"),
    )
    engine = AlertEngine(cfg, AlertSettings(tick_s=0.2))
    ingestor.start()
    try:
        assert ingestor.wait_subscribed(20)
        engine.connect()
        engine.start()
        long_ago = now_ms() - 20 * 3600 * 1000  # an earlier chunk, created by this role's insert
        band.telemetry({"heart_rate": 72}, ts=long_ago)
        band.telemetry({"heart_rate": 74})
        button.publish("events", {"msg_id": new_msg_id(), "ts": now_ms(), "type": "sos"})
        wait_for(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM reading WHERE device_id = %s", (band.device_id,)
                ).fetchone()[0]
                == 2
            ),
            what="readings stored by the app role",
        )
        wait_for(
            lambda: conn.execute(
                "SELECT 1 FROM alert WHERE rule = 'sos' AND resident_id = %s AND state = 'open'",
                (scene["resident"],),
            ).fetchone(),
            what="the SOS alert raised by the engine running as the app role",
        )
    finally:
        engine.close()
        ingestor.stop(leave=True)
    with TestClient(create_app(cfg)) as http:
        admin, a = _token(http, scene, "admin"), _token(http, scene, "a")
        rid = scene["resident"]
        assert (
            http.get(
                f"{API}/residents/{rid}/readings",
                params={"bucket": "hour", "since": "2000-01-01T00:00:00Z"},
                headers=a,
            ).status_code
            == 200
        )
        sos = next(x for x in http.get(f"{API}/alerts", headers=a).json() if x["rule"] == "sos")
        assert http.post(f"{API}/alerts/{sos['id']}/ack", json={}, headers=a).status_code == 200
        assert (
            http.patch(f"{API}/residents/{rid}", json={"address": "x"}, headers=admin).status_code
            == 200
        )
        assert http.post(f"{API}/devices/{band.device_id}/rotate", headers=admin).status_code == 200
        assert (
            http.post(
                f"{API}/platforms",
                json={"name": f"r-{scene['tag']}", "institution_ids": [scene["centre"]]},
                headers=admin,
            ).status_code
            == 201
        )
        assert (
            http.get(f"{API}/audit", params={"resident_id": rid}, headers=admin).status_code == 200
        )
        assert http.get(f"{API}/overview", headers=a).status_code == 200


def test_lists_record_the_residents_they_returned(client, scene, conn):  # noqa: F811
    a, desk = _token(client, scene, "a"), _token(client, scene, "desk")
    rid = scene["resident"]
    client.get(f"{API}/residents", headers=a)
    client.get(f"{API}/alerts", headers=desk)
    client.get(f"{API}/overview", headers=a)
    for action, who in (("read.residents", "a"), ("read.alerts", "desk"), ("read.overview", "a")):
        ids = _audit_rows(conn, f"user:%:{scene['users'][who][0]}", action)[-1][1]
        assert rid in ids and scene["theirs"] not in ids, action
    trail = client.get(
        f"{API}/audit", params={"resident_id": rid}, headers=_token(client, scene, "ia")
    )
    assert {"read.residents", "read.alerts", "read.overview"} <= {e["action"] for e in trail.json()}
    narrow = _bearer(scene["narrow_key"])
    assert client.get(f"{API}/stream", params={"once": True}, headers=narrow).status_code == 403
