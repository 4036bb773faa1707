"""`eldercare care …`: institutions, doctors, contracts, agreements, policies, thresholds, webhooks,
air or oxygen, doctors' app logins (and a reference app to check one)."""

from __future__ import annotations

import json as jsonlib
import os
import signal
import threading
from typing import Annotated, Any

import typer

from alerts.channels.mqtt import doctor_acks_topic, doctor_topic
from care import service
from care.service import CareError
from devices import service as devices_service
from devices.service import RegistryError
from eldercare import context
from eldercare.output import emit_json, fail

care_app = typer.Typer(
    help="Care relationships: who looks after whom, and who is alerted when.", no_args_is_help=True
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def _run(json: bool, action: Any, **kwargs: Any) -> None:
    with context.database() as conn:
        try:
            result = action(conn, **kwargs)
        except CareError as exc:
            fail(str(exc))
    if json:
        emit_json(result)
    else:
        typer.echo(", ".join(f"{k}: {v}" for k, v in (result or {}).items()))


@care_app.command("institution")
def institution(
    name: Annotated[str, typer.Option(help="e.g. 某某社区卫生服务中心")],
    kind: Annotated[str, typer.Option(help=", ".join(service.INSTITUTION_KINDS))],
    phone: Annotated[str | None, typer.Option()] = None,
    json: JsonOpt = False,
) -> None:
    """Add an institution (with its duty desk, which receives alerts without a contracted doctor)."""
    _run(json, service.add_institution, name=name, kind=kind, phone=phone)


@care_app.command("doctor")
def doctor(
    name: Annotated[str, typer.Option()],
    institution: Annotated[int | None, typer.Option(help="Institution id.")] = None,
    team: Annotated[
        str | None, typer.Option(help="Family-doctor team name (家庭医生团队).")
    ] = None,
    phone: Annotated[str | None, typer.Option()] = None,
    email: Annotated[str | None, typer.Option()] = None,
    json: JsonOpt = False,
) -> None:
    """Add a doctor."""
    _run(
        json,
        service.add_doctor,
        name=name,
        institution_id=institution,
        team=team,
        phone=phone,
        email=email,
    )


@care_app.command("preferences")
def preferences(
    doctor_id: Annotated[int, typer.Argument(help="Doctor id.")],
    channels: Annotated[
        str | None,
        typer.Option(help='JSON, e.g. {"critical": ["mqtt", "email"], "warning": ["mqtt"]}'),
    ] = None,
    quiet: Annotated[
        str | None,
        typer.Option(help="Quiet hours HH:MM-HH:MM in the doctor's zone; never for critical."),
    ] = None,
    timezone: Annotated[str | None, typer.Option(help="e.g. Asia/Shanghai")] = None,
    json: JsonOpt = False,
) -> None:
    """Set a doctor's channels per severity and quiet hours."""
    start = end = None
    if quiet:
        try:
            start, end = quiet.split("-")
        except ValueError:
            fail("--quiet takes HH:MM-HH:MM, e.g. 22:00-07:00")
    try:
        parsed = jsonlib.loads(channels) if channels else None
    except ValueError:
        fail('--channels takes JSON, e.g. {"warning": ["mqtt"]}')
    _run(
        json,
        service.set_preferences,
        doctor_id=doctor_id,
        channels=parsed,
        quiet_start=start,
        quiet_end=end,
        timezone=timezone,
    )


@care_app.command("contract")
def contract(
    resident: Annotated[int, typer.Option(help="Resident id.")],
    doctor: Annotated[int, typer.Option(help="Doctor id.")],
    json: JsonOpt = False,
) -> None:
    """Sign a resident with a family doctor (家庭医生签约), valid from now."""
    _run(json, service.add_contract, resident_id=resident, doctor_id=doctor)


@care_app.command("home")
def home(
    resident: Annotated[int, typer.Option(help="Resident id.")],
    institution: Annotated[int, typer.Option(help="The care home or community health centre.")],
) -> None:
    """Say which institution a resident belongs to (care home, or the area's health centre)."""
    with context.database() as conn:
        try:
            service.set_resident_institution(conn, resident_id=resident, institution_id=institution)
        except CareError as exc:
            fail(str(exc))
    typer.echo(f"resident {resident} belongs to institution {institution}")


@care_app.command("agreement")
def agreement(
    care_home: Annotated[int, typer.Option(help="Care home institution id.")],
    medical: Annotated[int, typer.Option(help="Partner medical institution id.")],
    json: JsonOpt = False,
) -> None:
    """Record a care home's medical cooperation agreement."""
    _run(json, service.add_agreement, care_home_id=care_home, medical_institution_id=medical)


@care_app.command("policy")
def policy(
    severity: Annotated[str, typer.Option(help="info | warning | critical")],
    tiers: Annotated[
        str,
        typer.Option(
            help='JSON list, e.g. [{"after_s": 0, "notify": ["contracted_doctor"]}, '
            '{"after_s": 600, "notify": ["duty_desk"]}]'
        ),
    ],
    institution: Annotated[
        int | None, typer.Option(help="Institution id (default: the default policy).")
    ] = None,
    reminder_every: Annotated[
        int | None, typer.Option(help="Seconds between reminders until acknowledged.")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Set the escalation policy for a severity."""
    try:
        parsed = jsonlib.loads(tiers)
    except ValueError:
        fail("--tiers takes a JSON list of tiers")
    _run(
        json,
        service.set_policy,
        institution_id=institution,
        severity=severity,
        tiers=parsed,
        reminder_every_s=reminder_every,
    )


@care_app.command("threshold")
def threshold(
    resident: Annotated[int, typer.Option(help="Resident id.")],
    metric: Annotated[str, typer.Option(help="e.g. systolic_bp")],
    low: Annotated[
        float | None, typer.Option(help="Low limit; left out: the rule's default stays.")
    ] = None,
    high: Annotated[
        float | None, typer.Option(help="High limit; left out: the rule's default stays.")
    ] = None,
    by: Annotated[str, typer.Option(help="Who sets it (doctor).")] = "cli",
    json: JsonOpt = False,
) -> None:
    """Override a metric's alert thresholds for one resident, one side or both.

    A side left out keeps the rule's default (--high 200 for systolic_bp leaves hypotension at
    ≤ 90); neither side puts the metric back on the defaults. Prints the limits now in force.
    """
    _run(
        json,
        service.set_threshold,
        resident_id=resident,
        metric=metric,
        low=low,
        high=high,
        set_by=by,
    )


@care_app.command("webhook")
def webhook(
    name: Annotated[str, typer.Option()],
    url: Annotated[str, typer.Option()],
    secret: Annotated[str, typer.Option(help="Shared HMAC secret (never printed back).")],
    min_severity: Annotated[str, typer.Option(help="info | warning | critical")] = "warning",
    institution: Annotated[
        int | None,
        typer.Option(
            help="Institution id: only its alerts, with the emergency contacts to call. "
            "Left out: every institution's alerts, never with contacts."
        ),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Subscribe a platform (e.g. a 12349 service platform) to alerts by signed webhook."""
    _run(
        json,
        service.add_webhook,
        name=name,
        url=url,
        secret=secret,
        min_severity=min_severity,
        institution_id=institution,
    )


@care_app.command("oxygen")
def oxygen(
    resident: Annotated[int, typer.Option(help="Resident id.")],
    breathing: Annotated[
        str,
        typer.Option(
            help="air (no oxygen at home) | oxygen (worn continuously) | unknown (e.g. at night only)"
        ),
    ],
    by: Annotated[str, typer.Option(help="Who records it (doctor).")] = "cli",
    json: JsonOpt = False,
) -> None:
    """Record whether a resident breathes air or supplemental oxygen, for NEWS2.

    NEWS2 scores oxygen 2, and on SpO2 scale 2 whether a saturation of 93 % or more is harmless
    (air) or over-oxygenation (oxygen). Alerts name this record as the source, never as measured.
    """
    _run(json, service.set_breathing, resident_id=resident, breathing=breathing, set_by=by)


@care_app.command("app-login")
def app_login(
    doctor_id: Annotated[int, typer.Argument(help="Doctor (or duty desk) id.")],
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Replace the password of the login in force.")
    ] = False,
    revoke: Annotated[bool, typer.Option("--revoke", help="End the app's login.")] = False,
    json: JsonOpt = False,
) -> None:
    """Create the broker login of a doctor's app (password shown only this once).

    The app reads only eldercare/v1/doctors/ID/alerts and acknowledges each notification on
    eldercare/v1/doctors/ID/acks (docs/alerts.md). Takes effect at the next `eldercare broker sync`
    (at once under `broker sync --watch`).
    """
    if rotate and revoke:
        fail("--rotate or --revoke, not both")
    with context.database() as conn:
        try:
            if revoke:
                username = devices_service.revoke_doctor_login(conn, doctor_id=doctor_id)
            else:
                login = devices_service.create_doctor_login(
                    conn, doctor_id=doctor_id, rotate=rotate
                )
        except RegistryError as exc:
            fail(str(exc))
    if revoke:
        if json:
            emit_json({"doctor_id": doctor_id, "mqtt_username": username, "revoked": True})
        else:
            typer.echo(f"app login {username} of doctor {doctor_id} revoked")
        return
    out = {
        "doctor_id": doctor_id,
        "mqtt_username": login.username,
        "mqtt_password": login.password,
        "alerts_topic": doctor_topic(doctor_id),
        "acks_topic": doctor_acks_topic(doctor_id),
    }
    if json:
        emit_json(out)
        return
    typer.echo(f"app login for doctor {doctor_id}. MQTT username: {login.username}")
    typer.echo(f"MQTT password (shown only now, enter it in the app): {login.password}")
    typer.echo(f"subscribe to {out['alerts_topic']}; acknowledge on {out['acks_topic']}")


@care_app.command("app-listen")
def app_listen(
    doctor_id: Annotated[int, typer.Argument(help="Doctor (or duty desk) id.")],
    json: Annotated[
        bool, typer.Option("--json", help="Print each notification as one JSON line.")
    ] = False,
) -> None:
    """Act as the doctor's app: log in with its broker login, print every notification and
    acknowledge it (which makes it delivered). Checks an app login end to end; Ctrl-C stops.

    The password is read from ELDERCARE_APP_PASSWORD, or asked for (never a command-line
    argument: other users of the machine could read it in the process list).
    """
    from alerts.app_client import AppLoginRefused, DoctorAppClient

    password = os.environ.get("ELDERCARE_APP_PASSWORD") or typer.prompt(
        f"MQTT password of {devices_service.doctor_login_name(doctor_id)}", hide_input=True
    )

    def show(body: dict[str, Any]) -> None:
        if json:
            typer.echo(jsonlib.dumps(body, ensure_ascii=False), nl=True)
            return
        alert = body.get("alert") or {}
        resident = (alert.get("resident") or {}).get("name") or alert.get("device_id") or "?"
        typer.echo(
            f"#{body.get('notification_id')} {body.get('kind')} {alert.get('severity')} "
            f"alert {alert.get('id')} · {resident} · {alert.get('title')}"
        )

    try:
        client = DoctorAppClient(
            context.settings().mqtt,
            doctor_id=doctor_id,
            username=devices_service.doctor_login_name(doctor_id),
            password=password,
            on_notification=show,
        )
    except (AppLoginRefused, RuntimeError) as exc:
        fail(str(exc))
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    typer.echo(f"listening as doctor {doctor_id}'s app; acknowledging each notification", err=True)
    done.wait()
    client.close()
