"""What the API shows across tenants: refusals in the audit log name only what was asked for, and
a duplicate archive number is confirmed only to someone who may see its holder."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from devices import service as devices
from tests.test_api import _token, client, world  # noqa: F401 - fixtures
from tests.test_api_access import API, scene  # noqa: F401 - fixture


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
