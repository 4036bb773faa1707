"""The live stream against a real uvicorn server: single-use tickets instead of tokens in URLs (and
an access log without secrets), a revoked or expired token ends the stream, fifty open streams
neither stall the API nor miss an alert, vitals go only to those who may see them, and an alert
change that commits late is still delivered."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import httpx
import orjson
import psycopg
import pytest
import uvicorn

from alerts import lifecycle
from alerts.models import Finding
from api import platforms
from api.app import create_app
from api.hub import Timing
from api.logs import REDACTED, RedactSecrets, redact_query
from eldercare.ports import free_port
from tests.support import ELDERCARE, ROOT, wait_for
from tests.test_api import _token, client, world  # noqa: F401 - fixtures

FAST = Timing(heartbeat_s=0.5, vitals_poll_s=0.2, tick_s=0.5)


@pytest.fixture()
def live_server(settings) -> Iterator[Callable[[Timing], str]]:
    """start(timing) -> base URL of an in-process uvicorn serving a fresh app."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(timing: Timing = FAST) -> str:
        port = free_port()
        config = uvicorn.Config(
            create_app(settings, live_timing=timing),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        wait_for(lambda: server.started, 20, "uvicorn started")
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(20)


def _login(base: str, world, who: str) -> dict[str, str]:  # noqa: F811
    username, password = world["users"][who]
    response = httpx.post(
        f"{base}/api/v1/auth/login", json={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def _ticket(base: str, headers: dict[str, str]) -> str:
    response = httpx.post(f"{base}/api/v1/stream/ticket", headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["ticket"])


def _parse(block: str) -> dict[str, str] | None:
    fields: dict[str, str] = {}
    for line in block.splitlines():
        if line.startswith(":") or ": " not in line:
            continue
        name, value = line.split(": ", 1)
        fields[name] = value
    return fields if "event" in fields else None


class Reader:
    """Reads one stream in a thread: its events ({'event', 'id'?, 'data'}) and heartbeats."""

    def __init__(self, url: str, *, params=None, headers=None) -> None:
        self.events: list[dict[str, object]] = []
        self.heartbeats = 0
        self.status: int | None = None
        self.error: httpx.HTTPError | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(url, params, headers))
        self._thread.start()

    def _read(self, url, params, headers) -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(10, read=30)) as http,
                http.stream("GET", url, params=params, headers=headers) as response,
            ):
                self.status = response.status_code
                buffer = ""
                for text in response.iter_text():
                    buffer += text
                    while "\n\n" in buffer:
                        block, buffer = buffer.split("\n\n", 1)
                        self._take(block)
                    if self._stop.is_set():
                        return
        except httpx.HTTPError as exc:  # the server went away mid-stream
            self.error = exc
        finally:
            self.done.set()
            with self._cond:
                self._cond.notify_all()

    def _take(self, block: str) -> None:
        with self._cond:
            if block.startswith(": heartbeat"):
                self.heartbeats += 1
            fields = _parse(block)
            if fields is not None:
                event: dict[str, object] = {"event": fields["event"], "raw": block}
                if "id" in fields:
                    event["id"] = int(fields["id"])
                event["data"] = orjson.loads(fields["data"])
                self.events.append(event)
            self._cond.notify_all()

    def wait(self, predicate, timeout: float = 15, what: str = "event"):
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self), timeout):
                raise AssertionError(f"timed out waiting for {what}; got {self.events}")
            return list(self.events)

    def of(self, kind: str) -> list[dict[str, object]]:
        return [e for e in self.events if e["event"] == kind]

    def close(self) -> None:
        self._stop.set()  # the next heartbeat wakes the reader, which then hangs up
        self._thread.join(15)


@pytest.fixture()
def readers() -> Iterator[Callable[..., Reader]]:
    opened: list[Reader] = []

    def open_(url: str, **kwargs) -> Reader:
        reader = Reader(url, **kwargs)
        opened.append(reader)
        return reader

    yield open_
    for reader in opened:
        reader.close()


def test_a_ticket_opens_one_stream_once_and_only_for_a_minute(client, world, conn):  # noqa: F811
    a = _token(client, world, "a")
    assert client.post("/api/v1/stream/ticket").status_code == 401
    ticket = client.post("/api/v1/stream/ticket", headers=a).json()["ticket"]
    first = client.get("/api/v1/stream", params={"ticket": ticket, "once": True})
    assert first.status_code == 200 and first.headers["content-type"].startswith(
        "text/event-stream"
    )
    ready = _parse(first.text.split("\n\n")[1])
    assert ready and ready["event"] == "ready" and int(ready["id"]) >= world["alert"]
    again = client.get("/api/v1/stream", params={"ticket": ticket, "once": True})
    assert again.status_code == 401 and "used or expired" in again.json()["detail"]
    # Only a hash is stored, like tokens.
    assert conn.execute(
        "SELECT count(*) FROM stream_ticket WHERE ticket_hash = convert_to(%s, 'UTF8')", (ticket,)
    ).fetchone() == (0,)
    late = client.post("/api/v1/stream/ticket", headers=a).json()["ticket"]
    conn.execute("UPDATE stream_ticket SET expires_at = now() - INTERVAL '1 second'")
    expired = client.get("/api/v1/stream", params={"ticket": late, "once": True})
    assert expired.status_code == 401
    orphan = client.post("/api/v1/stream/ticket", headers=a).json()["ticket"]
    client.post("/api/v1/auth/logout", headers=a)
    revoked = client.get("/api/v1/stream", params={"ticket": orphan, "once": True})
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    token = _token(client, world, "a")["Authorization"].removeprefix("Bearer ")
    in_url = client.get("/api/v1/stream", params={"access_token": token, "once": True})
    assert in_url.status_code == 401 and "refused" in in_url.json()["detail"]
    assert client.get("/api/v1/stream", params={"ticket": "x" * 300}).status_code == 422


def test_secrets_in_query_strings_are_redacted():
    assert redact_query("/api/v1/stream?ticket=abc&once=true") == (
        f"/api/v1/stream?ticket={REDACTED}&once=true"
    )
    assert redact_query("/x?once=1&Access%5FToken=s3cret") == f"/x?once=1&Access%5FToken={REDACTED}"
    assert redact_query("/api/v1/alerts?state=open&limit=5") == "/api/v1/alerts?state=open&limit=5"
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/api/v1/stream?access_token=s3cret", "1.1", 401),
        None,
    )
    assert RedactSecrets().filter(record)
    assert "s3cret" not in record.getMessage() and REDACTED in record.getMessage()


def test_the_access_log_of_the_real_server_holds_no_token_or_ticket(env, world, tmp_path):  # noqa: F811
    port = free_port()
    log_path = tmp_path / "api.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [ELDERCARE, "api", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 30, "API up")
        a = _login(base, world, "a")
        token = a["Authorization"].removeprefix("Bearer ")
        ticket = _ticket(base, a)
        opened = httpx.get(f"{base}/api/v1/stream", params={"ticket": ticket, "once": "true"})
        assert opened.status_code == 200
        refused = httpx.get(f"{base}/api/v1/stream", params={"access_token": token, "once": "1"})
        assert refused.status_code == 401
        wait_for(lambda: log_path.read_text().count("/api/v1/stream?") >= 2, 10, "access log")
        # A stream left open (as a dashboard would) does not keep the server from stopping.
        open_stream = Reader(f"{base}/api/v1/stream", headers=a)
        open_stream.wait(lambda r: r.of("ready"), what="ready")
        stopping = time.monotonic()
        process.terminate()
        assert process.wait(15) in (0, -15)  # uvicorn re-raises the SIGTERM it handled
        assert time.monotonic() - stopping < 10
        open_stream.wait(lambda r: r.done.is_set(), what="the stream to close")
        open_stream.close()
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(20)
    text = log_path.read_text()
    assert f"ticket={REDACTED}" in text and f"access_token={REDACTED}" in text
    assert ticket not in text and token not in text


def test_a_revoked_or_expired_token_ends_the_open_stream(live_server, readers, world, conn):  # noqa: F811
    base = live_server(FAST)
    a = _login(base, world, "a")
    by_ticket = readers(f"{base}/api/v1/stream", params={"ticket": _ticket(base, a)})
    by_ticket.wait(lambda r: r.heartbeats >= 1, what="a heartbeat")
    assert not by_ticket.done.is_set()
    assert httpx.post(f"{base}/api/v1/auth/logout", headers=a).status_code == 204
    events = by_ticket.wait(lambda r: r.done.is_set(), what="the stream to end")
    assert events[-1]["event"] == "end" and "revoked" in str(events[-1]["data"])

    second = _login(base, world, "a")
    by_header = readers(f"{base}/api/v1/stream", headers=second)
    by_header.wait(lambda r: r.heartbeats >= 1, what="a heartbeat")
    conn.execute(
        "UPDATE api_token SET expires_at = now() WHERE token_hash = sha256(convert_to(%s, 'UTF8'))",
        (second["Authorization"].removeprefix("Bearer "),),
    )
    events = by_header.wait(lambda r: r.done.is_set(), what="the stream to end")
    assert events[-1]["event"] == "end" and "expired" in str(events[-1]["data"])


def test_a_disabled_platform_s_open_stream_ends(live_server, readers, world, conn):  # noqa: F811
    base = live_server(FAST)
    platform_id, key = platforms.add(
        conn, name=f"stream-{uuid.uuid4().hex[:6]}", institution_ids=[world["centre"]]
    )
    stream = readers(f"{base}/api/v1/stream", headers={"Authorization": f"Bearer {key}"})
    stream.wait(lambda r: r.heartbeats >= 1, what="a heartbeat")
    conn.execute("UPDATE platform_client SET disabled_at = now() WHERE id = %s", (platform_id,))
    events = stream.wait(lambda r: r.done.is_set(), what="the stream to end")
    assert events[-1]["event"] == "end" and "disabled" in str(events[-1]["data"])


@pytest.mark.timeout(120)
def test_fifty_open_streams_neither_stall_the_api_nor_miss_an_alert(
    live_server,
    world,  # noqa: F811
    conn,
):
    base = live_server(Timing(heartbeat_s=2.0, vitals_poll_s=1.0, tick_s=2.0))
    a = _login(base, world, "a")
    count = 50

    async def scenario() -> None:
        limits = httpx.Limits(max_connections=count + 10)
        async with (
            httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as http,
            AsyncExitStack() as stack,
        ):
            streams = []
            for _ in range(count):
                ticket = (await http.post("/api/v1/stream/ticket", headers=a)).json()["ticket"]
                response = await stack.enter_async_context(
                    http.stream("GET", "/api/v1/stream", params={"ticket": ticket})
                )
                assert response.status_code == 200
                streams.append(response.aiter_text())
            for chunks in streams:  # each has said where it starts
                text = ""
                while "event: ready" not in text:
                    text += await chunks.__anext__()
            started = time.monotonic()
            residents = await http.get("/api/v1/residents", headers=a)
            elapsed = time.monotonic() - started
            assert residents.status_code == 200 and elapsed < 2, f"took {elapsed:.1f} s"
            assert (await http.get("/healthz")).status_code == 200
            live = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'eldercare-api-live'"
            ).fetchone()
            assert live == (1,), "one listener for every stream"

            changed = lifecycle.comment(
                conn, world["alert"], actor="system", now=datetime.now(UTC), note="fan-out"
            )

            async def sees_it(chunks) -> None:
                text = ""
                while '"action":"commented"' not in text:
                    text += await chunks.__anext__()

            await asyncio.wait_for(asyncio.gather(*(sees_it(c) for c in streams)), 15)
            assert changed.id == world["alert"]

    asyncio.run(scenario())


@pytest.mark.timeout(120)
def test_vitals_go_to_those_who_may_see_them_and_resuming_is_about_alerts(
    live_server,
    readers,
    world,  # noqa: F811
    register,
    ingestor,
    database_url,
):
    base = live_server(FAST)
    a, b, admin = (_login(base, world, who) for who in ("a", "b", "admin"))
    url = f"{base}/api/v1/stream"
    mine = readers(url, params={"ticket": _ticket(base, a)})
    theirs = readers(url, params={"ticket": _ticket(base, b)})
    everyone = readers(url, params={"ticket": _ticket(base, admin)})
    for reader in (mine, theirs, everyone):
        reader.wait(lambda r: r.of("ready"), what="ready")
    wristband = register("wristband", resident_id=world["resident"])
    wristband.telemetry({"heart_rate": 88, "spo2": 95})

    def got_vitals(reader: Reader) -> bool:
        return any(
            e["data"]["resident_id"] == world["resident"]  # type: ignore[index]
            and {v["metric"] for v in e["data"]["values"]} >= {"heart_rate", "spo2"}  # type: ignore[index]
            for e in reader.of("vitals")
        )

    mine.wait(got_vitals, what="doctor A's vitals")
    everyone.wait(got_vitals, what="the system admin's vitals")
    vitals = next(e for e in mine.of("vitals") if e["data"]["resident_id"] == world["resident"])  # type: ignore[index]
    values = {v["metric"]: v for v in vitals["data"]["values"]}  # type: ignore[index]
    assert values["heart_rate"]["value"] == 88 and values["heart_rate"]["unit"] == "/min"
    assert values["spo2"]["device_id"] == wristband.device_id
    assert "id" not in vitals and "\nid:" not in f"\n{vitals['raw']}"
    # Doctor B's stream had the same chance: the hub hands everything to every stream at once,
    # so once B's next heartbeat is through, anything B was given would have come before it.
    beats = theirs.heartbeats
    theirs.wait(lambda r: r.heartbeats > beats, what="B's next heartbeat")
    assert not any(
        e["data"]["resident_id"] == world["resident"]  # type: ignore[index]
        for e in theirs.of("vitals") + theirs.of("alert")
    )

    # Resuming from the last id the browser has (vitals carry none) replays the alert changes.
    position = mine.of("ready")[0]["id"]
    with psycopg.connect(database_url, autocommit=True) as other:
        lifecycle.comment(other, world["alert"], actor="system", now=datetime.now(UTC), note="n")
    mine.wait(lambda r: r.of("alert"), what="the comment")
    resumed = httpx.get(
        url, params={"once": "true"}, headers={**a, "Last-Event-ID": str(position)}
    ).text
    replayed = [_parse(block) for block in resumed.split("\n\n")]
    alerts = [e for e in replayed if e and e["event"] == "alert"]
    assert [int(e["id"]) for e in alerts] == [e["id"] for e in mine.of("alert")]
    assert not any(e and e["event"] == "vitals" for e in replayed)


def test_an_alert_change_that_commits_late_still_arrives(
    live_server,
    readers,
    world,  # noqa: F811
    conn,
    database_url,
):
    base = live_server(FAST)
    a = _login(base, world, "a")
    other = lifecycle.raise_finding(
        conn,
        resident_id=world["resident"],
        now=datetime.now(UTC),
        finding=Finding(rule=f"late-{uuid.uuid4().hex[:4]}", severity="info", title="late"),
    )
    stream = readers(f"{base}/api/v1/stream", params={"ticket": _ticket(base, a)})
    stream.wait(lambda r: r.of("ready"), what="ready")
    slow = psycopg.connect(database_url)  # one open transaction: its id is taken, not committed
    try:
        slow.execute("SELECT 1")  # begins it; the service's own transaction is a savepoint within
        lifecycle.comment(slow, world["alert"], actor="system", now=datetime.now(UTC), note="slow")
        lifecycle.comment(conn, other.id, actor="system", now=datetime.now(UTC), note="quick")
        stream.wait(
            lambda r: any(e["data"]["alert_id"] == other.id for e in r.of("alert")),  # type: ignore[index]
            what="the quick change",
        )
        slow.commit()
    finally:
        slow.close()
    events = stream.wait(
        lambda r: any(e["data"]["alert_id"] == world["alert"] for e in r.of("alert")),  # type: ignore[index]
        what="the change that committed late",
    )
    comments = {
        e["data"]["alert_id"]: e["id"]  # type: ignore[index]
        for e in events
        if e["event"] == "alert" and e["data"]["action"] == "commented"  # type: ignore[index]
    }
    assert comments[world["alert"]] < comments[other.id], "the late one has the lower id"
