"""`eldercare run`: the whole backend plus a device simulator on one machine, for trying it out.

Finds or starts the database, starts the project's own broker, applies migrations, records the
chosen endpoints in var/local.env (so every other command finds this system), then supervises the
processes: broker-auth sync, ingest, HTTP API and the simulator. Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devices import broker_auth, service
from eldercare.broker import Broker
from eldercare.localdb import PrivatePostgres, server_url
from eldercare.mqtt import accepts_login
from eldercare.ports import free_port, port_is_free
from eldercare.settings import MqttEndpoint, load_settings, redact_url, var_dir, write_local_env
from store import db, readiness

ELDERCARE = str(Path(sys.executable).with_name("eldercare"))


@dataclass
class Child:
    name: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    log: Path = field(default_factory=Path)
    # Added to the environment (secrets such as an app's password: never on the command line).
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class RunOptions:
    residents: int = 8
    simulate: bool = True
    http_port: int | None = None


def _say(text: str) -> None:
    print(text, flush=True)


def _pick_port(preferred: int | None, default: int) -> int:
    for port in (preferred, default):
        if port and port_is_free(port):
            return port
    return free_port()


def run(options: RunOptions) -> int:
    base = var_dir()
    base.mkdir(parents=True, exist_ok=True)
    previous = load_settings()
    private: PrivatePostgres | None = None
    broker: Broker | None = None
    children: list[Child] = []
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        # 1. Database: configured, else the local server, else a private one under var/.
        explicit_db = os.environ.get("ELDERCARE_DATABASE_URL")
        if explicit_db:
            database_url = explicit_db
        else:
            server, private = server_url(base)
            database_url = db.with_dbname(server, "eldercare")
        db.ensure_database(database_url)
        applied = db.migrate(database_url, timescale=previous.timescale)
        # 2. Broker: configured, else always the project's own with its auth/ACL config.
        service_password = previous.mqtt_service_password or secrets.token_urlsafe(24)
        with db.connection(database_url, autocommit=True) as conn:
            service.ensure_service_account(
                conn, username=previous.mqtt_service_username, password=service_password
            )
            kind = db.storage_kind(conn)
        explicit_mqtt = os.environ.get("ELDERCARE_MQTT_URL")
        if explicit_mqtt:
            mqtt_url = explicit_mqtt
        else:
            old_port = previous.mqtt.port if previous.mqtt_url else None
            broker = Broker(base / "mosquitto", _pick_port(old_port, 1883))
            broker.write_config()
            with db.connection(database_url, autocommit=True) as conn:
                broker_auth.sync(conn, broker.passwd_path, broker.acl_path, None)
            broker.start()
            mqtt_url = f"mqtt://127.0.0.1:{broker.port}"
        if options.http_port is None:
            http_port = _pick_port(previous.http_port, 8000)
        else:
            http_port = options.http_port or free_port()  # 0: any free port
        write_local_env(
            {
                "database_url": database_url,
                "mqtt_url": mqtt_url,
                "mqtt_service_password": service_password,
                "http_port": str(http_port),
            }
        )
        # 3. The processes, each a plain `eldercare` command an operator could run alone.
        logs = base / "logs"
        logs.mkdir(exist_ok=True)
        children = [
            Child("ingest", ["ingest", "--instance", "local", "--role", "telemetry"]),
            Child("ingest-events", ["ingest", "--instance", "local", "--role", "events"]),
            Child("alerts", ["alerts", "run"]),
            Child("api", ["api", "--port", str(http_port)]),
        ]
        if broker is not None:
            children.insert(0, Child("broker-sync", ["broker", "sync", "--watch"]))
        if options.simulate:
            children.append(
                Child(
                    "simulator",
                    [
                        "simulate",
                        "--residents",
                        str(options.residents),
                        "--fleet",
                        "demo",
                    ],
                )
            )
        for child in children:
            child.log = logs / f"{child.name}.log"
            if child.name != "simulator":
                _start(child)
        _wait_http(f"http://127.0.0.1:{http_port}/healthz", stop)
        # Devices (the simulator's too) publish only once ingest's sessions exist at the broker:
        # on a first start, what they sent before would be lost.
        _say("waiting for ingest to subscribe and the alert engine to listen …")
        _wait_ready(database_url, children, stop)
        for child in children:
            if child.name == "simulator":
                _start(child)
        logins = _demo_circle(database_url, options, stop) if options.simulate else []
        for login in logins:
            # The demo doctors' phones: each notification to their app is received and acknowledged.
            app = Child(
                f"app-{login.doctor_id}",
                ["care", "app-listen", str(login.doctor_id)],
                log=logs / f"app-{login.doctor_id}.log",
                env={"ELDERCARE_APP_PASSWORD": login.app_password},
            )
            if broker is not None:
                _wait_login(broker, login.app_username, login.app_password, stop)
            children.append(app)
            _start(app)
        _say("")
        _say("eldercare is running")
        _say(
            f"  database : {redact_url(database_url)} ({kind}; migrations applied now: {len(applied)})"
        )
        _say(
            f"  MQTT     : 127.0.0.1:{broker.port if broker else mqtt_url} (devices authenticate; see docs/mqtt.md)"
        )
        _say(
            f"  HTTP     : http://127.0.0.1:{http_port}  (health: /healthz, /readyz; API docs: /docs)"
        )
        _say(f"  logs     : {logs}")
        if logins:
            _say(
                "  apps     : the demo doctors' phones are played by `eldercare care app-listen` "
                "(logs/app-<doctor>.log)"
            )
        _say(
            "  try      : .venv/bin/eldercare residents list; .venv/bin/eldercare readings --resident 1 --since 10m"
        )
        if logins:
            _say(
                f"  dashboard: http://127.0.0.1:{http_port}/  — demo doctors (passwords shown only now):"
            )
            for login in logins:
                _say(
                    f"             {login.username} / {login.password}  ({login.doctor}, {login.residents} residents)"
                )
        _say("Press Ctrl-C to stop.")
        while not stop.wait(1.0):
            for child in children:
                if (
                    child.process is not None
                    and child.process.poll() is not None
                    and child.name != "simulator"
                ):
                    _say(
                        f"{child.name} exited ({child.process.returncode}); restarting — see {child.log}"
                    )
                    child.restarts += 1
                    _start(child)
        _say("stopping …")
        return 0
    finally:
        for child in reversed(children):
            _stop(child)
        if broker is not None:
            broker.stop()
        if private is not None:
            private.stop()
        _say("stopped.")


# The simulator names its devices <fleet>-<NNN>-<kind>; `make run` uses the fleet "demo".
FLEET_RESIDENTS = """
SELECT DISTINCT b.resident_id FROM device_binding b
WHERE b.device_id LIKE 'demo-%' AND b.unbound_at IS NULL ORDER BY 1
"""


def _demo_circle(database_url: str, options: RunOptions, stop: threading.Event) -> list[Any]:
    """Once the simulator has registered its residents, give them family doctors with logins."""
    from eldercare.demo import provision

    deadline = time.monotonic() + 60
    with db.connection(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline and not stop.is_set():
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM resident ORDER BY id LIMIT %s", (options.residents,)
                )
            ]
            if len(ids) >= options.residents:
                return list(provision(conn, ids))
            stop.wait(0.5)
    return []


def _wait_login(
    broker: Broker, username: str, password: str, stop: threading.Event, timeout: float = 30
) -> None:
    """Until `broker sync --watch` has given the broker this new login."""
    endpoint = MqttEndpoint("127.0.0.1", broker.port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        if accepts_login(endpoint, username, password, timeout=2):
            return
        stop.wait(0.3)
    _say(f"warning: the broker does not accept {username} yet; see var/logs/broker-sync.log")


def _start(child: Child) -> None:
    with open(child.log, "ab") as log:
        child.process = subprocess.Popen(
            [ELDERCARE, *child.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **child.env} if child.env else None,
        )


def _stop(child: Child) -> None:
    process = child.process
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# Which child reports which components (store/readiness.py).
READY_FROM = {
    "ingest": (readiness.INGEST_TELEMETRY,),
    "ingest-events": (readiness.INGEST_EVENTS, readiness.INGEST_STATUS),
    "alerts": (readiness.ALERTS,),
}


def _wait_ready(
    database_url: str, children: list[Child], stop: threading.Event, timeout: float = 60
) -> None:
    """Until this run's own children (not another system's on the same database) report ready."""
    host = socket.gethostname()

    def owners(components: list[str]) -> set[str]:
        return {name for name, parts in READY_FROM.items() if set(parts) & set(components)}

    deadline = time.monotonic() + timeout
    with db.connection(database_url, autocommit=True) as conn:
        while not stop.is_set():
            processes = {(host, c.process.pid) for c in children if c.process is not None}
            rows, now = readiness.load(conn)
            missing = readiness.not_ready(rows, readiness.REQUIRED, now, processes=processes)
            if not missing:
                return
            for child in children:
                code = child.process.poll() if child.process is not None else None
                if child.name in owners(missing) and code is not None:
                    raise RuntimeError(
                        f"{child.name} exited ({code}) before it was ready; see {child.log}"
                    )
            if time.monotonic() >= deadline:
                logs = sorted({str(c.log) for c in children if c.name in owners(missing)})
                raise RuntimeError(
                    f"not ready within {timeout:g}s: {', '.join(missing)} (not subscribed to "
                    f"the broker or not listening for device events); see {', '.join(logs)}"
                )
            stop.wait(0.2)


def _wait_http(url: str, stop: threading.Event, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            stop.wait(0.2)
    if not stop.is_set():
        raise RuntimeError(
            f"the HTTP API did not answer at {url} within {timeout}s; see var/logs/api.log"
        )
