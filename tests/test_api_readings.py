"""Paging readings with the keyset cursor: rows that share a timestamp (several metrics, or two
devices measuring the same metric at the same moment) are neither lost nor repeated at a page
boundary, raw or bucketed, with or without a metric filter."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from api import cursor
from store import db, rollups
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
    # Rows written into the past appear in the hourly/daily buckets at the next refresh (within a
    # minute on plain PostgreSQL, the policy's interval on TimescaleDB: docs/storage.md); an earlier
    # test's refresh may have moved the watermark past them, so bring the rollups up to date first.
    rollups.refresh(conn, storage=db.storage_kind(conn), now=datetime.now(UTC))
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


def test_a_cursor_is_checked_by_its_pattern_and_any_match_is_a_position(client, crowded):  # noqa: F811
    a = _token(client, crowded, "a")
    rid = crowded["resident"]
    url = f"/api/v1/residents/{rid}/readings"
    for token in ("not-a-cursor", "12.heart_rate.a.b", "123", "-12345678901234567.spo2"):
        response = client.get(url, headers=a, params={"cursor": token})
        assert response.status_code == 422, token
        assert response.json()["detail"][0]["loc"] == ["query", "cursor"]
    # Anything the pattern allows is a place to start, never an error (the fuzzer relies on it).
    whole = client.get(url, headers=a, params={"limit": 10_000}).json()["readings"]
    middle = whole[len(whole) // 2]
    first_at_middle = next(r for r in whole if r["at"] == middle["at"])

    def first(token):
        page = client.get(url, headers=a, params={"cursor": token, "limit": 1})
        assert page.status_code == 200, token
        return (page.json()["readings"] or [None])[0]

    at = datetime.fromisoformat(middle["at"])
    assert first(cursor.readings_cursor(at, "a", None)) == first_at_middle  # before every metric
    assert first("0.zzz") == whole[0]
    assert first("99999999999999999.a.A") is None
    odd = client.get(url, headers=a, params={"cursor": "1.spo2.A", "bucket": "hour"})
    assert odd.status_code == 200


def test_cursor_round_trip():
    at = datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC)
    for device in ("api-dev", "wb.0001:x", None, "设备"):
        key = cursor.parse_readings(cursor.readings_cursor(at, "heart_rate", device))
        assert (key.at, key.metric, key.device_id) == (at, "heart_rate", device or "")
    early = datetime(1969, 12, 31, 23, 0, tzinfo=UTC)
    assert cursor.parse_readings(cursor.readings_cursor(early, "spo2", "d")).at == early
    alert = cursor.parse_alerts(cursor.alerts_cursor(1, at, 42))
    assert (alert.rank, alert.opened_at, alert.id) == (1, at, 42)
    assert cursor.parse_readings("5.a.A").device_id == ""  # lenient: odd base64 still decodes
    with pytest.raises(cursor.CursorError):
        cursor.parse_alerts("3.1.1")


def test_after_is_gone_and_doctor_b_still_gets_404(client, crowded):  # noqa: F811
    rid = crowded["resident"]
    b = _token(client, crowded, "b")
    assert client.get(f"/api/v1/residents/{rid}/readings", headers=b).status_code == 404
    a = _token(client, crowded, "a")
    page = client.get(f"/api/v1/residents/{rid}/readings", headers=a, params={"limit": 3}).json()
    assert "next_after" not in page and page["next"]
