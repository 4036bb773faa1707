"""`eldercare drill …`: the fault drill's command (benchmarks/drill.py does the work)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from eldercare.output import emit_json, fail, table

SCENARIO_HELP = """Scenario: db-outage | broker-restart | status-flood | all (default).

db-outage: the drill's own PostgreSQL is stopped for --duration seconds under live load, then
started; ingest holds a bounded inbox and the broker the rest (at 2,000 msg/s for 60 s that is
120,000 messages, about 30 MB of broker memory, stored after the restart).

broker-restart: the drill's own Mosquitto is stopped for --broker-down seconds under live load and
started again; sessions and queued messages come back from its persistence file.

status-flood: one device publishes status at --flood-rate/s (QoS 0) for --duration seconds while
the others keep publishing and pressing SOS; SOS latency must not suffer.

Every scenario also runs --lead seconds of load before and --tail seconds after the fault, presses
an SOS every --sos-interval seconds, then waits for the backlog to be stored. With the defaults,
`all` takes about 5 minutes, both cores, ~1 GB of disk in a temporary directory (removed) and
~1.5 GB of RAM at peak. Never touches the system's PostgreSQL or broker."""


def drill(
    scenario: Annotated[str, typer.Argument(help=SCENARIO_HELP, show_default=False)] = "all",
    duration: Annotated[
        float, typer.Option(help="Seconds the database stays down / the status flood lasts.")
    ] = 60.0,
    rate: Annotated[
        int, typer.Option(help="Live telemetry, messages/s (3 readings each).")
    ] = 2_000,
    flood_rate: Annotated[
        int, typer.Option(help="Status messages/s from the flooding device.")
    ] = 5_000,
    broker_down: Annotated[float, typer.Option(help="Seconds the broker stays stopped.")] = 5.0,
    lead: Annotated[float, typer.Option(help="Seconds of live load before each fault.")] = 10.0,
    tail: Annotated[float, typer.Option(help="Seconds of live load after each fault.")] = 10.0,
    sos_interval: Annotated[float, typer.Option(help="Seconds between SOS presses.")] = 0.5,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Fault drill on a private PostgreSQL and Mosquitto: database outage, broker restart and a
    status flood, each under live load. Prints messages published, stored, lost and duplicated,
    each process's peak RSS and the SOS p99 (press → device ack); exits 1 when anything was lost or
    stored twice.

    Each scenario, and what it costs, is described under Arguments below."""
    from benchmarks.drill import SCENARIOS, DrillOptions, as_dict, run_drill

    chosen = list(SCENARIOS) if scenario == "all" else [scenario]
    if scenario != "all" and scenario not in SCENARIOS:
        fail(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}, all")
    if min(rate, flood_rate) < 1 or min(duration, broker_down, sos_interval) <= 0:
        fail("--rate and --flood-rate must be at least 1; durations and intervals above 0")
    if min(lead, tail) < 0:
        fail("--lead and --tail must not be negative")
    os.environ.setdefault("ELDERCARE_LOG_LEVEL", "INFO")
    options = DrillOptions(
        duration_s=duration,
        rate=rate,
        flood_rate=flood_rate,
        broker_down_s=broker_down,
        lead_s=lead,
        tail_s=tail,
        sos_interval_s=sos_interval,
    )
    try:
        result = run_drill(chosen, options, quiet=json)
    except RuntimeError as exc:
        fail(str(exc))
    if json:
        emit_json(as_dict(result))
    else:
        table(
            "eldercare drill: messages",
            [
                "scenario",
                "published",
                "stored",
                "lost",
                "duplicated",
                "SOS pressed",
                "SOS stored",
                "SOS lost",
                "SOS dup",
                "SOS acked",
                "SOS re-sent",
                "SOS p50 ms",
                "SOS p99 ms",
                "s",
            ],
            [
                (
                    s.scenario,
                    s.published,
                    s.stored,
                    s.lost,
                    s.duplicated,
                    s.sos_pressed,
                    s.sos_stored,
                    s.sos_lost,
                    s.sos_duplicated,
                    s.sos_acked,
                    s.sos_resent,
                    s.sos_p50_ms,
                    s.sos_p99_ms,
                    s.seconds,
                )
                for s in result.scenarios
            ],
        )
        names = list(result.scenarios[0].peak_rss_mb) if result.scenarios else []
        table(
            "eldercare drill: peak RSS MiB (restarts)",
            ["scenario", *names],
            [
                (s.scenario, *(f"{s.peak_rss_mb[n]:g} ({s.restarts.get(n, 0)})" for n in names))
                for s in result.scenarios
            ],
        )
        flood = [s for s in result.scenarios if s.status_published]
        for s in flood:
            typer.echo(f"status flood: {s.status_published} published, {s.status_stored} stored")
        typer.echo(f"{result.machine}; logs in {result.logs}")
    if result.failed:
        raise typer.Exit(1)
