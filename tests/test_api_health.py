"""/readyz says 503 when the broker or the database cannot be reached (and which one), while
/healthz, the process being up, stays 200."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.app import create_app
from eldercare.ports import free_port
from eldercare.settings import Settings


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
    assert ready.json() == {"ready": False, "checks": {"database": True, "broker": False}}


def test_readyz_is_503_when_the_database_is_unreachable(settings):
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/eldercare"
    ready = _ready(Settings(database_url=unreachable, mqtt_url=settings.mqtt_url))
    assert ready.status_code == 503
    assert ready.json() == {"ready": False, "checks": {"database": False, "broker": True}}
