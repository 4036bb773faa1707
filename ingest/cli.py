"""`eldercare ingest`, `eldercare readings` and `eldercare quarantine …`."""

from __future__ import annotations

import base64
import logging
import os
import signal
import threading
from typing import Annotated

import typer
from psycopg import sql
from psycopg.rows import dict_row

from eldercare import context
from eldercare.output import emit_json, fail, since, table
from ingest import queries
from ingest.contract.envelope import Reason
from ingest.settings import IngestSettings
from ingest.slots import claim_slot
from store.readiness import Reporter

quarantine_app = typer.Typer(
    help="Messages that were not accepted, with their reasons.", no_args_is_help=True
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def ingest(
    instance: Annotated[
        str | None,
        typer.Option(
            help="Stable name of this ingestor; a restart with the same name resumes its broker "
            "session (default: the lowest free numbered slot, see ingest/slots.py)."
        ),
    ] = None,
    role: Annotated[
        str,
        typer.Option(
            help="all (default), telemetry or events: run events in a process of their own so that "
            "emergencies never share an interpreter with the telemetry flood."
        ),
    ] = "all",
    leave: Annotated[
        bool,
        typer.Option(
            "--leave", help="On exit, end this instance's broker session for good (scaling down)."
        ),
    ] = False,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Only apply the retention once (old message ids, quarantine) and print what was "
            "deleted; every ingest process also does this every ELDERCARE_INGEST_MAINTENANCE_"
            "INTERVAL_S.",
        ),
    ] = False,
) -> None:
    """Consume device telemetry, events and status from the broker into the database.

    Run several (different --instance) to share the load: they form one MQTT v5 shared subscription.
    """
    from ingest.consumer import ROLES, Ingestor

    cfg = context.settings()
    context.configure_logging(cfg.log_level)
    overrides = {"instance": instance} if instance else {}
    ingest_cfg = IngestSettings(**overrides)  # type: ignore[arg-type]
    if prune:
        _prune_once(ingest_cfg)
        return
    if role not in ROLES:
        fail(f"--role must be one of {', '.join(ROLES)}")
    claim = None
    try:
        url = cfg.require_database_url()
        cfg.mqtt  # noqa: B018 - fail early with the message saying how to configure it
        if ingest_cfg.instance is None:
            claim = claim_slot(url, role)
            ingest_cfg = ingest_cfg.model_copy(update={"instance": claim.instance})
            logging.getLogger(__name__).info("claimed ingest slot %s", claim.instance)
    except RuntimeError as exc:
        fail(str(exc))
    if role == "telemetry" and ingest_cfg.telemetry_nice:
        os.nice(ingest_cfg.telemetry_nice)  # emergencies first (ingest/settings.py)
    if claim is not None:
        from ingest.consumer import exit_process

        # Lost (database restart): exit before another replica with this slot fights us for it.
        claim.watch(
            lambda: exit_process("ingest slot"),
            ingest_cfg.slot_check_interval_s,
            ingest_cfg.slot_check_deadline_s,
        )
    ingestor = Ingestor(cfg, ingest_cfg, role)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    ingestor.start()
    readiness = Reporter(cfg.require_database_url(), ingestor.readiness_checks())
    readiness.start()
    done.wait()
    readiness.stop()  # not ready any more from the moment it begins to stop
    ingestor.stop(leave=leave)
    if claim is not None:
        claim.release()


def _prune_once(ingest_cfg: IngestSettings) -> None:
    from dataclasses import asdict

    from ingest.contract.envelope import now_utc
    from ingest.maintenance import prune

    with context.database() as conn:  # autocommit: each batch commits
        pruned = prune(conn, ingest_cfg.retention, now_utc())
    emit_json(asdict(pruned))


def readings(
    resident: Annotated[int, typer.Option(help="Resident id.")],
    since_: Annotated[
        str, typer.Option("--since", help="How far back: 10m, 2h, 7d or an RFC 3339 time.")
    ] = "1h",
    metric: Annotated[str | None, typer.Option(help="Only this metric, e.g. spo2.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows.")] = 10_000,
    bucket: Annotated[
        str | None,
        typer.Option(
            help="Aggregate per minute, hour or day (avg/min/max/count), computed in the database."
        ),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Stored readings of a resident, oldest first (raw, or bucketed with --bucket)."""
    params = {"resident_id": resident, "since": since(since_), "metric": metric, "limit": limit}
    statement: sql.SQL | sql.Composed = sql.SQL(queries.SELECT_READINGS)
    if bucket is not None:
        if bucket not in ("minute", "hour", "day"):
            fail("--bucket must be minute, hour or day")
        view = sql.Identifier(f"reading_{bucket}")
        statement = sql.SQL(queries.SELECT_ROLLUP).format(view=view)
    with context.database() as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(statement, params).fetchall()
    if json:
        emit_json(rows)
        return
    if bucket is not None:
        table(
            f"Readings of resident {resident} per {bucket}",
            ["bucket", "metric", "avg", "min", "max", "n"],
            [
                (
                    r["bucket"],
                    r["metric"],
                    round(r["avg_value"], 1),
                    r["min_value"],
                    r["max_value"],
                    r["samples"],
                )
                for r in rows
            ],
        )
        return
    table(
        f"Readings of resident {resident}",
        ["measured at", "metric", "value", "device"],
        [(r["measured_at"], r["metric"], r["value"], r["device_id"]) for r in rows],
    )


@quarantine_app.command("list")
def quarantine_list(
    reason: Annotated[
        str | None, typer.Option(help=f"Only this reason: {', '.join(r.value for r in Reason)}.")
    ] = None,
    since_: Annotated[
        str | None, typer.Option("--since", help="Only newer than this (10m, 2h, …).")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 100,
    json: JsonOpt = False,
) -> None:
    """Rejected messages, newest first, with reason, detail and raw payload.

    With --json each has `payload` as text for reading (undecodable bytes shown as \\xNN) and
    `payload_base64`, the exact bytes."""
    params = {"reason": reason, "since": since(since_) if since_ else None, "limit": limit}
    with context.database() as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(queries.SELECT_QUARANTINE, params).fetchall()
    for row in rows:
        raw = bytes(row["payload"])
        row["payload"] = raw.decode("utf-8", errors="backslashreplace")
        row["payload_base64"] = base64.b64encode(raw).decode("ascii")
    if json:
        emit_json(rows)
        return
    table(
        "Quarantine",
        ["id", "received", "topic", "reason", "detail"],
        [(r["id"], r["received_at"], r["topic"], r["reason"], r["detail"]) for r in rows],
    )


@quarantine_app.command("count")
def quarantine_count(json: JsonOpt = False) -> None:
    """How many messages were rejected, by reason."""
    with context.database() as conn:
        counts = {reason: n for reason, n in conn.execute(queries.COUNT_QUARANTINE)}
    if json:
        emit_json({"total": sum(counts.values()), "by_reason": counts})
        return
    table("Quarantine by reason", ["reason", "messages"], list(counts.items()))
