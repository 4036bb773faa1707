"""Real services for the tests: a throwaway database and a private Mosquitto on a free port."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from care import service as care_service
from devices import broker_auth, service
from eldercare.broker import Broker
from eldercare.mqtt import accepts_login
from eldercare.settings import MqttEndpoint, Settings
from store import db
from tests.support import Device, wait_for

SERVICE_USER = "eldercare-service"
SERVICE_PASSWORD = "test-service-password"


def _server_url(tmp_root: Path) -> str:
    explicit = os.environ.get("ELDERCARE_TEST_DATABASE_URL")
    if explicit:
        return explicit
    from eldercare.localdb import server_url

    url, _private = server_url(tmp_root)
    return url


@pytest.fixture(scope="session")
def storage_setting() -> str:
    """auto (TimescaleDB when installed) unless ELDERCARE_TEST_STORAGE=off forces plain PostgreSQL."""
    return os.environ.get("ELDERCARE_TEST_STORAGE", "auto")


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory, storage_setting: str) -> Iterator[str]:
    server = _server_url(Path(os.environ.get("ELDERCARE_VAR_DIR", "var")).resolve())
    url = db.with_dbname(server, f"eldercare_test_{os.getpid()}_{uuid.uuid4().hex[:6]}")
    db.ensure_database(url)
    db.migrate(url, timescale=storage_setting)
    with db.connection(url, autocommit=True) as conn:
        service.ensure_service_account(conn, username=SERVICE_USER, password=SERVICE_PASSWORD)
    yield url
    db.drop_database(url)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Broker]:
    instance = Broker(tmp_path_factory.mktemp("mosquitto"))
    instance.write_config()
    with db.connection(database_url, autocommit=True) as conn:
        broker_auth.sync(conn, instance.passwd_path, instance.acl_path, None)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def endpoint(broker: Broker) -> MqttEndpoint:
    return MqttEndpoint("127.0.0.1", broker.port)


@pytest.fixture(scope="session")
def settings(database_url: str, endpoint: MqttEndpoint) -> Settings:
    return Settings(
        database_url=database_url,
        mqtt_url=f"mqtt://127.0.0.1:{endpoint.port}",
        mqtt_service_username=SERVICE_USER,
        mqtt_service_password=SERVICE_PASSWORD,
    )


@pytest.fixture()
def env(settings: Settings, tmp_path: Path, storage_setting: str) -> dict[str, str]:
    """Environment for `eldercare` subprocesses pointing at the test services."""
    return {
        **os.environ,
        # Databases a subprocess creates (benchmarks) get the session's layout.
        "ELDERCARE_TIMESCALE": storage_setting,
        "ELDERCARE_DATABASE_URL": settings.database_url or "",
        "ELDERCARE_MQTT_URL": settings.mqtt_url or "",
        "ELDERCARE_MQTT_SERVICE_PASSWORD": SERVICE_PASSWORD,
        "ELDERCARE_VAR_DIR": str(tmp_path / "var"),
        # A group of its own: a killed ingestor's session must not take other tests' messages.
        "ELDERCARE_INGEST_SHARE_GROUP": f"g{uuid.uuid4().hex[:8]}",
    }


@pytest.fixture()
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with db.connection(database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture()
def register(database_url: str, broker: Broker, endpoint: MqttEndpoint) -> Iterator[object]:
    """register(kind='wristband', bound=True) -> Device with broker login ready."""
    created: list[Device] = []

    def _register(
        kind: str = "wristband",
        *,
        bound: bool = True,
        name: str = "测试老人",
        resident_id: int | None = None,
    ) -> Device:
        device_id = f"{kind}-{uuid.uuid4().hex[:10]}"
        # Worn since yesterday, so that backlog uploads fall inside the binding.
        a_day_ago = datetime.now(UTC) - timedelta(days=1)
        with db.connection(database_url, autocommit=True) as c:
            if resident_id is None and bound:
                resident_id = service.add_resident(c, name=name).id
            new = service.add_device(
                c, device_id=device_id, kind=kind, resident_id=resident_id, bound_from=a_day_ago
            )
            if broker_auth.sync(c, broker.passwd_path, broker.acl_path, None):
                broker.reload()
        wait_for(
            lambda: accepts_login(endpoint, device_id, new.mqtt_password),
            10,
            f"broker accepts {device_id}",
        )
        device = Device(device_id, new.mqtt_password, resident_id, endpoint)
        created.append(device)
        return device

    yield _register
    for device in created:
        device.close()


@pytest.fixture()
def app_login(database_url: str, broker: Broker, endpoint: MqttEndpoint) -> object:
    """app_login(doctor_id) -> (username, password): the doctor's app login, live on the broker."""

    def _login(doctor_id: int) -> tuple[str, str]:
        with db.connection(database_url, autocommit=True) as c:
            login = service.create_doctor_login(c, doctor_id=doctor_id)
            if broker_auth.sync(c, broker.passwd_path, broker.acl_path, None):
                broker.reload()
        wait_for(
            lambda: accepts_login(endpoint, login.username, login.password),
            10,
            f"broker accepts {login.username}",
        )
        return login.username, login.password

    return _login


@pytest.fixture()
def app_acks(settings: Settings) -> Iterator[object]:
    """app_acks(clock=None) -> the engine's consumer of doctors' apps' acknowledgements, running on
    its own (no tick, no event thread); `clock` dates the deliveries (default: the system's)."""
    from alerts.app_acks import AppAcks
    from alerts.clock import Clock, SystemClock

    started: list[AppAcks] = []

    def _start(clock: Clock | None = None) -> AppAcks:
        instance = AppAcks(settings, clock or SystemClock())
        instance.start()
        started.append(instance)
        assert instance.wait_subscribed(10), "acks consumer subscribed"
        return instance

    yield _start
    for instance in started:
        instance.stop()


@pytest.fixture()
def ingestor(settings: Settings) -> Iterator[object]:
    """An in-process ingestor (both consumers) with its own instance name."""
    from ingest.consumer import Ingestor
    from ingest.settings import IngestSettings

    instance = Ingestor(
        settings,
        IngestSettings(instance=f"t{uuid.uuid4().hex[:6]}", share_group=f"g{uuid.uuid4().hex[:8]}"),
    )
    instance.start()
    assert instance.wait_subscribed(20), "ingestor did not subscribe"
    yield instance
    instance.stop(leave=True)


@pytest.fixture()
def circle(conn):
    """A health centre with its duty desk, a two-doctor team, a resident signed with doctor A."""
    tag = uuid.uuid4().hex[:6]
    centre = care_service.add_institution(
        conn, name=f"社区卫生服务中心 {tag}", kind="community_health_centre"
    )
    doctor_a = care_service.add_doctor(
        conn,
        name="张医生",
        institution_id=centre["id"],
        team=f"team-{tag}",
        email="zhang@example.org",
    )
    doctor_b = care_service.add_doctor(
        conn, name="李医生", institution_id=centre["id"], team=f"team-{tag}"
    )
    resident = service.add_resident(
        conn, name="王秀英", contacts=[service.EmergencyContact("王小明", "13800000000", "son")]
    )
    care_service.set_resident_institution(
        conn, resident_id=resident.id, institution_id=centre["id"]
    )
    care_service.add_contract(
        conn,
        resident_id=resident.id,
        doctor_id=doctor_a["id"],
        valid_from=datetime.now(UTC) - timedelta(days=30),
    )
    return {
        "resident": resident.id,
        "a": doctor_a["id"],
        "b": doctor_b["id"],
        "desk": centre["duty_desk_id"],
        "centre": centre["id"],
    }


@pytest.fixture()
def ready_components(database_url: str) -> Iterator[None]:
    """Every component /readyz requires reported ready, with heartbeats, by this test process (its
    rows deleted afterwards); stands in for ingest and the alert engine in API-only tests."""
    from store import readiness

    checks = {component: (lambda: True) for component in readiness.REQUIRED}
    reporter = readiness.Reporter(database_url, checks, heartbeat_s=1.0)
    reporter.start()
    with db.connection(database_url, autocommit=True) as c:
        wait_for(lambda: not readiness.components_ready(c)[1], 10, "components reported ready")
    yield
    reporter.stop()
