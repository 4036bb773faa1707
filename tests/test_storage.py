"""Storage layout: TimescaleDB when available (hypertable, compression, retention, continuous
aggregates), plain PostgreSQL otherwise, and the same queries on both."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from devices import service
from ingest import queries
from store import db
from store.timescale import choose_storage


def _extension_available(url: str) -> bool:
    with db.connection(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
        return bool(row and row[0])


@pytest.fixture()
def fresh_database(database_url):
    created = []

    def make(setting: str) -> str:
        url = db.with_dbname(database_url, f"eldercare_layout_{uuid.uuid4().hex[:8]}")
        db.ensure_database(url)
        created.append(url)
        db.migrate(url, timescale=setting)
        return url

    yield make
    for url in created:
        db.drop_database(url)


def test_choose_storage():
    assert choose_storage("auto", True) == "timescaledb"
    assert choose_storage("auto", False) == "postgresql"
    assert choose_storage("off", True) == "postgresql"
    assert choose_storage("require", True) == "timescaledb"
    with pytest.raises(RuntimeError, match="not installed"):
        choose_storage("require", False)


def test_session_database_uses_the_branch_the_server_allows(database_url, storage_setting, conn):
    expected = (
        "timescaledb"
        if storage_setting != "off" and _extension_available(database_url)
        else "postgresql"
    )
    assert db.storage_kind(conn) == expected


def test_off_gives_plain_tables_and_views(fresh_database):
    url = fresh_database("off")
    with db.connection(url) as conn:
        assert db.storage_kind(conn) == "postgresql"
        views = {
            r[0]
            for r in conn.execute("SELECT viewname FROM pg_views WHERE viewname LIKE 'reading_%%'")
        }
        assert views == {"reading_minute", "reading_hour", "reading_day"}


def test_timescale_layout_when_the_extension_exists(fresh_database, database_url):
    if not _extension_available(database_url):
        with pytest.raises(RuntimeError, match="not installed"):
            fresh_database("require")
        pytest.skip(
            "timescaledb is not installed in this PostgreSQL server; checked that 'require' refuses"
        )
    url = fresh_database("require")
    with db.connection(url) as conn:
        assert db.storage_kind(conn) == "timescaledb"
        caggs = {
            r[0]
            for r in conn.execute(
                "SELECT view_name FROM timescaledb_information.continuous_aggregates"
            )
        }
        assert caggs == {"reading_minute", "reading_hour", "reading_day"}
        jobs = {r[0] for r in conn.execute("SELECT proc_name FROM timescaledb_information.jobs")}
        assert {
            "policy_compression",
            "policy_retention",
            "policy_refresh_continuous_aggregate",
        } <= jobs
        compressed = conn.execute(
            "SELECT compression_enabled FROM timescaledb_information.hypertables WHERE hypertable_name = 'reading'"
        ).fetchone()
        assert compressed == (True,)


def _rollups(url: str) -> dict[str, list[tuple]]:
    with db.connection(url, autocommit=True) as conn:
        resident = service.add_resident(conn, name="王秀英")
        start = datetime(2026, 11, 20, tzinfo=UTC)
        conn.execute(
            "INSERT INTO reading (device_id, metric, measured_at, resident_id, value, received_at, msg_id) "
            "SELECT 'd1', 'heart_rate', %s + n * INTERVAL '10 minutes', %s, 60 + n %% 7, now(), 'm' || n "
            "FROM generate_series(0, 299) n",
            (start, resident.id),
        )
        result = {}
        for width in ("minute", "hour", "day"):
            statement = sql.SQL(queries.SELECT_ROLLUP).format(
                view=sql.Identifier(f"reading_{width}")
            )
            rows = conn.execute(
                statement,
                {"resident_id": resident.id, "since": start, "metric": None, "limit": 100_000},
            ).fetchall()
            result[width] = [(b, m, round(a, 6), lo, hi, n) for b, m, a, lo, hi, n in rows]
        return result


def test_the_same_rollup_queries_give_the_same_answers_on_both_layouts(
    fresh_database, database_url
):
    plain = _rollups(fresh_database("off"))
    assert len(plain["minute"]) == 300 and sum(r[5] for r in plain["day"]) == 300
    assert plain["day"][0][0] == datetime(2026, 11, 20, tzinfo=UTC)
    assert [r[5] for r in plain["hour"][:2]] == [6, 6]
    if not _extension_available(database_url):
        pytest.skip("timescaledb is not installed; plain layout checked")
    assert _rollups(fresh_database("require")) == plain


def test_duplicate_readings_are_refused_by_the_key(conn):
    resident = service.add_resident(conn, name="李建国")
    row = (
        "d-dup",
        "spo2",
        datetime.now(UTC) - timedelta(minutes=1),
        resident.id,
        97.0,
        datetime.now(UTC),
        "m1",
    )
    insert = (
        "INSERT INTO reading (device_id, metric, measured_at, resident_id, value, received_at, msg_id)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)"
    )
    conn.execute(insert, row)
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(insert, row)
