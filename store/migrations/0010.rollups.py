"""Rollups that stay fast over years: materialized hourly/daily buckets on plain PostgreSQL (see
store/rollups.py); on TimescaleDB, refresh windows that cover the whole backfill window, so a backlog
uploaded days late still reaches the hourly and minute aggregates."""

from yoyo import step

from store.db import storage_kind
from store.rollups import plain_schema
from store.timescale import ROLLUPS

__depends__ = {"0009.access_hardening"}
# Continuous-aggregate policies cannot be changed inside a transaction block.
__transactional__ = False


def apply(conn):  # type: ignore[no-untyped-def]
    cur = conn.cursor()
    if storage_kind(conn) == "timescaledb":
        for rollup in ROLLUPS:
            cur.execute(
                "SELECT remove_continuous_aggregate_policy(%s, if_exists => true)", (rollup.view,)
            )
            cur.execute(
                f"SELECT add_continuous_aggregate_policy('{rollup.view}', "
                f"start_offset => INTERVAL '{rollup.refresh_start}', "
                f"end_offset => INTERVAL '{rollup.width}', "
                f"schedule_interval => INTERVAL '{rollup.refresh_every}')"
            )
        return
    with conn.transaction():
        for statement in plain_schema():
            cur.execute(statement)


def rollback(conn):  # type: ignore[no-untyped-def]
    raise NotImplementedError("0010 has no rollback: restore from a backup instead")


steps = [step(apply, rollback)]
