"""The live stream (Server-Sent Events): alert changes and latest vitals of the caller's residents.

`event: alert` carries the alert transition's id; a client that reconnects sends the last one back
(Last-Event-ID, or ?last_event_id= with a new ticket) and gets everything it missed. `event: vitals`
has no id (resuming is about alerts). A browser's EventSource cannot send an Authorization header,
so it first asks for a single-use ticket valid 60 s: no session token in any URL or access log.
Every heartbeat the stream re-checks the caller's token and who they may see; a revoked or expired
token ends it with `event: end`. Waiting streams hold no thread: they wait on api/hub.py's queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import psycopg
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api import queries
from api.access import AccessError, Principal, audit, authenticate, check_scopes
from api.deps import MAX_ID, Caller, Conn, client_address
from api.hub import AlertChange, LiveHub, Vitals, alert_event

router = APIRouter(prefix="/api/v1", tags=["live"])
TICKET_LIFETIME_S = 60
SENT_MEMORY = 4096  # alert ids a stream remembers having sent, to drop the hub's repeats


class Ticket(BaseModel):
    ticket: str
    expires_at: datetime


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@router.post("/stream/ticket", response_model=Ticket, responses={401: {}})
def stream_ticket(caller: Caller, conn: Conn) -> Ticket:
    """A single-use ticket (valid 60 s) that opens one stream: GET /api/v1/stream?ticket=…"""
    ticket = secrets.token_urlsafe(32)
    conn.execute(queries.PURGE_STREAM_TICKETS)
    row = conn.execute(
        queries.INSERT_STREAM_TICKET,
        (_hash(ticket), caller.token_id, Jsonb(asdict(caller)), TICKET_LIFETIME_S),
    ).fetchone()
    assert row is not None
    return Ticket(ticket=ticket, expires_at=row[0])


class _Stream:
    """One open stream: who is watching, and what they may see (refreshed every heartbeat)."""

    def __init__(self, pool: ConnectionPool, caller: Principal, visible: frozenset[int] | None):
        self.pool = pool
        self.caller = caller
        self.visible = visible  # None: everyone (a system admin)
        # Vitals are readings: a platform key sees them only with read:readings.
        self.reads_vitals = caller.kind != "platform" or "read:readings" in caller.scopes

    def sees(self, item: AlertChange | Vitals) -> bool:
        if self.visible is None:
            return True
        if item.resident_id is not None:
            return item.resident_id in self.visible
        # An alert without a resident (queries._SEE_A): only for the duty desks notified of it.
        assert isinstance(item, AlertChange)
        caller = self.caller
        return caller.role == "duty_desk" and (
            bool(item.desk_institutions & set(caller.institutions))
            or (caller.doctor_id is not None and caller.doctor_id in item.desk_ids)
        )

    def recheck(self) -> str | None:
        """Why the stream must end now, or None; refreshes who the caller may see."""
        try:
            with self.pool.connection() as conn:
                problem = _token_problem(conn, self.caller)
                if problem is None:
                    self.visible = _visible_residents(conn, self.caller)
        except psycopg.Error:
            # A session that cannot be checked is not trusted; the client reconnects later.
            return "the server cannot check the session right now; connect again"
        return problem

    def catch_up(self, after: int) -> list[AlertChange]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                queries.STREAM_TRANSITIONS, {**self.caller.visibility(), "after": after}
            ).fetchall()
        return [alert_event(row) for row in rows]


def _token_problem(conn: Conn, caller: Principal) -> str | None:
    row = conn.execute(queries.TOKEN_STILL_VALID, (caller.token_id,)).fetchone()
    if row is None:
        return "the token was revoked or its account or platform disabled; log in again"
    if row[0] is not None and row[0] <= datetime.now(UTC):
        return "the token has expired; log in again"
    return None


def _visible_residents(conn: Conn, caller: Principal) -> frozenset[int] | None:
    visibility = caller.visibility()
    if visibility["everyone"]:
        return None
    return frozenset(r[0] for r in conn.execute(queries.VISIBLE_RESIDENT_IDS, visibility))


def _redeem(conn: Conn, ticket: str) -> Principal:
    row = conn.execute(queries.REDEEM_STREAM_TICKET, (_hash(ticket),)).fetchone()
    if row is None or not row[1]:
        raise AccessError(
            401, "unknown, used or expired stream ticket: POST /api/v1/stream/ticket for a new one"
        )
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in row[0].items()}
    caller = Principal(**fields)
    problem = _token_problem(conn, caller)
    if problem:
        raise AccessError(401, problem)
    return caller


def _open(
    request: Request, ticket: str | None, bearer: str | None, after: int | None
) -> tuple[_Stream, int]:
    """Authenticate, find where to start, audit; in a worker thread (the pool is synchronous)."""
    pool: ConnectionPool = request.app.state.pool
    with pool.connection() as conn:
        caller = _redeem(conn, ticket) if ticket else authenticate(conn, bearer)
        check_scopes(caller, "/api/v1/stream")  # a platform needs read:alerts
        if after is None:
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
        return _Stream(pool, caller, _visible_residents(conn, caller)), after


def _alert(change: AlertChange, stream: _Stream) -> bytes:
    data = change.data
    if stream.caller.kind != "user":  # platforms see who acted as an opaque id, not by name
        data = {**data, "actor_name": data["actor"]}
    return b"id: %d\nevent: alert\ndata: %s\n\n" % (change.id, orjson.dumps(data))


def _event(name: str, data: Any, event_id: int | None = None) -> bytes:
    head = b"id: %d\n" % event_id if event_id is not None else b""
    return head + b"event: %s\ndata: %s\n\n" % (name.encode(), orjson.dumps(data))


async def _events(hub: LiveHub, stream: _Stream, after: int, once: bool) -> AsyncIterator[bytes]:
    # Subscribe before reading the backlog: nothing committed in between falls through the gap
    # (what arrives twice is dropped by id).
    subscription = hub.subscribe()
    sent: set[int] = set()

    async def backlog(start: int) -> AsyncIterator[bytes]:
        while True:
            changes = await run_in_threadpool(stream.catch_up, start)
            for change in changes:
                if change.id not in sent:
                    sent.add(change.id)
                    yield _alert(change, stream)
                start = max(start, change.id)
            if len(changes) < 500:
                return

    try:
        yield b"retry: 2000\n\n"
        # Where this stream starts, so a client can resume even if no alert comes before a drop.
        yield _event("ready", {"after": after}, after)
        async for chunk in backlog(after):
            yield chunk
        if once:
            return
        loop = asyncio.get_running_loop()
        next_check = loop.time() + hub.timing.heartbeat_s
        while True:
            if subscription.overflowed:
                subscription.overflowed = False
                subscription.drain()
                async for chunk in backlog(max(sent, default=after)):
                    yield chunk
            try:
                item = await asyncio.wait_for(
                    subscription.queue.get(), max(0.0, next_check - loop.time())
                )
            except TimeoutError:
                problem = await run_in_threadpool(stream.recheck)
                if problem:
                    yield _event("end", {"reason": problem})
                    return
                yield b": heartbeat\n\n"
                next_check = loop.time() + hub.timing.heartbeat_s
                continue
            if not stream.sees(item):
                continue
            if isinstance(item, Vitals):
                if stream.reads_vitals:
                    yield _event("vitals", item.data)
            elif item.id not in sent:
                sent.add(item.id)
                if len(sent) > SENT_MEMORY:
                    for old in sorted(sent)[: SENT_MEMORY // 2]:
                        sent.discard(old)
                yield _alert(item, stream)
    finally:
        hub.unsubscribe(subscription)


@router.get("/stream", responses={200: {"content": {"text/event-stream": {}}}, 401: {}, 422: {}})
async def stream(
    request: Request,
    ticket: Annotated[
        str | None,
        Query(max_length=200, description="from POST /api/v1/stream/ticket (single use, 60 s)"),
    ] = None,
    last_event_id_query: Annotated[
        int | None,
        Query(
            alias="last_event_id",
            ge=0,
            le=MAX_ID,
            description="resume after this event (for a new EventSource, which cannot send "
            "Last-Event-ID itself)",
        ),
    ] = None,
    authorization: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    once: Annotated[
        bool, Query(description="send what is pending and end (for scripts and tests)")
    ] = False,
) -> StreamingResponse:
    """`event: alert` (with `id:`) for alert changes, `event: vitals` for new measurements,
    `event: end` when the token is revoked or expires. Authenticate with ?ticket= (browsers) or
    an Authorization header; resume with Last-Event-ID or ?last_event_id=."""
    if "access_token" in request.query_params:
        raise AccessError(
            401,
            "a token in the URL is refused (URLs end up in logs): "
            "POST /api/v1/stream/ticket and open the stream with ?ticket=",
        )
    bearer = authorization.removeprefix("Bearer ").strip() if authorization else None
    after: int | None = last_event_id_query
    if last_event_id is not None and last_event_id.isdigit() and len(last_event_id) <= 16:
        after = int(last_event_id)
    live, start = await run_in_threadpool(_open, request, ticket, bearer, after)
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(
        _events(request.app.state.hub, live, start, once),
        media_type="text/event-stream",
        headers=headers,
    )
