"""/healthz and /readyz: is the process up, and can it serve (database and broker reachable, ingest
subscribed and the alert engine listening: store/readiness.py).

Both are unauthenticated, so a loop of requests must cost nothing per request: /readyz answers from
one check at most `http_ready_cache_seconds` old, run on the app's connection pool, and callers that
arrive while a check runs wait for that one (holding no thread) instead of starting their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

import psycopg
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool

from eldercare.settings import MqttEndpoint
from store.readiness import components_ready

# Waiting for a pooled connection, and for the broker to accept, at most this long each.
CHECK_TIMEOUT_SECONDS = 2.0
# A caller waits at most this long: a database that accepted the query but does not answer (a
# silent network partition) makes /readyz say not ready instead of hanging the prober.
CHECK_DEADLINE_SECONDS = 2 * CHECK_TIMEOUT_SECONDS + 1

router = APIRouter(tags=["health"])


@dataclass
class Verdict:
    """What one check found: each check's outcome and, once the database answered, the required
    components (ingest's sessions, the alert engine) without a fresh ready row."""

    checks: dict[str, bool] = field(default_factory=lambda: {"database": False, "broker": False})
    not_ready: list[str] | None = None

    @property
    def ready(self) -> bool:
        return all(self.checks.values())

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {"ready": self.ready, "checks": dict(self.checks)}
        if self.not_ready is not None:
            body["not_ready"] = list(self.not_ready)
        return body


def database_checks(conn: psycopg.Connection, verdict: Verdict) -> None:
    """Everything /readyz learns from the database, on one pooled connection."""
    conn.execute("SELECT 1")
    verdict.checks["database"] = True
    verdict.checks["components"], verdict.not_ready = components_ready(conn)


def broker_reachable(endpoint: MqttEndpoint | None) -> bool:
    """The broker accepts a TCP connection; opened once per check, i.e. at most once per cache
    interval, whatever the request rate."""
    if endpoint is None:
        return False
    try:
        with socket.create_connection(
            (endpoint.host, endpoint.port), timeout=CHECK_TIMEOUT_SECONDS
        ):
            return True
    except OSError:
        return False


class Readiness:
    """The cached outcome of the readiness checks, shared by all requests of one app.

    A check runs in a worker thread; callers waiting for it hold no thread of the request pool, so
    a flood of /readyz during a slow check (a database that does not answer) cannot starve the other
    endpoints, and a caller that goes away does not cancel the check the others wait for."""

    def __init__(
        self,
        pool: ConnectionPool | None,
        broker: MqttEndpoint | None,
        *,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.broker = broker
        self.max_age = max_age
        self.clock = clock
        self._checked_at: float | None = None
        self._verdict = Verdict()
        self._in_flight: asyncio.Future[Verdict] | None = None
        # What the check in flight has learnt so far (read when it overruns the deadline).
        self._progress = Verdict()

    async def verdict(self) -> Verdict:
        if self._checked_at is not None and self.clock() - self._checked_at < self.max_age:
            return _copy(self._verdict)
        if self._in_flight is None:
            self._in_flight = self._start()
        try:
            checks = await asyncio.wait_for(
                asyncio.shield(self._in_flight), timeout=CHECK_DEADLINE_SECONDS
            )
        except TimeoutError:
            # Still running: not ready, with what is known so far. Later callers wait for the same
            # check (no second one piles up behind a hung connection).
            return _copy(self._progress)
        return _copy(checks)

    def _start(self) -> asyncio.Future[Verdict]:
        """The check in a daemon thread of its own, not the loop's executor: one stuck on a hung
        connection must not hold up the app's shutdown, which waits for the executor's threads."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Verdict] = loop.create_future()
        future.add_done_callback(self._finished)

        def deliver(outcome: Verdict | BaseException) -> None:
            if future.done():
                return
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        def run() -> None:
            outcome: Verdict | BaseException
            try:
                outcome = self._run()
            except Exception as exc:  # a bug: the callers get a 500, the next one a new check
                outcome = exc
            with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
                loop.call_soon_threadsafe(deliver, outcome)

        threading.Thread(target=run, name="readiness-check", daemon=True).start()
        return future

    def _finished(self, check: asyncio.Future[Verdict]) -> None:
        self._in_flight = None
        if not check.cancelled() and check.exception() is None:
            self._verdict = check.result()
            # Aged from the end of the check: a slow failing check is not rerun at once.
            self._checked_at = self.clock()

    def _run(self) -> Verdict:
        progress = self._progress = Verdict()
        progress.checks["broker"] = broker_reachable(self.broker)
        if self.pool is None:
            return _copy(progress)
        try:
            with self.pool.connection(timeout=CHECK_TIMEOUT_SECONDS) as conn:
                database_checks(conn, progress)
        except psycopg.Error:  # includes the pool's timeout (PoolTimeout is an OperationalError)
            progress.checks["database"] = False
        return _copy(progress)


def _copy(verdict: Verdict) -> Verdict:
    """Each caller its own: the check in flight keeps filling in `_progress`."""
    not_ready = None if verdict.not_ready is None else list(verdict.not_ready)
    return Verdict(dict(verdict.checks), not_ready)


def _readiness(request: Request) -> Readiness:
    readiness: Readiness = request.app.state.readiness
    return readiness


ReadinessDep = Annotated[Readiness, Depends(_readiness)]


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "Not ready: `checks` and `not_ready` say what is not."}},
)
async def readyz(readiness: ReadinessDep) -> JSONResponse:
    """The database and the broker are reachable, and ingest (its telemetry, events and status
    sessions) and the alert engine report ready (fresh rows in `readiness`); 503 says which check
    failed and `not_ready` which components are missing. Checked at most every few seconds."""
    verdict = await readiness.verdict()
    return JSONResponse(verdict.body(), status_code=200 if verdict.ready else 503)
