"""/readyz says 503 when the broker or the database cannot be reached (and which one), while
/healthz, the process being up, stays 200. Neither /readyz nor /metrics needs a login, so a flood
of them must not open database or broker connections: they answer from a cache."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid

import httpx
import psycopg
import pytest
import uvicorn
from fastapi.testclient import TestClient
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from api.app import create_app
from api.health import CHECK_DEADLINE_SECONDS, Readiness
from eldercare.ports import free_port
from eldercare.settings import MqttEndpoint, Settings
from store import db, readiness
from tests.support import TcpProxy, wait_for

# api/app.py's connection pool (max_size); the live hub holds one more connection of its own.
POOL_SIZE = 10
CONCURRENT = 200


def _ready(settings):
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        return client.get("/readyz")


def test_readyz_is_503_when_the_broker_is_down(settings):
    # Fresh settings, not a copy: a copy would keep the cached broker endpoint of the original.
    nobody = Settings(
        database_url=settings.database_url, mqtt_url=f"mqtt://127.0.0.1:{free_port()}"
    )
    ready = _ready(nobody)
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert (checks["database"], checks["broker"]) == (True, False)


def test_readyz_is_503_when_the_database_is_unreachable(settings):
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/eldercare"
    ready = _ready(Settings(database_url=unreachable, mqtt_url=settings.mqtt_url))
    assert ready.status_code == 503
    assert ready.json() == {"ready": False, "checks": {"database": False, "broker": True}}


@pytest.fixture()
def own_database(database_url, storage_setting):
    """A database of this test's own: pg_stat_activity for it shows the API's connections only."""
    url = db.with_dbname(database_url, f"eldercare_health_{uuid.uuid4().hex[:10]}")
    db.ensure_database(url)
    db.migrate(url, timescale=storage_setting)
    yield url
    db.drop_database(url)


def _through(url: str, proxy: TcpProxy) -> str:
    params = conninfo_to_dict(url)
    params.update(host="127.0.0.1", port=str(proxy.port))
    return make_conninfo("", **params)


class _Serving:
    """The app under uvicorn on a free loopback port, in a thread (stopped by `stop`)."""

    def __init__(self, cfg: Settings) -> None:
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(cfg), host="127.0.0.1", port=0, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 20, "uvicorn started")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class _PeakSessions:
    """Samples pg_stat_activity for one database until stopped; keeps the highest count seen."""

    def __init__(self, conn: psycopg.Connection, dbname: str) -> None:
        self.conn, self.dbname, self.peak = conn, dbname, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            row = self.conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (self.dbname,)
            ).fetchone()
            self.peak = max(self.peak, row[0] if row else 0)
            self._stop.wait(0.005)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.peak


async def _burst(base_url: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=2 * CONCURRENT, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
        return await asyncio.gather(
            *(client.get(path) for _ in range(CONCURRENT) for path in ("/readyz", "/metrics"))
        )


def test_a_flood_of_readyz_and_metrics_keeps_connections_bounded(
    settings, endpoint, own_database, conn
):
    _components_ready_for_a_while(own_database)
    database = TcpProxy(*_host_port(own_database))
    broker = TcpProxy(endpoint.host, endpoint.port)
    cfg = Settings(
        database_url=_through(own_database, database),
        mqtt_url=f"mqtt://127.0.0.1:{broker.port}",
        mqtt_service_username=settings.mqtt_service_username,
        mqtt_service_password=settings.mqtt_service_password,
    )
    app = _Serving(cfg)
    sessions = _PeakSessions(conn, conninfo_to_dict(own_database)["dbname"])
    try:
        started = time.monotonic()
        responses = asyncio.run(_burst(app.url))
        elapsed = time.monotonic() - started
        peak = sessions.stop()
    finally:
        sessions.stop()
        app.stop()
        database.close()
        broker.close()

    ready = [r for r in responses if r.url.path == "/readyz"]
    scraped = [r for r in responses if r.url.path == "/metrics"]
    assert len(ready) == len(scraped) == CONCURRENT
    assert {r.status_code for r in ready} == {200}
    assert all(
        r.json()["checks"] == {"database": True, "broker": True, "components": True} for r in ready
    )
    assert {r.status_code for r in scraped} == {200}
    assert all('eldercare_alerts_unresolved{severity="warning"}' in r.text for r in scraped)
    # The pool, the live hub's listener and nothing per request.
    assert database.accepted <= POOL_SIZE + 2, f"{database.accepted} database connections"
    assert peak <= POOL_SIZE + 2, f"{peak} sessions at once in pg_stat_activity"
    # One broker probe per cache interval at most, whatever the number of requests.
    probes = 1 + int(elapsed / cfg.http_ready_cache_seconds) + 1
    assert broker.accepted <= probes, f"{broker.accepted} broker connections in {elapsed:.1f}s"


def _components_ready_for_a_while(url: str) -> None:
    """Ingest and the alert engine reported ready in `url`, heartbeats stamped ahead to cover the
    test (a live Reporter would add its own connection to the sessions counted)."""
    with db.connection(url, autocommit=True) as c:
        for component in readiness.REQUIRED:
            c.execute(
                "INSERT INTO readiness (component, host, pid, ready_at, heartbeat_at) "
                "VALUES (%s, 'test', 1, now(), now() + interval '10 minutes')",
                (component,),
            )


def _host_port(url: str) -> tuple[str, int]:
    params = conninfo_to_dict(url)
    return params.get("host") or "127.0.0.1", int(params.get("port") or 5432)


def test_readiness_is_checked_once_per_interval_by_concurrent_callers(endpoint):
    broker = TcpProxy(endpoint.host, endpoint.port)
    now = [0.0]
    readiness = Readiness(
        None, MqttEndpoint("127.0.0.1", broker.port), max_age=2.0, clock=lambda: now[0]
    )

    async def callers(count: int) -> list[dict[str, object]]:
        return [
            v.body() for v in await asyncio.gather(*(readiness.verdict() for _ in range(count)))
        ]

    try:
        # No pool: the database counts as unreachable; the broker is probed once for all 20.
        assert (
            asyncio.run(callers(20))
            == [{"ready": False, "checks": {"database": False, "broker": True}}] * 20
        )
        wait_for(lambda: broker.accepted == 1, 5, "the probe to arrive")
        now[0] = 1.9
        asyncio.run(callers(5))
        now[0] = 2.1
        asyncio.run(callers(5))
        # A marker connection, accepted after every probe made before it (one listen queue):
        # once it is counted, any further probe would have been too.
        with socket.create_connection(("127.0.0.1", broker.port)):
            wait_for(lambda: broker.accepted >= 3, 5, "the marker connection")
        assert broker.accepted == 3, "one probe per interval, plus the marker"
    finally:
        broker.close()


def test_metrics_follow_the_database_in_the_background(settings, own_database):
    cfg = Settings(
        database_url=own_database, mqtt_url=settings.mqtt_url, http_metrics_interval_seconds=0.2
    )
    reason = f"probe_{uuid.uuid4().hex[:8]}"
    with TestClient(create_app(cfg)) as client:
        assert "eldercare_metrics_age_seconds" in client.get("/metrics").text
        with db.connection(own_database, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO quarantine (topic, reason, detail, payload, payload_size) "
                "VALUES ('t', %s, 'test', '', 0)",
                (reason,),
            )
        wait_for(
            lambda: (
                f'eldercare_quarantine_messages{{reason="{reason}"}} 1.0'
                in client.get("/metrics").text
            ),
            10,
            "the new quarantine row in /metrics",
        )


def test_metrics_are_served_from_memory_while_the_database_is_away(settings, own_database):
    database = TcpProxy(*_host_port(own_database))
    cfg = Settings(
        database_url=_through(own_database, database),
        mqtt_url=settings.mqtt_url,
        http_metrics_interval_seconds=0.2,
    )
    try:
        with TestClient(create_app(cfg)) as client:
            assert 'eldercare_alerts_unresolved{severity="warning"} 0.0' in (
                client.get("/metrics").text
            )
            database.down()  # every connection cut, new ones refused
            for _ in range(20):
                started = time.monotonic()
                scrape = client.get("/metrics")
                assert scrape.status_code == 200
                assert time.monotonic() - started < 1, "a scrape waited for the database"
                assert 'eldercare_alerts_unresolved{severity="warning"} 0.0' in scrape.text
    finally:
        database.close()


def test_readyz_says_not_ready_in_time_when_the_database_stops_answering(settings, own_database):
    _components_ready_for_a_while(own_database)
    database = TcpProxy(*_host_port(own_database))
    cfg = Settings(
        database_url=_through(own_database, database),
        mqtt_url=settings.mqtt_url,
        http_ready_cache_seconds=0,
    )
    try:
        with TestClient(create_app(cfg)) as client:
            assert client.get("/readyz").status_code == 200
            database.freeze()  # connections stay open, nothing answers (a silent partition)
            for _ in range(2):
                started = time.monotonic()
                ready = client.get("/readyz")
                assert time.monotonic() - started < CHECK_DEADLINE_SECONDS + 2
                assert ready.status_code == 503
                assert ready.json() == {
                    "ready": False,
                    "checks": {"database": False, "broker": True},
                }
    finally:
        database.close()


def test_the_apis_pooled_connections_notice_a_vanished_database_host(settings):
    """Keepalives and a TCP user timeout like every other connection of ours (store/db.py): without
    them a request sent into a silent network partition waits for the kernel's retransmissions,
    a quarter of an hour. Fails on main: the pool used the bare URL."""
    with TestClient(create_app(settings)) as client, client.app.state.pool.connection() as conn:
        params = conn.info.get_parameters()
        name = conn.execute("SELECT current_setting('application_name')").fetchone()
    assert params.get("tcp_user_timeout") == "30000" and params.get("keepalives") == "1"
    assert name == ("eldercare-api",)
