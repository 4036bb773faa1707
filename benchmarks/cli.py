"""`eldercare bench …`: benchmarks (never timed unit tests); results go to docs/performance.md."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from eldercare import context
from eldercare.output import emit_json, fail, table

bench_app = typer.Typer(help="Benchmarks of the real pipeline on loopback.", no_args_is_help=True)


def _server_url() -> str:
    cfg = context.settings()
    if cfg.database_url:
        return cfg.database_url
    from pathlib import Path

    from eldercare.localdb import server_url
    from eldercare.settings import var_dir

    url, _private = server_url(Path(var_dir()))
    return url


@bench_app.command("ingest")
def bench_ingest(
    messages: Annotated[
        int,
        typer.Option(
            help="Messages pre-loaded in the broker for the capacity run (3 readings each)."
        ),
    ] = 100_000,
    rate: Annotated[
        int, typer.Option(help="Live publish rate for the latency run, messages/s.")
    ] = 2_000,
    seconds: Annotated[float, typer.Option(help="Duration of the latency run.")] = 15.0,
    devices: Annotated[int, typer.Option(help="Simulated devices the messages come from.")] = 50,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Capacity (messages/s drained with ack-after-commit and dedup), publish→commit latency at a
    steady rate (p50/p99) and the ingest process's peak memory. Uses a throwaway database on the
    configured PostgreSQL server and a private broker; leaves nothing behind."""
    from benchmarks.ingest import as_dict, run_bench

    os.environ.setdefault("ELDERCARE_LOG_LEVEL", "WARNING")
    try:
        result = run_bench(
            _server_url(),
            messages=messages,
            rate=rate,
            seconds=seconds,
            devices=devices,
            quiet=json,
        )
    except RuntimeError as exc:
        fail(str(exc))
    if json:
        emit_json(as_dict(result))
        return
    table(
        "eldercare bench ingest", ["measure", "value"], [(k, v) for k, v in as_dict(result).items()]
    )


@bench_app.command("alerts")
def bench_alerts(
    presses: Annotated[int, typer.Option(help="SOS presses (one resident and button each).")] = 100,
    interval: Annotated[float, typer.Option(help="Seconds between presses.")] = 0.2,
    backlog: Annotated[
        int, typer.Option(help="Telemetry messages queued before the run, so ingest is saturated.")
    ] = 150_000,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """SOS published → notification on the doctor's MQTT topic (p50/p99), measured while ingest is
    saturated: a telemetry backlog drains at full speed and a live flood comes on top. Runs ingest
    (telemetry and events processes) and the alert engine against a throwaway database and a
    private broker; leaves nothing behind."""
    from benchmarks.alerts import as_dict, run_bench

    try:
        result = run_bench(
            _server_url(), presses=presses, interval_s=interval, backlog=backlog, quiet=json
        )
    except RuntimeError as exc:
        fail(str(exc))
    if json:
        emit_json(as_dict(result))
        return
    table(
        "eldercare bench alerts", ["measure", "value"], [(k, v) for k, v in as_dict(result).items()]
    )


@bench_app.command("api")
def bench_api(
    residents: Annotated[int, typer.Option(help="Residents in the generated history.")] = 200,
    days: Annotated[int, typer.Option(help="Days of history, ending now.")] = 365,
    step: Annotated[
        int, typer.Option(help="Seconds between readings (5 metrics per resident each time).")
    ] = 300,
    requests: Annotated[int, typer.Option(help="Timed requests per query.")] = 300,
    warmup: Annotated[int, typer.Option(help="Untimed requests per query first.")] = 30,
    concurrency: Annotated[int, typer.Option(help="Clients sending at once.")] = 1,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the generated database (its name is printed).")
    ] = False,
    reuse: Annotated[
        str | None,
        typer.Option(help="Measure a database kept by an earlier --keep run; no generation."),
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """p50/p99 over HTTP of the resident page's queries (24 h raw, 30 d hourly, 1 y daily, latest
    values) and of the alert queue, as a doctor, on a history generated inside the database (by
    default 200 residents × 1 year × 5 metrics every 5 minutes ≈ 105 million readings; that takes
    tens of minutes and about 15 GB). Uses a throwaway database on the configured PostgreSQL server
    (TimescaleDB when installed) and `eldercare api` on a free port; leaves nothing behind unless
    --keep."""
    from benchmarks.api import as_dict, run_bench

    if min(residents, days, step, requests, concurrency) < 1 or warmup < 0:
        fail("--residents, --days, --step, --requests and --concurrency must be at least 1")
    try:
        result = run_bench(
            _server_url(),
            residents=residents,
            days=days,
            step_s=step,
            requests=requests,
            warmup=warmup,
            concurrency=concurrency,
            keep=keep,
            reuse=reuse,
            quiet=json,
            timescale=context.settings().timescale,
        )
    except RuntimeError as exc:
        fail(str(exc))
    out = as_dict(result)
    if json:
        emit_json(out)
        return
    table(
        "eldercare bench api",
        ["query", "requests", "rows", "p50 ms", "p99 ms", "max ms"],
        [
            (name, q.requests, q.rows_per_request, q.p50_ms, q.p99_ms, q.max_ms)
            for name, q in result.queries.items()
        ],
    )
    typer.echo(
        f"{result.readings:,} readings of {result.residents} residents over {result.days} days, "
        f"{result.storage}, {result.database_size_gb} GB"
        + (f", generated in {result.generated_in_s} s" if result.generated_in_s else "")
        + (f"; kept as database {result.database}" if keep else "")
    )
