"""`eldercare users …` and `eldercare platforms …`: who may log in to the API."""

from __future__ import annotations

import secrets
import sys
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from api import access, platforms
from api.access import PLATFORM_SCOPES, AccessError
from eldercare import context
from eldercare.output import emit_json, fail, table
from eldercare.settings import Settings

users_app = typer.Typer(
    help="People who log in (doctors, duty desks, administrators).", no_args_is_help=True
)
platforms_app = typer.Typer(
    help="Platforms that sync through the API with a read-only key (scopes, rotation, revocation).",
    no_args_is_help=True,
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
ScopeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--scope", help=f"Repeatable: {', '.join(PLATFORM_SCOPES)} (default: all of them)."
    ),
]
ExpiresOpt = Annotated[
    int | None,
    typer.Option("--expires-in-days", min=1, help="The key stops working after this many days."),
]


def uvicorn_options(cfg: Settings) -> dict[str, Any]:
    """How `eldercare api` runs uvicorn: the client address (rate limits, the audit log) is taken
    from X-Forwarded-For only when the connection comes from one of the trusted proxies."""
    return {"proxy_headers": True, "forwarded_allow_ips": cfg.http_trusted_proxies}


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
    display_name: Annotated[
        str | None,
        typer.Option(help="The name people see when this login acts (default: its doctor's)."),
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
                display_name=display_name,
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


def _expiry(days: int | None) -> datetime | None:
    return datetime.now(UTC) + timedelta(days=days) if days else None


def _key_out(json: bool, out: dict[str, Any], what: str) -> None:
    if json:
        emit_json(out)
    else:
        typer.echo(f"{what}; API key (shown once): {out['api_key']}")


@platforms_app.command("add")
def add_platform(
    name: str,
    institution: Annotated[
        list[int], typer.Option(help="Institution whose residents it may read; repeatable.")
    ],
    scope: ScopeOpt = None,
    expires_in_days: ExpiresOpt = None,
    json: JsonOpt = False,
) -> None:
    """Register a platform and print its read-only API key (shown only this once)."""
    with context.database() as conn:
        try:
            client_id, key = platforms.add(
                conn,
                name=name,
                institution_ids=institution,
                scopes=tuple(scope or PLATFORM_SCOPES),
                expires_at=_expiry(expires_in_days),
            )
            platform = platforms.get(conn, client_id)
        except AccessError as exc:
            fail(exc.message)
    out = {
        "id": client_id,
        "name": name,
        "scopes": platform["keys"][0]["scopes"],
        "expires_at": platform["keys"][0]["expires_at"],
        "api_key": key,
    }
    _key_out(json, out, f"platform {name} registered (id {client_id})")


@platforms_app.command("list")
def list_platforms(json: JsonOpt = False) -> None:
    """Platforms, their institutions and keys (scopes, expiry, last use; never the secrets)."""
    with context.database() as conn:
        rows = platforms.listing(conn)
    if json:
        emit_json(rows)
        return
    table(
        "platforms",
        ("id", "name", "institutions", "status", "live keys", "scopes", "expires", "last used"),
        [
            (
                p["id"],
                p["name"],
                ", ".join(map(str, p["institution_ids"])),
                "disabled" if p["disabled_at"] else "active",
                len(live := [k for k in p["keys"] if k["revoked_at"] is None]),
                " ".join(live[0]["scopes"]) if live else "",
                live[0]["expires_at"] if live else "",
                live[0]["last_used_at"] if live else "",
            )
            for p in rows
        ],
    )


@platforms_app.command("rotate")
def rotate_platform(
    name: str, scope: ScopeOpt = None, expires_in_days: ExpiresOpt = None, json: JsonOpt = False
) -> None:
    """A new API key (shown once); the platform's earlier keys and tokens stop working now."""
    with context.database() as conn:
        try:
            platform_id = platforms.id_by_name(conn, name)
            key = platforms.rotate(
                conn,
                platform_id,
                scopes=tuple(scope) if scope else None,
                expires_at=_expiry(expires_in_days),
            )
        except AccessError as exc:
            fail(exc.message)
    _key_out(json, {"id": platform_id, "name": name, "api_key": key}, f"platform {name}: new key")


@platforms_app.command("revoke")
def revoke_platform(name: str, json: JsonOpt = False) -> None:
    """Disable the platform: every key and token it holds stops working now."""
    with context.database() as conn:
        try:
            platform = platforms.disable(conn, platforms.id_by_name(conn, name))
        except AccessError as exc:
            fail(exc.message)
    if json:
        emit_json(platform)
    else:
        typer.echo(f"platform {name} disabled; its keys are revoked")
