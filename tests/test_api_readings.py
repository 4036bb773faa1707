"""Paging readings with the keyset cursor: rows that share a timestamp (several metrics, or two
devices measuring the same metric at the same moment) are neither lost nor repeated at a page
boundary, raw or bucketed, with or without a metric filter."""

from __future__ import annotations

import pytest

from api import cursor
from tests.test_api import _token, client, world  # noqa: F401 - fixtures


@pytest.fixture()
def crowded(world, conn):  # noqa: F811
    """Three metrics at each of heart rate's 100 timestamps, and heart rate from a second device
    at the same moments: 400 raw rows, four per timestamp."""
    rid = world["resident"]
    for device, metric, value in (
        ("api-dev", "spo2", 97),
        ("api-dev", "resp_rate", 16),
        ("api-dev-2", "heart_rate", 71),
    ):
        conn.execute(
            "INSERT INTO reading (device_id, metric, measured_at, resident_id, value, received_at, "
            "msg_id) SELECT %s, %s, measured_at, resident_id, %s, now(), %s || msg_id FROM reading "
            "WHERE resident_id = %s AND metric = 'heart_rate' AND device_id = 'api-dev'",
            (device, metric, value, f"{device}-{metric}-", rid),
        )
    return world


def _all_pages(client, headers, rid, limit, **params):  # noqa: F811
    rows, token, pages = [], None, 0
    while True:
        query = {**params, "limit": limit, **({"cursor": token} if token else {})}
        response = client.get(f"/api/v1/residents/{rid}/readings", headers=headers, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["readings"]) <= limit
        rows += page["readings"]
        pages += 1
        token = page["next"]
        if token is None:
            return rows, pages
        assert pages < 1000, "paging does not end"


def _key(row):
    return (row["at"], row["metric"], row.get("device_id"))


@pytest.mark.parametrize(
    ("bucket", "metric", "expected"),
    [
        ("raw", None, 400),
        ("raw", "heart_rate", 200),  # two devices at every timestamp
        ("minute", None, 300),
        ("hour", None, None),
        ("hour", "spo2", None),
    ],
)
def test_paging_loses_and_repeats_nothing_at_shared_timestamps(
    client,  # noqa: F811
    crowded,
    bucket,
    metric,
    expected,
):
    a = _token(client, crowded, "a")
    rid = crowded["resident"]
    params = {"bucket": bucket, **({"metric": metric} if metric else {})}
    whole = client.get(
        f"/api/v1/residents/{rid}/readings", headers=a, params={**params, "limit": 10_000}
    ).json()
    assert whole["next"] is None
    if expected is not None:
        assert len(whole["readings"]) == expected
    # 7 does not divide 4 rows per timestamp (or 3 per minute): boundaries fall inside a timestamp.
    paged, pages = _all_pages(client, a, rid, 7, **params)
    assert pages > 1
    assert [_key(r) for r in paged] == [_key(r) for r in whole["readings"]]
    assert paged == whole["readings"]
    assert len({_key(r) for r in paged}) == len(paged), "a row came twice"
    if bucket != "raw":
        counted = sum(r["samples"] for r in paged)
        assert counted == (100 if metric == "spo2" else 400)


def test_a_full_last_page_says_there_is_no_next_one(client, crowded):  # noqa: F811
    a = _token(client, crowded, "a")
    rid = crowded["resident"]
    page = client.get(
        f"/api/v1/residents/{rid}/readings",
        headers=a,
        params={"metric": "spo2", "limit": 100},
    ).json()
    assert len(page["readings"]) == 100 and page["next"] is None


def test_a_cursor_that_is_not_ours_is_a_422_in_the_documented_shape(client, crowded):  # noqa: F811
    a = _token(client, crowded, "a")
    rid = crowded["resident"]
    url = f"/api/v1/residents/{rid}/readings"
    hourly = client.get(url, headers=a, params={"bucket": "hour", "limit": 2}).json()
    assert hourly["next"]
    for token in (
        "not-a-cursor",
        cursor.encode("alerts", rank=0, opened_at="2024-01-01T00:00:00+00:00", id=1),
        cursor.encode("readings.raw", at="yesterday", metric="spo2", device_id="x"),
        cursor.encode("readings.raw", at="2024-01-01T00:00:00+00:00", metric=None),
        hourly["next"],  # an hourly cursor on the raw listing
    ):
        response = client.get(url, headers=a, params={"cursor": token})
        assert response.status_code == 422, token
        detail = response.json()["detail"]
        assert detail[0]["loc"] == ["query", "cursor"] and "cursor" in detail[0]["msg"]


def test_after_is_gone_and_doctor_b_still_gets_404(client, crowded):  # noqa: F811
    rid = crowded["resident"]
    b = _token(client, crowded, "b")
    assert client.get(f"/api/v1/residents/{rid}/readings", headers=b).status_code == 404
    a = _token(client, crowded, "a")
    page = client.get(f"/api/v1/residents/{rid}/readings", headers=a, params={"limit": 3}).json()
    assert "next_after" not in page and page["next"]
