"""Hourly and daily rollups that stay fast over years of readings, on either layout.

TimescaleDB: continuous aggregates (migration 0002) whose policies refresh them; `refresh` here runs
the same refresh on demand (after an import, in a benchmark).

Plain PostgreSQL has no continuous aggregates, and a view that aggregates a year of raw readings
per request is far too slow (a resident's year is ~100,000 readings per metric). So migration 0010
gives it the same design by hand: a table of materialized buckets below a watermark, the raw
readings aggregated on the fly above it (the `reading_hour` / `reading_day` views, same columns as
the continuous aggregates), and an invalidation log filled by a statement trigger on `reading` in
the inserting transaction — so a back-filled reading is never missed, whatever its age or however
late its transaction commits. `refresh` recomputes the invalidated buckets and moves the
watermark (hours from raw readings, then days from those hours); the ingest maintenance thread
calls it every minute.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg import sql
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from store.timescale import BUCKET_ORIGIN, ROLLUPS

# How long `refresh` waits for a concurrent refresh of the same continuous aggregate (TimescaleDB).
REFRESH_WAIT_S = 60


@dataclass(frozen=True)
class Materialized:
    view: str  # the relation queries read (same name on both layouts)
    table: str  # plain PostgreSQL: where complete buckets are kept
    width: timedelta
    # Plain PostgreSQL: what a bucket is recomputed from. Days come from the hours (24 rows per
    # metric instead of a day of raw readings): sum, min, max and count compose exactly.
    source: str = "reading"


MATERIALIZED = (
    Materialized("reading_hour", "reading_hour_rollup", timedelta(hours=1)),
    Materialized("reading_day", "reading_day_rollup", timedelta(days=1), "reading_hour_rollup"),
)
# TimescaleDB: how far back an on-demand refresh looks (the policies use the same offsets).
TIMESCALE_REFRESH_BACK = timedelta(days=8)

# --- schema (plain PostgreSQL), used by migration 0010 ------------------------------------------

CREATE_STATE = """
CREATE TABLE reading_rollup_state (
    view               text PRIMARY KEY,
    -- Buckets before this are read from the rollup table, the rest from raw readings.
    materialized_until timestamptz NOT NULL DEFAULT '-infinity'
)"""
CREATE_INVALIDATION = """
CREATE TABLE reading_rollup_invalidation (
    view          text NOT NULL,
    resident_id   bigint NOT NULL,
    lo            timestamptz NOT NULL,   -- measured_at range of the readings a statement inserted
    hi            timestamptz NOT NULL
)"""
CREATE_INVALIDATION_INDEX = (
    "CREATE INDEX reading_rollup_invalidation_idx ON reading_rollup_invalidation (view, lo)"
)
CREATE_TABLE = """
CREATE TABLE {table} (
    resident_id   bigint NOT NULL,
    metric        text NOT NULL,
    bucket        timestamptz NOT NULL,
    sum_value     double precision NOT NULL,
    min_value     double precision NOT NULL,
    max_value     double precision NOT NULL,
    samples       bigint NOT NULL,
    PRIMARY KEY (resident_id, metric, bucket)
)"""
# The same columns as the continuous aggregate: materialized buckets, then live ones.
CREATE_VIEW = """
CREATE VIEW {view} AS
SELECT resident_id, metric, bucket, sum_value / samples AS avg_value, min_value, max_value, samples
FROM {table}
WHERE bucket < (SELECT materialized_until FROM reading_rollup_state WHERE view = {view_name})
UNION ALL
SELECT resident_id, metric, date_bin({width}, measured_at, {origin}) AS bucket, avg(value),
       min(value), max(value), count(*)
FROM reading
WHERE measured_at >= (SELECT materialized_until FROM reading_rollup_state WHERE view = {view_name})
GROUP BY resident_id, metric, bucket"""
# Aggregate the inserted rows first, then pair them with the two views: grouping the cross join
# instead made plpgsql's cached plan cost 60 ms per ingest batch (measured; 0.1 ms this way).
CREATE_TRIGGER_FUNCTION = """
CREATE FUNCTION reading_rollup_invalidate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reading_rollup_invalidation (view, resident_id, lo, hi)
    SELECT s.view, n.resident_id, n.lo, n.hi
    FROM (SELECT resident_id, min(measured_at) AS lo, max(measured_at) AS hi
          FROM new_rows GROUP BY resident_id) n
    CROSS JOIN reading_rollup_state s;
    RETURN NULL;
END $$"""
CREATE_TRIGGER = """
CREATE TRIGGER reading_rollup_invalidate AFTER INSERT ON reading
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION reading_rollup_invalidate()"""
# Readings stored before the migration: one invalidation per resident covering all of them.
SEED_INVALIDATION = """
INSERT INTO reading_rollup_invalidation (view, resident_id, lo, hi)
SELECT s.view, r.resident_id, min(r.measured_at), max(r.measured_at)
FROM reading r CROSS JOIN reading_rollup_state s GROUP BY s.view, r.resident_id"""

# --- refresh ------------------------------------------------------------------------------------

# One statement: take the invalidations below the new watermark (keeping any part above it for a
# later refresh), recompute every bucket they touch from {source}, upsert them.
RECOMPUTE = """
WITH due AS (
    DELETE FROM reading_rollup_invalidation
    WHERE view = %(view)s AND lo < %(until)s
    RETURNING resident_id, lo, hi
), carried AS (
    INSERT INTO reading_rollup_invalidation (view, resident_id, lo, hi)
    SELECT %(view)s, resident_id, %(until)s, max(hi) FROM due WHERE hi >= %(until)s
    GROUP BY resident_id
), touched AS (
    SELECT DISTINCT d.resident_id, b.bucket
    FROM due d, generate_series(
        date_bin(%(width)s, d.lo, %(origin)s),
        least(date_bin(%(width)s, d.hi, %(origin)s), %(until)s - %(width)s),
        %(width)s) AS b(bucket)
)
INSERT INTO {table} (resident_id, metric, bucket, sum_value, min_value, max_value, samples)
SELECT t.resident_id, a.metric, t.bucket, a.sum_value, a.min_value, a.max_value, a.samples
FROM touched t CROSS JOIN LATERAL ({aggregate}) a
ON CONFLICT (resident_id, metric, bucket) DO UPDATE
SET sum_value = EXCLUDED.sum_value, min_value = EXCLUDED.min_value,
    max_value = EXCLUDED.max_value, samples = EXCLUDED.samples
"""
FROM_READINGS = """
    SELECT metric, sum(value) AS sum_value, min(value) AS min_value, max(value) AS max_value,
           count(*) AS samples
    FROM reading
    WHERE resident_id = t.resident_id AND metric = ANY(%(metrics)s)
      AND measured_at >= t.bucket AND measured_at < t.bucket + %(width)s
    GROUP BY metric"""
FROM_ROLLUP = """
    SELECT metric, sum(sum_value) AS sum_value, min(min_value) AS min_value,
           max(max_value) AS max_value, sum(samples)::bigint AS samples
    FROM {source}
    WHERE resident_id = t.resident_id
      AND bucket >= t.bucket AND bucket < t.bucket + %(width)s
    GROUP BY metric"""
ADVANCE = """
UPDATE reading_rollup_state SET materialized_until = %(until)s
WHERE view = %(view)s AND materialized_until < %(until)s
"""
# Only one refresher at a time (several processes may run the maintenance loop).
LOCK = "SELECT pg_try_advisory_xact_lock(hashtext('eldercare.reading_rollup'))"
TIMESCALE_REFRESH = "CALL refresh_continuous_aggregate(%s, %s::timestamptz, %s::timestamptz)"


def _interval(text: str) -> timedelta:
    """'1 minute' / '1 hour' / '1 day' (store.timescale.ROLLUPS) as a timedelta."""
    count, unit = text.split()
    return timedelta(**{unit.rstrip("s") + "s": int(count)})


def _bucket_start(moment: datetime, width: timedelta) -> datetime:
    origin = datetime.fromisoformat(BUCKET_ORIGIN)
    return origin + (moment - origin) // width * width


def refresh_aggregate(conn: psycopg.Connection, view: str, start: datetime, end: datetime) -> None:
    """TimescaleDB: refresh one continuous aggregate over [start, end). A policy job (or another
    caller) refreshing an overlapping window makes TimescaleDB refuse at once rather than wait:
    wait for it instead, giving up (and raising) after REFRESH_WAIT_S."""
    for attempt in Retrying(
        retry=retry_if_exception_type(psycopg.errors.LockNotAvailable),
        wait=wait_exponential(multiplier=0.05, max=2),
        stop=stop_after_delay(REFRESH_WAIT_S),
        reraise=True,
    ):
        with attempt:
            conn.execute(TIMESCALE_REFRESH, (view, start, end))


def refresh(conn: psycopg.Connection, *, storage: str, now: datetime) -> int:
    """Bring the hourly and daily rollups up to `now` (complete buckets only); returns the number of
    buckets written (plain PostgreSQL) or refreshed views (TimescaleDB). `conn` must be in
    autocommit mode (TimescaleDB refuses to refresh inside a transaction block)."""
    if storage == "timescaledb":
        # Every continuous aggregate, the minute one included: after an import or a back-fill the
        # caller wants all resolutions to agree, not only the two plain PostgreSQL materializes.
        for rollup in ROLLUPS:
            width = _interval(rollup.width)
            refresh_aggregate(
                conn, rollup.view, now - TIMESCALE_REFRESH_BACK, _bucket_start(now, width)
            )
        return len(ROLLUPS)
    from ingest.metrics import METRICS

    written = 0
    with conn.transaction():
        locked = conn.execute(LOCK).fetchone()
        if not locked or not locked[0]:
            return 0  # another process is refreshing right now
        for m in MATERIALIZED:
            params = {
                "view": m.view,
                "until": _bucket_start(now, m.width),
                "width": m.width,
                "origin": datetime.fromisoformat(BUCKET_ORIGIN),
                "metrics": list(METRICS),
            }
            aggregate = (
                sql.SQL(FROM_READINGS)
                if m.source == "reading"
                else sql.SQL(FROM_ROLLUP).format(source=sql.Identifier(m.source))
            )
            statement = sql.SQL(RECOMPUTE).format(
                table=sql.Identifier(m.table), aggregate=aggregate
            )
            cur = conn.execute(statement, params)
            written += max(cur.rowcount, 0)
            conn.execute(ADVANCE, params)
    return written


def plain_schema() -> list[sql.Composable]:
    """The statements that give plain PostgreSQL materialized rollups (migration 0010)."""
    statements: list[sql.Composable] = [
        sql.SQL(CREATE_STATE),
        sql.SQL(CREATE_INVALIDATION),
        sql.SQL(CREATE_INVALIDATION_INDEX),
    ]
    for m in MATERIALIZED:
        statements += [
            sql.SQL("DROP VIEW IF EXISTS {}").format(sql.Identifier(m.view)),
            sql.SQL(CREATE_TABLE).format(table=sql.Identifier(m.table)),
            sql.SQL(CREATE_VIEW).format(
                view=sql.Identifier(m.view),
                table=sql.Identifier(m.table),
                view_name=sql.Literal(m.view),
                width=sql.Literal(m.width),
                origin=sql.SQL("TIMESTAMPTZ {}").format(sql.Literal(BUCKET_ORIGIN)),
            ),
            sql.SQL("INSERT INTO reading_rollup_state (view) VALUES ({})").format(
                sql.Literal(m.view)
            ),
        ]
    statements += [
        sql.SQL(CREATE_TRIGGER_FUNCTION),
        sql.SQL(CREATE_TRIGGER),
        sql.SQL(SEED_INVALIDATION),
    ]
    return statements
