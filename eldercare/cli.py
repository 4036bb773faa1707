"""The `eldercare` command: every process and every operator task starts here."""

from __future__ import annotations

from typing import Annotated

import typer

from devices.cli import broker_app, devices_app, residents_app
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
