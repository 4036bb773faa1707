"""`eldercare alerts …`: the engine process, and operators' list/show/ack/snooze/resolve."""

from __future__ import annotations

import signal
import threading
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from alerts import lifecycle, queries, transitions
from alerts.models import Alert, AlertError
from eldercare import context
from eldercare.output import emit_json, fail, parse_duration, table

alerts_app = typer.Typer(
    help="Alerts: the engine, and acting on alerts from the command line.", no_args_is_help=True
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


@alerts_app.command("run")
def run() -> None:
    """Run the alert engine: rules, timers, escalation and notifications (Ctrl-C stops)."""
    from alerts.engine import AlertEngine
    from alerts.settings import AlertSettings
    from store.readiness import ALERTS, Reporter

    cfg = context.settings()
    context.configure_logging(cfg.log_level)
    try:
        cfg.require_database_url()
        cfg.mqtt  # noqa: B018 - fail early with a message saying how to configure it
    except RuntimeError as exc:
        fail(str(exc))
    engine = AlertEngine(cfg, AlertSettings())
    engine.connect()
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    engine.start()
    readiness = Reporter(cfg.require_database_url(), {ALERTS: engine.listening.is_set})
    readiness.start()
    done.wait()
    readiness.stop()
    engine.close()


def _row(alert: Alert) -> dict[str, Any]:
    return asdict(alert)


@alerts_app.command("list")
def list_alerts(
    state: Annotated[
        str | None, typer.Option(help="unresolved | pending | open | acknowledged | resolved")
    ] = "unresolved",
    resident: Annotated[int | None, typer.Option(help="Only this resident.")] = None,
    severity: Annotated[str | None, typer.Option(help="info | warning | critical")] = None,
    limit: Annotated[int, typer.Option()] = 100,
    json: JsonOpt = False,
) -> None:
    """Alerts, critical first, newest first."""
    from psycopg.rows import class_row

    params = {"state": state, "resident_id": resident, "severity": severity, "limit": limit}
    with context.database() as conn, conn.cursor(row_factory=class_row(Alert)) as cur:
        alerts = cur.execute(queries.LIST_ALERTS, params).fetchall()
    if json:
        emit_json([_row(a) for a in alerts])
        return
    table(
        "Alerts",
        ["id", "severity", "state", "resident", "title", "opened", "count"],
        [
            (a.id, a.severity, a.state, a.resident_id, a.title, a.opened_at, a.occurrences)
            for a in alerts
        ],
    )


@alerts_app.command("show")
def show(alert_id: int, json: JsonOpt = False) -> None:
    """One alert with its timeline and notifications."""
    with context.database() as conn:
        try:
            alert = transitions.get_alert(conn, alert_id)
        except AlertError as exc:
            fail(str(exc))
        timeline = conn.execute(queries.TIMELINE, (alert_id,)).fetchall()
        sent = conn.execute(queries.NOTIFICATIONS_OF, (alert_id,)).fetchall()
    out = {
        **_row(alert),
        "timeline": [
            dict(
                zip(
                    ("at", "actor", "action", "from_state", "to_state", "severity", "note"),
                    t,
                    strict=True,
                )
            )
            for t in timeline
        ],
        "notifications": [
            dict(
                zip(
                    (
                        "kind",
                        "recipient_kind",
                        "recipient_id",
                        "channel",
                        "state",
                        "attempts",
                        "sent_at",
                        "last_error",
                    ),
                    n,
                    strict=True,
                )
            )
            for n in sent
        ],
    }
    if json:
        emit_json(out)
        return
    typer.echo(
        f"alert {alert.id}: {alert.title} [{alert.severity}, {alert.state}] resident {alert.resident_id}"
    )
    table(
        "Timeline",
        ["at", "actor", "action", "state", "note"],
        [(t[0], t[1], t[2], t[4], t[6]) for t in timeline],
    )


def _act(json: bool, action: Any, alert_id: int, **kwargs: Any) -> None:
    with context.database() as conn:
        try:
            alert = action(conn, alert_id, now=datetime.now(UTC), **kwargs)
        except AlertError as exc:
            fail(str(exc))
    if json:
        emit_json(_row(alert))
    else:
        typer.echo(f"alert {alert.id}: {alert.state}")


@alerts_app.command("ack")
def ack(
    alert_id: int,
    by: Annotated[str, typer.Option(help="Who acknowledges, e.g. doctor:3 or a name.")],
    note: Annotated[str | None, typer.Option()] = None,
    json: JsonOpt = False,
) -> None:
    """Acknowledge: reminders and escalation stop for this alert; SOS devices hear that help is coming."""
    _act(json, lifecycle.acknowledge, alert_id, actor=by, note=note)


@alerts_app.command("snooze")
def snooze(
    alert_id: int,
    doctor: Annotated[int, typer.Option(help="The doctor whose reminders pause.")],
    for_: Annotated[str, typer.Option("--for", help="How long: 15m, 1h …")] = "30m",
    json: JsonOpt = False,
) -> None:
    """Pause this alert's reminders for one doctor (refused for critical alerts)."""
    until = datetime.now(UTC) + parse_duration(for_)
    _act(json, lifecycle.snooze, alert_id, doctor_id=doctor, until=until)


@alerts_app.command("resolve")
def resolve(
    alert_id: int,
    by: Annotated[str, typer.Option(help="Who resolves it.")],
    note: Annotated[str, typer.Option(help="What was done (required).")],
    json: JsonOpt = False,
) -> None:
    """Resolve an alert with a note."""
    _act(json, lifecycle.resolve, alert_id, actor=by, note=note)


@alerts_app.command("comment")
def comment(
    alert_id: int,
    note: Annotated[str, typer.Option(help="The note for the alert's timeline.")],
    by: Annotated[
        str | None, typer.Option(help="Who writes it (default: cli:<your login name>).")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Add a note to an alert's timeline; its state does not change."""
    import getpass

    _act(json, lifecycle.comment, alert_id, actor=by or f"cli:{getpass.getuser()}", note=note)
