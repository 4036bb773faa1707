"""The doctors' dashboard: a static front end (HTML, CSS, JavaScript modules and the vendored uPlot)
served by the API itself under /app, so it works with no network beyond this server (no CDN)."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent / "static"
VENDOR_URL = "/app/vendor"  # third-party files, with their provenance in vendor/README.md


class _RevalidatedFiles(StaticFiles):
    """Static files the browser must revalidate (ETag / Last-Modified) before each use.

    The modules import each other by plain names, not content hashes, so a heuristically cached old
    module could be mixed with new ones after a deploy; revalidating costs a 304 per file.
    """

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        return response


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at /app/ (index.html for the directory) and send / there."""
    app.mount("/app", _RevalidatedFiles(directory=STATIC_DIR, html=True), name="dashboard")

    @app.get("/", include_in_schema=False)
    def dashboard_home() -> RedirectResponse:
        return RedirectResponse("/app/", status_code=307)
