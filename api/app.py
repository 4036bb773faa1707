"""The HTTP application: health endpoints now; the doctors' API and dashboard build on it."""

from __future__ import annotations

import socket

import psycopg
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from eldercare.settings import Settings, load_settings
from store.db import connect


def create_app(settings: Settings | None = None) -> FastAPI:
    cfg = settings or load_settings()
    app = FastAPI(
        title="eldercare", version="0.1.0", description="Home monitoring of elderly residents."
    )

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        """The database and the broker are reachable."""
        checks = {"database": _database_ok(cfg), "broker": _broker_ok(cfg)}
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    return app


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
