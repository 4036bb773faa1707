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
    from ingest.bench import as_dict, run_bench

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
    from alerts.bench import as_dict, run_bench

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
