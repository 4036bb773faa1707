"""The `eldercare` command: every process and every operator task starts here."""

from __future__ import annotations

from typing import Annotated

import typer

from alerts.cli import alerts_app
from alerts.news2_cli import news2
from api.cli import platforms_app, users_app
from benchmarks.cli import bench_app
from benchmarks.drill_cli import drill
from care.cli import care_app
from devices.cli import broker_app, devices_app, residents_app
from devices.simulator.cli import simulate
from eldercare import context
from eldercare.output import emit_json, fail
from eldercare.settings import redact_url
from ingest import cli as ingest_cli

app = typer.Typer(
    help="eldercare: home monitoring of elderly residents — devices over MQTT, readings in "
    "TimescaleDB/PostgreSQL, alerts to the contracted family doctor.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(residents_app, name="residents")
app.add_typer(devices_app, name="devices")
app.add_typer(broker_app, name="broker")
app.add_typer(ingest_cli.quarantine_app, name="quarantine")
app.command("ingest")(ingest_cli.ingest)
app.command("readings")(ingest_cli.readings)
app.add_typer(bench_app, name="bench")
app.command("drill")(drill)
app.command("simulate")(simulate)
app.add_typer(alerts_app, name="alerts")
app.command("news2")(news2)
app.add_typer(users_app, name="users")
app.add_typer(platforms_app, name="platforms")
app.add_typer(care_app, name="care")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


@app.command()
def config(json: JsonOpt = False) -> None:
    """Effective settings: what this directory's system (started by `make run`) is, or the env says."""
    cfg = context.settings()
    mqtt_host = mqtt_port = None
    if cfg.mqtt_url:
        mqtt_host, mqtt_port = cfg.mqtt.host, cfg.mqtt.port
    out = {
        "database_url": redact_url(cfg.database_url) if cfg.database_url else None,
        "mqtt_host": mqtt_host,
        "mqtt_port": mqtt_port,
        "http_url": cfg.http_url,
        "timescale": cfg.timescale,
    }
    if json:
        emit_json(out)
    else:
        for key, value in out.items():
            typer.echo(f"{key}: {value}")


@app.command()
def ready(
    components: Annotated[
        list[str] | None,
        typer.Argument(help="Components to check (default: all that /readyz requires)."),
    ] = None,
    here: Annotated[
        bool,
        typer.Option("--here", help="Count only processes on this host (a container healthcheck)."),
    ] = False,
) -> None:
    """Exit 0 when the components report ready for devices (ingest subscribed, the alert engine
    listening; see docs/operations.md), else 1 naming those that do not."""
    import socket

    from store import readiness

    wanted = components or list(readiness.REQUIRED)
    unknown = sorted(set(wanted) - set(readiness.REQUIRED))
    if unknown:
        fail(f"unknown component {', '.join(unknown)}; one of {', '.join(readiness.REQUIRED)}")
    with context.database() as conn:
        rows, now = readiness.load(conn)
    if here:
        host = socket.gethostname()
        rows = [row for row in rows if row.host == host]
    missing = readiness.not_ready(rows, wanted, now)
    if missing:
        fail(f"not ready: {', '.join(missing)}")
    typer.echo("ready")


@app.command()
def migrate(json: JsonOpt = False) -> None:
    """Create the database if needed and apply pending schema migrations."""
    from devices import service
    from store import db

    cfg = context.settings()
    try:
        url = cfg.require_database_url()
        db.ensure_database(url)
        applied = db.migrate(url, timescale=cfg.timescale)
    except RuntimeError as exc:
        fail(str(exc))
    with context.database(cfg) as conn:
        kind = db.storage_kind(conn)
        if cfg.mqtt_service_password:
            service.ensure_service_account(
                conn, username=cfg.mqtt_service_username, password=cfg.mqtt_service_password
            )
    if json:
        emit_json({"applied": applied, "storage": kind})
    else:
        typer.echo(f"migrations applied: {', '.join(applied) or 'none pending'}; storage: {kind}")


@app.command()
def api(
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on (default from settings).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings, 8000).")] = None,
) -> None:
    """Serve the HTTP API: /api/v1 for doctors, staff and platforms, the live stream, /metrics,
    /docs and the dashboard at /."""
    import uvicorn

    from api.app import create_app
    from api.cli import uvicorn_options
    from api.logs import uvicorn_log_config

    cfg = context.settings()
    uvicorn.run(
        create_app(cfg),
        host=host or cfg.http_host,
        port=port or cfg.http_port,
        log_level="info",
        log_config=uvicorn_log_config(),  # no tickets or tokens from URLs in the access log
        # Live streams never end by themselves: on shutdown, wait this long for them, then close.
        timeout_graceful_shutdown=5,
        **uvicorn_options(cfg),
    )


@app.command()
def run(
    residents: Annotated[int, typer.Option(help="Demo residents for the simulator.")] = 8,
    simulate: Annotated[bool, typer.Option(help="Run the device simulator too.")] = True,
    http_port: Annotated[
        int | None,
        typer.Option(
            help="HTTP port (default 8000 or the last one used if free; 0: any free port)."
        ),
    ] = None,
) -> None:
    """Start everything on this machine: database, broker, ingest, API and the device simulator.

    With no settings it uses the local PostgreSQL (or a private one under var/) and always the
    project's own Mosquitto; ELDERCARE_DATABASE_URL / ELDERCARE_MQTT_URL override. Ctrl-C stops it;
    running it again keeps the data.
    """
    from eldercare.supervisor import RunOptions
    from eldercare.supervisor import run as run_all

    try:
        code = run_all(RunOptions(residents=residents, simulate=simulate, http_port=http_port))
    except RuntimeError as exc:
        fail(str(exc))
    raise typer.Exit(code)
