"""Where the time-series layout is decided: TimescaleDB hypertable or plain PostgreSQL table.

Both layouts expose the same relations (reading, reading_minute, reading_hour, reading_day) with the
same columns, so every query in the project runs unchanged on either.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rollup:
    view: str
    width: str  # a PostgreSQL interval
    refresh_start: str  # how far back the continuous aggregate policy refreshes
    refresh_every: str


# Refresh windows reach past the ingest backfill window (7 days): a backlog uploaded late must still
# land in every rollup (invalidated buckets outside a policy's window are never refreshed).
ROLLUPS = (
    Rollup("reading_minute", "1 minute", "8 days", "1 minute"),
    Rollup("reading_hour", "1 hour", "8 days", "15 minutes"),
    Rollup("reading_day", "1 day", "35 days", "1 hour"),
)

# time_bucket's default origin is Monday 2000-01-03; date_bin gets the same origin so buckets match.
BUCKET_ORIGIN = "2000-01-03 00:00:00+00"
COMPRESS_AFTER = "7 days"
RAW_RETENTION = "5 years"


def choose_storage(setting: str, extension_available: bool) -> str:
    """'timescaledb' or 'postgresql' for the database setting auto | off | require."""
    if setting == "off":
        return "postgresql"
    if extension_available:
        return "timescaledb"
    if setting == "require":
        raise RuntimeError(
            "eldercare.timescale=require but the timescaledb extension is not installed in this "
            "PostgreSQL server: install it (the docker-compose image has it) or set "
            "ELDERCARE_TIMESCALE=auto"
        )
    return "postgresql"


def _select(bucket_expr: str) -> str:
    return (
        f"SELECT resident_id, metric, {bucket_expr} AS bucket, avg(value) AS avg_value, "
        "min(value) AS min_value, max(value) AS max_value, count(*) AS samples "
        "FROM reading GROUP BY resident_id, metric, bucket"
    )


def rollup_view_sql(rollup: Rollup, storage: str) -> list[str]:
    if storage == "timescaledb":
        return [
            f"CREATE MATERIALIZED VIEW {rollup.view} WITH (timescaledb.continuous, "
            "timescaledb.materialized_only = false) AS "
            + _select(f"time_bucket(INTERVAL '{rollup.width}', measured_at)")
            + " WITH NO DATA",
            f"SELECT add_continuous_aggregate_policy('{rollup.view}', "
            f"start_offset => INTERVAL '{rollup.refresh_start}', end_offset => INTERVAL '{rollup.width}', "
            f"schedule_interval => INTERVAL '{rollup.refresh_every}')",
        ]
    return [
        f"CREATE VIEW {rollup.view} AS "
        + _select(
            f"date_bin(INTERVAL '{rollup.width}', measured_at, TIMESTAMPTZ '{BUCKET_ORIGIN}')"
        )
    ]


def timescale_setup_sql() -> list[str]:
    return [
        "CREATE EXTENSION IF NOT EXISTS timescaledb",
        "SELECT create_hypertable('reading', 'measured_at', "
        "chunk_time_interval => INTERVAL '1 day', migrate_data => true)",
        "ALTER TABLE reading SET (timescaledb.compress, "
        "timescaledb.compress_segmentby = 'device_id, metric', "
        "timescaledb.compress_orderby = 'measured_at DESC')",
        f"SELECT add_compression_policy('reading', INTERVAL '{COMPRESS_AFTER}')",
        f"SELECT add_retention_policy('reading', INTERVAL '{RAW_RETENTION}')",
    ]
