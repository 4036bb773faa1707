"""The HTTP application: assembles the routers, the connection pool and the error handling."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from psycopg_pool import ConnectionPool

from api.access import AccessError
from api.dashboard import VENDOR_URL, mount_dashboard
from api.hub import LiveHub, Timing
from api.metrics import DatabaseCollector
from api.views import admin, alerts, audit, auth, live, overview, residents
from eldercare.settings import Settings, load_settings
from store.db import connect
from store.readiness import components_ready


def create_app(settings: Settings | None = None, *, live_timing: Timing | None = None) -> FastAPI:
    """The app; `live_timing` sets the live stream's heartbeat and polling (tests shorten them)."""
    cfg = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.database_url = cfg.require_database_url()
        # Local names for the shutdown: a test client may run the lifespan again meanwhile.
        pool = app.state.pool = ConnectionPool(
            cfg.require_database_url(),
            min_size=1,
            max_size=10,
            kwargs={"autocommit": True},
            open=True,
        )
        hub = app.state.hub = LiveHub(cfg.require_database_url(), live_timing)
        hub.start()
        try:
            yield
        finally:
            await hub.close()
            pool.close()

    app = FastAPI(
        title="eldercare",
        version="0.1.0",
        description="Home monitoring of elderly residents: residents, readings and alerts for their "
        "contracted doctors. Every access to health data is audited.",
        lifespan=lifespan,
        # /docs is served below from vendored files: FastAPI's own pages load from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    for router in (
        auth.router,
        residents.router,
        alerts.router,
        live.router,
        overview.router,
        admin.router,
        audit.router,
    ):
        app.include_router(router)

    mount_dashboard(app)

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        """Swagger UI from api/static/vendor/swagger-ui (no CDN: works on an offline network)."""
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="eldercare API",
            swagger_js_url=f"{VENDOR_URL}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{VENDOR_URL}/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/app/favicon.svg",
            # No badge from the public validator service: nothing leaves this server.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.exception_handler(AccessError)
    def access_error(_request: Request, exc: AccessError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        if exc.retry_after_s is not None:
            headers["Retry-After"] = str(exc.retry_after_s)
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=headers)

    @app.exception_handler(psycopg.errors.DataError)
    def data_error(_request: Request, exc: psycopg.errors.DataError) -> JSONResponse:
        # Input the schema allowed but the database cannot hold (a date or number out of range).
        why = exc.diag.message_primary or str(exc).splitlines()[0] or type(exc).__name__
        return JSONResponse({"detail": f"value out of range: {why}"}, status_code=422)

    @app.exception_handler(OverflowError)
    def overflow(_request: Request, exc: OverflowError) -> JSONResponse:
        return _out_of_range(str(exc))

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics(request: Request) -> PlainTextResponse:
        """Prometheus metrics: ingest rate and lag, quarantine, unresolved alerts, failed notifications."""
        registry = CollectorRegistry()
        registry.register(DatabaseCollector(request.app.state.pool))
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        responses={503: {"description": "Not ready: `checks` and `not_ready` say what is not."}},
    )
    def readyz(request: Request) -> JSONResponse:
        """The database and the broker are reachable, and ingest and the alert engine are ready
        for devices (store/readiness.py; `not_ready` names the components that are not)."""
        checks = {"database": _database_ok(cfg), "broker": _broker_ok(cfg)}
        body: dict[str, object] = {}
        if all(checks.values()):
            with request.app.state.pool.connection() as conn:
                checks["components"], body["not_ready"] = components_ready(conn)
        ready = all(checks.values())
        body = {"ready": ready, "checks": checks, **body}
        return JSONResponse(body, status_code=200 if ready else 503)

    return app


def _out_of_range(message: str) -> JSONResponse:
    """A 422 shaped like FastAPI's own validation errors (the schema documents that shape)."""
    error = {"loc": ["query"], "msg": f"value out of range: {message}", "type": "value_error"}
    return JSONResponse({"detail": [error]}, status_code=422)


def _database_ok(cfg: Settings) -> bool:
    if not cfg.database_url:
        return False
    try:
        with connect(cfg.database_url) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _broker_ok(cfg: Settings) -> bool:
    if not cfg.mqtt_url:
        return False
    try:
        with socket.create_connection((cfg.mqtt.host, cfg.mqtt.port), timeout=2):
            return True
    except OSError:
        return False
