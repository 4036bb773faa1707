"""Plain PostgreSQL: a BRIN index on reading.measured_at, for the queries that look at recent
readings of everyone (the alert engine's "who has new readings", every 5 s). Without it those are
full scans of the largest table. Readings arrive nearly in time order, which is what BRIN needs: it
is tiny and costs the ingest path almost nothing. TimescaleDB has its own time index on the
hypertable (created with it), so nothing is done there."""

from yoyo import step

from store.db import storage_kind

__depends__ = {"0010.rollups"}


def apply(conn):  # type: ignore[no-untyped-def]
    if storage_kind(conn) == "timescaledb":
        return
    conn.cursor().execute(
        "CREATE INDEX reading_measured_brin ON reading USING brin (measured_at) "
        "WITH (pages_per_range = 32)"
    )


def rollback(conn):  # type: ignore[no-untyped-def]
    conn.cursor().execute("DROP INDEX IF EXISTS reading_measured_brin")


steps = [step(apply, rollback)]
