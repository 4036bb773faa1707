"""The HTTP application: assembles the routers, the connection pool and the error handling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from psycopg_pool import ConnectionPool

from api import health, metrics
from api.access import AccessError
from api.dashboard import VENDOR_URL, mount_dashboard
from api.hub import LiveHub, Timing
from api.views import admin, alerts, audit, auth, live, overview, residents
from eldercare.settings import MqttEndpoint, Settings, load_settings
from store import db


def create_app(settings: Settings | None = None, *, live_timing: Timing | None = None) -> FastAPI:
    """The app; `live_timing` sets the live stream's heartbeat and polling (tests shorten them)."""
    cfg = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.database_url = cfg.require_database_url()
        # Local names for the shutdown: a test client may run the lifespan again meanwhile.
        pool = app.state.pool = ConnectionPool(
            # Keepalives and timeouts like every other connection: a request must not wait for
            # hours on a database host that vanished (store/db.py).
            db.conninfo(cfg.require_database_url(), "eldercare-api"),
            min_size=1,
            max_size=10,
            kwargs={"autocommit": True},
            open=True,
        )
        app.state.readiness = health.Readiness(
            pool, _broker(cfg), max_age=cfg.http_ready_cache_seconds
        )
        sampler = app.state.metrics = metrics.MetricsSampler(
            pool, cfg.http_metrics_interval_seconds
        )
        sampler.start()
        # The first scrape after start-up has numbers, unless the database is slow to answer.
        await asyncio.to_thread(sampler.wait_first_round, health.CHECK_TIMEOUT_SECONDS)
        hub = app.state.hub = LiveHub(cfg.require_database_url(), live_timing)
        hub.start()
        try:
            yield
        finally:
            await hub.close()
            # Closing the pool ends a round that waits for a connection (the database is down).
            sampler.stop()
            pool.close()
            sampler.close()

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
        health.router,
        metrics.router,
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

    return app


def _out_of_range(message: str) -> JSONResponse:
    """A 422 shaped like FastAPI's own validation errors (the schema documents that shape)."""
    error = {"loc": ["query"], "msg": f"value out of range: {message}", "type": "value_error"}
    return JSONResponse({"detail": [error]}, status_code=422)


def _broker(cfg: Settings) -> MqttEndpoint | None:
    return cfg.mqtt if cfg.mqtt_url else None
