"""Time-series layout: TimescaleDB hypertable + compression + retention + continuous aggregates when
the extension is available (and not switched off), else plain views with the same columns."""

from yoyo import step

from store.timescale import ROLLUPS, choose_storage, rollup_view_sql, timescale_setup_sql

__depends__ = {"0001.core"}
# Continuous aggregates cannot be created inside a transaction block.
__transactional__ = False


def apply(conn):  # type: ignore[no-untyped-def]
    cur = conn.cursor()
    cur.execute("SELECT coalesce(current_setting('eldercare.timescale', true), 'auto')")
    setting = cur.fetchone()[0] or "auto"
    cur.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'")
    storage = choose_storage(setting, cur.fetchone()[0] > 0)
    statements = timescale_setup_sql() if storage == "timescaledb" else []
    for rollup in ROLLUPS:
        statements += rollup_view_sql(rollup, storage)
    for statement in statements:
        cur.execute(statement)


def rollback(conn):  # type: ignore[no-untyped-def]
    cur = conn.cursor()
    for rollup in ROLLUPS:
        cur.execute(f"DROP VIEW IF EXISTS {rollup.view}")
        cur.execute(f"DROP MATERIALIZED VIEW IF EXISTS {rollup.view}")


steps = [step(apply, rollback)]
