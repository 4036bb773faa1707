"""`eldercare residents …`, `eldercare devices …` and `eldercare broker …`."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from devices import broker_auth, service
from devices.models import DEVICE_KINDS, Device
from devices.service import EmergencyContact, RegistryError
from eldercare import context
from eldercare.output import emit_json, fail, table
from eldercare.settings import var_dir

residents_app = typer.Typer(
    help="Residents: the elderly people being monitored.", no_args_is_help=True
)
devices_app = typer.Typer(
    help="Devices: wristbands, cuffs, clips, buttons … and their broker logins.",
    no_args_is_help=True,
)
broker_app = typer.Typer(
    help="The broker's password and ACL files, generated from the registry.", no_args_is_help=True
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def _contact(text: str) -> EmergencyContact:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) < 2:
        raise typer.BadParameter("use NAME,PHONE[,RELATION], e.g. 李明,13800000000,son")
    return EmergencyContact(parts[0], parts[1], parts[2] if len(parts) > 2 else None)


@residents_app.command("add")
def residents_add(
    name: Annotated[str, typer.Option(help="Full name, e.g. 王秀英.")],
    archive_id: Annotated[
        str | None, typer.Option(help="17-digit health archive number (健康档案编号).")
    ] = None,
    birth_date: Annotated[str | None, typer.Option(help="YYYY-MM-DD.")] = None,
    gender: Annotated[str | None, typer.Option(help="female | male | other | unknown.")] = None,
    address: Annotated[str | None, typer.Option()] = None,
    contact: Annotated[
        list[str] | None, typer.Option(help="Emergency contact NAME,PHONE[,RELATION]; repeatable.")
    ] = None,
    spo2_scale: Annotated[
        int,
        typer.Option(help="NEWS2 SpO2 scale: 2 only if the doctor prescribed a target of 88-92%."),
    ] = 1,
    json: JsonOpt = False,
) -> None:
    """Register a resident."""
    try:
        born = date.fromisoformat(birth_date) if birth_date else None
    except ValueError:
        fail(f"--birth-date {birth_date!r} is not YYYY-MM-DD")
    with context.database() as conn:
        try:
            resident = service.add_resident(
                conn,
                name=name,
                birth_date=born,
                gender=gender,
                address=address,
                archive_id=archive_id,
                spo2_scale=spo2_scale,
                contacts=[_contact(c) for c in contact or []],
            )
        except RegistryError as exc:
            fail(str(exc))
    if json:
        emit_json(resident)
    else:
        typer.echo(f"resident {resident.id} added: {resident.name}")


@residents_app.command("list")
def residents_list(json: JsonOpt = False) -> None:
    """List residents."""
    with context.database() as conn:
        residents = service.list_residents(conn)
    if json:
        emit_json(residents)
        return
    table(
        "Residents",
        ["id", "name", "archive", "born", "gender"],
        [(r.id, r.name, r.archive_id, r.birth_date, r.gender) for r in residents],
    )


@devices_app.command("add")
def devices_add(
    device_id: Annotated[str, typer.Argument(help="The device's id, also its MQTT username.")],
    kind: Annotated[str, typer.Option(help=f"One of: {', '.join(DEVICE_KINDS)}.")],
    resident: Annotated[int | None, typer.Option(help="Bind to this resident now.")] = None,
    model: Annotated[str | None, typer.Option(help="Vendor model name.")] = None,
    json: JsonOpt = False,
) -> None:
    """Register a device and create its broker login (the password is shown only this once)."""
    with context.database() as conn:
        try:
            new = service.add_device(
                conn, device_id=device_id, kind=kind, model=model, resident_id=resident
            )
        except RegistryError as exc:
            fail(str(exc))
    out = {
        **_device_json(new.device),
        "mqtt_username": new.mqtt_username,
        "mqtt_password": new.mqtt_password,
    }
    if json:
        emit_json(out)
    else:
        typer.echo(f"device {device_id} added. MQTT username: {new.mqtt_username}")
        typer.echo(f"MQTT password (shown only now, store it in the device): {new.mqtt_password}")


def _device_json(device: Device) -> dict[str, object]:
    from dataclasses import asdict

    return asdict(device)


@devices_app.command("list")
def devices_list(
    resident: Annotated[int | None, typer.Option(help="Only this resident's devices.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include retired devices.")] = False,
    json: JsonOpt = False,
) -> None:
    """List devices with binding, presence and battery."""
    with context.database() as conn:
        devices = service.list_devices(conn, resident_id=resident, include_retired=all_)
    if json:
        emit_json(devices)
        return
    table(
        "Devices",
        ["device", "kind", "status", "resident", "online", "battery", "last seen"],
        [
            (d.device_id, d.kind, d.status, d.resident_id, d.online, d.battery, d.last_seen_at)
            for d in devices
        ],
    )


def _change(action: str, device_id: str, json: bool, **kwargs: object) -> None:
    with context.database() as conn:
        try:
            device = getattr(service, action)(conn, device_id=device_id, **kwargs)
        except RegistryError as exc:
            fail(str(exc))
    if json:
        emit_json(device)
    else:
        typer.echo(
            f"device {device_id}: {action} done (resident {device.resident_id}, {device.status})"
        )


@devices_app.command("bind")
def devices_bind(
    device_id: str,
    resident: Annotated[int, typer.Option(help="Resident to bind to.")],
    json: JsonOpt = False,
) -> None:
    """Bind a device to a resident from now on (ends its earlier binding)."""
    _change("bind", device_id, json, resident_id=resident)


@devices_app.command("unbind")
def devices_unbind(device_id: str, json: JsonOpt = False) -> None:
    """End the device's binding: its readings are refused until it is bound again."""
    _change("unbind", device_id, json)


@devices_app.command("retire")
def devices_retire(device_id: str, json: JsonOpt = False) -> None:
    """Take a device out of service: binding ended, broker login revoked, its data kept."""
    _change("retire", device_id, json)


@devices_app.command("rotate")
def devices_rotate(device_id: str, json: JsonOpt = False) -> None:
    """Give the device a new broker password (the old one stops working at the next broker sync)."""
    with context.database() as conn:
        try:
            new = service.rotate_credentials(conn, device_id=device_id)
        except RegistryError as exc:
            fail(str(exc))
    if json:
        emit_json(
            {
                "device_id": device_id,
                "mqtt_username": new.mqtt_username,
                "mqtt_password": new.mqtt_password,
            }
        )
    else:
        typer.echo(f"new MQTT password for {device_id} (shown only now): {new.mqtt_password}")


@broker_app.command("sync")
def broker_sync(
    auth_dir: Annotated[
        Path | None,
        typer.Option(help="Where to write passwd and acl (default: var/mosquitto/auth)."),
    ] = None,
    pid_file: Annotated[
        Path | None, typer.Option(help="Mosquitto's pid file, to send it SIGHUP after a change.")
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Keep running; re-sync on every registry change.")
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Write the broker's password and ACL files from the registry and reload the broker."""
    base = var_dir() / "mosquitto"
    auth = auth_dir or base / "auth"
    pid = pid_file or (base / "mosquitto.pid" if auth_dir is None else None)
    cfg = context.settings()
    with context.database(cfg) as conn:
        changed = broker_auth.sync(conn, auth / "passwd", auth / "acl", pid)
        if json:
            emit_json({"changed": changed, "accounts": len(broker_auth.active_accounts(conn))})
        if not watch:
            return
        context.configure_logging(cfg.log_level)
        conn.execute("LISTEN eldercare_registry")
        typer.echo(f"watching the registry; auth files in {auth}", err=True)
        while True:
            # Drain first, then query: the notifies() generator holds the connection. A burst of
            # changes (a fleet being registered) becomes one sync.
            if list(conn.notifies(timeout=30, stop_after=1)):
                list(conn.notifies(timeout=0.05))
                broker_auth.sync(conn, auth / "passwd", auth / "acl", pid)
