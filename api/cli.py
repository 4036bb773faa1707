"""`eldercare users …` and `eldercare platforms …`: who may log in to the API."""

from __future__ import annotations

import secrets
import sys
from typing import Annotated

import typer

from api import access
from api.access import AccessError
from eldercare import context
from eldercare.output import emit_json, fail

users_app = typer.Typer(
    help="People who log in (doctors, duty desks, administrators).", no_args_is_help=True
)
platforms_app = typer.Typer(
    help="Platforms that sync through the API with a read-only key.", no_args_is_help=True
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


@users_app.command("add")
def add_user(
    username: str,
    role: Annotated[str, typer.Option(help=", ".join(access.ROLES))],
    doctor: Annotated[
        int | None, typer.Option(help="The doctor this login belongs to (role doctor).")
    ] = None,
    institution: Annotated[
        int | None, typer.Option(help="Institution (duty_desk, institution_admin).")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Create a login; without --password-stdin a password is generated and shown only this once."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else secrets.token_urlsafe(12)
    if len(password) < 10:
        fail("use a password of at least 10 characters")
    with context.database() as conn:
        try:
            user_id = access.add_user(
                conn,
                username=username,
                password=password,
                role=role,
                doctor_id=doctor,
                institution_id=institution,
            )
        except AccessError as exc:
            fail(exc.message)
    out = {"id": user_id, "username": username, "role": role}
    if not password_stdin:
        out["password"] = password
    if json:
        emit_json(out)
    else:
        typer.echo(
            f"user {username} ({role}) created"
            + (f"; password (shown once): {password}" if not password_stdin else "")
        )


@platforms_app.command("add")
def add_platform(
    name: str,
    institution: Annotated[
        list[int], typer.Option(help="Institution whose residents it may read; repeatable.")
    ],
    json: JsonOpt = False,
) -> None:
    """Register a platform and print its read-only API key (shown only this once)."""
    with context.database() as conn:
        try:
            client_id, key = access.add_platform(conn, name=name, institution_ids=institution)
        except AccessError as exc:
            fail(exc.message)
    if json:
        emit_json({"id": client_id, "name": name, "api_key": key})
    else:
        typer.echo(f"platform {name} registered; API key (shown once): {key}")
