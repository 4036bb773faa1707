"""The benchmarks' commands work end to end on a tiny scale (their numbers are not judged here)."""

from __future__ import annotations

from store import db
from tests.support import cli_json


def test_bench_api_generates_measures_and_cleans_up(env, database_url, storage_setting, conn):
    result = cli_json(
        "bench",
        "api",
        "--residents",
        "3",
        "--days",
        "3",
        "--requests",
        "5",
        "--warmup",
        "1",
        env=env,
    )
    # Two whole days and today so far: 3 residents × 5 metrics every 5 minutes.
    assert 3 * 5 * 288 * 2 < result["readings"] <= 3 * 5 * 288 * 3
    assert result["residents"] == 3 and result["days"] == 3
    # The layout the session runs on (make test runs this on plain PostgreSQL too).
    assert result["storage"] == (
        "postgresql" if storage_setting == "off" else db.storage_kind(conn)
    )
    queries = result["queries"]
    assert set(queries) == {"raw_24h", "hourly_30d", "daily_1y", "latest", "alert_queue"}
    # One metric's last 24 h, every 5 minutes (the window may cut one reading at either end).
    assert 286 <= queries["raw_24h"]["rows_per_request"] <= 289
    assert 2 <= queries["daily_1y"]["rows_per_request"] <= 4
    assert queries["latest"]["rows_per_request"] == 5
    # The bench doctor has all three residents; each has two unresolved alerts.
    assert queries["alert_queue"]["rows_per_request"] == 6
    for name, stats in queries.items():
        assert stats["requests"] == 5 and 0 < stats["p50_ms"] <= stats["p99_ms"], name
        assert result[f"{name}_p99_ms"] == stats["p99_ms"]
    with db.connection(db.with_dbname(database_url, "postgres")) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s", (result["database"],)
        ).fetchone()
    assert left == (0,), "the throwaway database is dropped"


def test_bench_api_refuses_to_reuse_a_database_that_is_not_a_bench(env, database_url):
    from tests.support import cli

    run = cli(
        "bench", "api", "--reuse", db.database_name(database_url), "--json", env=env, check=False
    )
    assert run.returncode != 0 and "not a kept bench database" in run.stderr
