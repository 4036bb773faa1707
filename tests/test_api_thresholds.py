"""A resident's thresholds through the API: set only by the resident's contracted doctor(s) and the
administrators who own the resident, within what a reading of the metric can be (a limit no reading
can cross would silence the rule), low below high, every change and every refusal audited."""

from __future__ import annotations

import pytest

from care import service as care
from ingest.metrics import METRICS
from tests.test_api import _token, client, world  # noqa: F401 - fixtures
from tests.test_api_access import API, _bearer, scene  # noqa: F401 - fixture


def _stored(conn, resident_id: int) -> dict[str, tuple]:
    return {
        r[0]: (r[1], r[2])
        for r in conn.execute(
            "SELECT metric, low, high FROM resident_threshold WHERE resident_id = %s",
            (resident_id,),
        )
    }


def test_only_the_contracted_doctor_and_the_owners_set_thresholds(client, scene, conn):  # noqa: F811
    rid, theirs = scene["resident"], scene["theirs"]
    # Doctor B's institution (the centre) cooperates with the other institution's care home: B sees
    # its residents without being anyone's contracted doctor there.
    care.add_agreement(conn, care_home_id=scene["other"], medical_institution_id=scene["centre"])
    b, desk = _token(client, scene, "b"), _token(client, scene, "desk")
    assert client.get(f"{API}/residents/{theirs}", headers=b).status_code == 200, "B sees it"
    assert client.get(f"{API}/residents/{rid}", headers=desk).status_code == 200, "the desk too"
    silence = {"low": 21, "high": 249}
    for who, resident in ((desk, rid), (b, theirs), (_bearer(scene["own_key"]), rid)):
        refused = client.put(
            f"{API}/residents/{resident}/thresholds/heart_rate", json=silence, headers=who
        )
        assert refused.status_code == 403, refused.text
    # Nor the SpO2 scale, which moves the SpO2 limit (94 % → 87 %).
    assert (
        client.patch(f"{API}/residents/{theirs}", json={"spo2_scale": 2}, headers=b).status_code
        == 403
    )
    assert _stored(conn, rid) == {} and _stored(conn, theirs) == {}
    assert conn.execute("SELECT spo2_scale FROM resident WHERE id = %s", (theirs,)).fetchone() == (
        1,
    )
    # Those who may: the contracted doctor, the owning institution's admin, a system admin.
    for who, resident, high in (
        ("a", rid, 130),
        ("ia", rid, 125),
        ("admin", rid, 128),
        ("ia_other", theirs, 140),
    ):
        response = client.put(
            f"{API}/residents/{resident}/thresholds/heart_rate",
            json={"high": high},
            headers=_token(client, scene, who),
        )
        assert response.status_code == 200, (who, response.text)
        assert _stored(conn, resident)["heart_rate"] == (None, high)
    refusals = conn.execute(
        "SELECT count(*) FROM audit_log WHERE action = 'access.refused' AND resident_id = ANY(%s) "
        "AND detail->>'operation' IN ('set_threshold', 'update_resident')",
        ([rid, theirs],),
    ).fetchone()
    assert refusals == (4,), "every refusal is on the resident's trail"


@pytest.mark.parametrize(
    ("metric", "limits", "says"),
    [
        ("heart_rate", {"high": 250}, "above 250 /min"),  # the highest plausible reading
        ("heart_rate", {"high": 300}, "above 250 /min"),
        ("heart_rate", {"low": 20}, "below 20 /min"),
        ("spo2", {"low": 49}, "below 50 %"),
        ("body_temp", {"high": 43}, "above 43 Cel"),
        ("blood_glucose", {"low": 0.5}, "below 0.5 mmol/L"),
        ("systolic_bp", {"low": 95, "high": 90}, "must be below high 90"),
        ("systolic_bp", {"low": 190}, "must be below high 180"),  # the default high
    ],
)
def test_a_threshold_no_reading_can_cross_is_refused(client, scene, conn, metric, limits, says):  # noqa: F811
    rid = scene["resident"]
    a = _token(client, scene, "a")
    refused = client.put(f"{API}/residents/{rid}/thresholds/{metric}", json=limits, headers=a)
    assert refused.status_code == 422, refused.text
    assert says in refused.json()["detail"][0]["msg"]
    assert _stored(conn, rid) == {}, "nothing stored"
    row = conn.execute(
        "SELECT outcome, detail FROM audit_log WHERE action = 'threshold.set' AND resident_id = %s "
        "ORDER BY id DESC LIMIT 1",
        (rid,),
    ).fetchone()
    assert row[0] == "refused" and row[1]["metric"] == metric and says in row[1]["reason"]


def test_every_change_is_audited_with_what_it_replaced(client, scene, conn):  # noqa: F811
    rid = scene["resident"]
    a = _token(client, scene, "a")
    url = f"{API}/residents/{rid}/thresholds/systolic_bp"
    assert client.put(url, json={"low": 95, "high": 195}, headers=a).status_code == 200
    assert client.put(url, json={"high": 200}, headers=a).status_code == 200
    assert client.put(url, json={}, headers=a).status_code == 200, "back to the defaults"
    details = [
        r[0]
        for r in conn.execute(
            "SELECT detail FROM audit_log WHERE action = 'threshold.set' AND resident_id = %s "
            "AND outcome = 'ok' ORDER BY id",
            (rid,),
        )
    ]
    assert [(d["low"], d["high"], d["previous"]) for d in details] == [
        (95, 195, None),
        (None, 200, {"low": 95, "high": 195}),
        (None, None, {"low": None, "high": 200}),
    ]
    assert all(d["metric"] == "systolic_bp" for d in details)


def test_the_bounds_are_the_metric_tables_plausible_ranges():
    """The rule is pure and the same for the command line (care.set_threshold)."""
    from care.service import ThresholdError

    for metric in METRICS.values():
        care.check_threshold(metric.key, low=None, high=None)
        inside = (metric.low + metric.high) / 2
        care.check_threshold(metric.key, low=inside, high=None)
        for low, high in ((metric.low, None), (None, metric.high)):
            with pytest.raises(ThresholdError, match="would never alert"):
                care.check_threshold(metric.key, low=low, high=high)
