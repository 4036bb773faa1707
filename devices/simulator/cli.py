"""`eldercare simulate`: the command-line face of the simulator (registered in eldercare/cli.py)."""

from __future__ import annotations

import signal
import sys
import threading
from datetime import datetime, timedelta
from typing import Annotated

import psycopg
import typer

from devices import broker_auth
from devices.service import RegistryError
from devices.simulator.display import Display, LineDisplay, NullDisplay, RichDisplay, sim_label
from devices.simulator.episodes import EPISODES, EPISODES_BY_KEY
from devices.simulator.fleet import MAX_RESIDENTS
from devices.simulator.run import Options, Summary
from devices.simulator.run import simulate as run_simulation
from eldercare import context
from eldercare.output import emit_json, err_console, fail, parse_duration, table
from eldercare.settings import var_dir

EPISODE_HELP = (
    "Schedule this episode (repeatable; 'none' for normal data only). Default: every episode once, "
    "spread over the fleet within the first minutes. Known: " + ", ".join(EPISODES_BY_KEY) + "."
)


def local_broker_sync(conn: psycopg.Connection) -> None:
    """Tell the broker of `make run` (var/mosquitto) about new or rotated device logins at once."""
    base = var_dir() / "mosquitto"
    auth = base / "auth"
    if auth.is_dir():
        broker_auth.sync(conn, auth / "passwd", auth / "acl", base / "mosquitto.pid")
    # Otherwise a `eldercare broker sync --watch` (or production's equivalent) does it; the
    # simulator retries its connections meanwhile.


def simulate(
    residents: Annotated[
        int, typer.Option(min=1, max=MAX_RESIDENTS, help="How many demo residents to simulate.")
    ] = 5,
    duration: Annotated[
        str,
        typer.Option(
            help="Wall-clock run time, e.g. 90s, 10m, 2h; 0 runs until Ctrl-C or SIGTERM."
        ),
    ] = "0",
    speed: Annotated[
        float,
        typer.Option(
            min=0.01,
            help="Simulated seconds per real second (1 = real time). Faster runs replay the "
            "recent past so that no timestamp lies in the future, then go on in real time.",
        ),
    ] = 1.0,
    interval: Annotated[
        float, typer.Option(min=0.1, help="Simulated seconds between one device's readings.")
    ] = 5.0,
    episodes: Annotated[list[str] | None, typer.Option("--episode", help=EPISODE_HELP)] = None,
    fleet: Annotated[
        str,
        typer.Option(
            help="Name of the demo fleet; a re-run with the same name reuses its residents and "
            "devices (their broker passwords are rotated, as only hashes are stored)."
        ),
    ] = "demo",
    seed: Annotated[
        int, typer.Option(help="Random seed: the same seed gives the same residents and data.")
    ] = 1,
    list_episodes: Annotated[
        bool, typer.Option("--list-episodes", help="Print the episode table and exit.")
    ] = False,
    json: Annotated[
        bool, typer.Option("--json", help="Print one JSON summary at the end (no progress bar).")
    ] = False,
) -> None:
    """Simulate residents' devices publishing vitals, with scripted episodes, like real devices.

    Every resident wears a wristband; every 3rd also has a BP cuff, every 4th an SOS button.

    Devices log in with their own credentials and publish on the contract's device topics.

    Ctrl-C or SIGTERM ends the run: the devices report offline and a summary is printed.
    """
    if list_episodes:
        _print_episodes(json)
        return
    options = Options(
        residents=residents,
        duration=_duration(duration),
        speed=speed,
        interval=timedelta(seconds=interval),
        episodes=_episodes(episodes),
        fleet=fleet,
        seed=seed,
    )
    cfg = context.settings()
    try:
        endpoint = cfg.mqtt
    except RuntimeError as exc:
        fail(str(exc))
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in _SIGNALS}
    display = _display(json, options)
    try:
        with context.database(cfg) as conn:
            summary = run_simulation(
                conn,
                endpoint,
                options,
                after_provision=local_broker_sync,
                stop=stop,
                display=display,
            )
    except RegistryError as exc:
        fail(str(exc))
    except ConnectionError as exc:
        fail(str(exc))
    finally:
        display.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _print_summary(summary, json)


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _duration(text: str) -> timedelta | None:
    if text.strip() in ("0", "0s", ""):
        return None
    value = parse_duration(text)
    return value if value > timedelta(0) else None


def _episodes(keys: list[str] | None) -> tuple[str, ...] | None:
    if not keys:
        return None
    if keys == ["none"]:
        return ()
    unknown = [k for k in keys if k not in EPISODES_BY_KEY]
    if unknown:
        raise typer.BadParameter(
            f"unknown episode {', '.join(unknown)}; known: {', '.join(EPISODES_BY_KEY)}",
            param_hint="--episode",
        )
    return tuple(keys)


def _display(json: bool, options: Options) -> Display:
    if json:
        return NullDisplay()
    if err_console.is_terminal:
        total = options.duration.total_seconds() if options.duration else None
        return RichDisplay(err_console, f"{options.residents} residents", total)
    return LineDisplay(sys.stderr)


def _print_episodes(json: bool) -> None:
    rows = [(e.key, e.description, ", ".join(e.kinds)) for e in EPISODES]
    if json:
        emit_json(
            [
                {"key": k, "description": d, "device_kinds": kinds.split(", ")}
                for k, d, kinds in rows
            ]
        )
    else:
        table("Episodes", ["episode", "what happens", "device kinds (preferred first)"], rows)


def _print_summary(summary: Summary, json: bool) -> None:
    if json:
        emit_json(summary)
        return
    typer.echo(
        f"fleet {summary.fleet}: {summary.residents} residents, {summary.devices} devices "
        f"({summary.residents_created} residents and {summary.devices_created} devices new)"
    )
    by_channel = ", ".join(f"{n} {c}" for c, n in sorted(summary.messages_by_channel.items()))
    typer.echo(
        f"{summary.messages_published} messages published ({by_channel}); "
        f"{summary.messages_unacknowledged} unacknowledged; stopped by {summary.stopped_by} "
        f"after {summary.elapsed_s:.0f}s"
    )
    if summary.emergencies_resent or summary.emergencies_unanswered:
        typer.echo(
            f"emergencies re-sent for want of the backend's ack: {summary.emergencies_resent}; "
            f"never answered: {summary.emergencies_unanswered}"
            + (" — is `eldercare ingest` running?" if summary.emergencies_unanswered else "")
        )
    for item in summary.episodes_scheduled:
        at = sim_label(datetime.fromisoformat(item["at"]))
        state = "" if item["started"] else "  (not reached)"
        who = f"{item['device_id']} ({item['resident_name']})"
        typer.echo(f"  {at}  {item['key']:<20} {who}{state}")
    if summary.episodes_skipped:
        skipped = ", ".join(summary.episodes_skipped)
        typer.echo(f"skipped (no device of the fleet can show them): {skipped}")
