"""The live stream (Server-Sent Events) of alert changes for the residents the caller may see.

Every event carries the alert transition's id; a browser that reconnects sends it back as
Last-Event-ID and gets everything it missed, so a dropped connection loses nothing. Wake-ups come from
PostgreSQL NOTIFY (`eldercare_alert`), so changes made by any process on any machine arrive.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from api import queries
from api.access import Principal, audit, authenticate
from api.deps import client_address
from store.db import connect

router = APIRouter(prefix="/api/v1", tags=["live"])
HEARTBEAT_S = 15.0


def _events(url: str, caller: Principal, after: int, once: bool) -> Iterator[bytes]:
    with connect(url, autocommit=True, application_name="eldercare-api-stream") as conn:
        conn.execute("LISTEN eldercare_alert")
        yield b"retry: 2000\n\n"
        while True:
            rows = conn.execute(
                queries.STREAM_TRANSITIONS, {**caller.visibility(), "after": after}
            ).fetchall()
            for tid, alert_id, resident_id, rule, action, state, severity, at, actor in rows:
                data = {
                    "alert_id": alert_id,
                    "resident_id": resident_id,
                    "rule": rule,
                    "action": action,
                    "state": state,
                    "severity": severity,
                    "at": at.isoformat(),
                    "actor": actor,
                }
                yield b"id: %d\nevent: alert\ndata: %s\n\n" % (tid, orjson.dumps(data))
                after = tid
            if once:
                return
            # Drain first, then query again: the notifies() generator holds the connection.
            if not list(conn.notifies(timeout=HEARTBEAT_S, stop_after=1)):
                yield b": heartbeat\n\n"


@router.get("/stream", responses={200: {"content": {"text/event-stream": {}}}, 401: {}})
def stream(
    request: Request,
    access_token: Annotated[
        str | None, Query(description="the bearer token (EventSource cannot send headers)")
    ] = None,
    authorization: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    once: Annotated[
        bool, Query(description="send what is pending and end (for scripts and tests)")
    ] = False,
) -> StreamingResponse:
    """Alert changes as `event: alert` with `id:`; resume with Last-Event-ID."""
    url = request.app.state.database_url
    token = access_token or (
        authorization.removeprefix("Bearer ").strip() if authorization else None
    )
    with request.app.state.pool.connection() as conn:
        caller = authenticate(conn, token)
        if last_event_id is not None and last_event_id.isdigit():
            after = int(last_event_id)
        else:
            row = conn.execute(queries.LAST_TRANSITION).fetchone()
            after = int(row[0]) if row else 0
        audit(
            conn,
            caller,
            "read.stream",
            request.url.path,
            address=client_address(request),
            detail={"after": after},
        )
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(
        _events(url, caller, after, once), media_type="text/event-stream", headers=headers
    )
