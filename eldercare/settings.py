"""Settings for every eldercare process, from ELDERCARE_* environment variables.

`make run` records the endpoints it chose (free ports, the database it found) in `var/local.env`, so
any later command run from the same directory talks to that same system; the environment wins over it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def var_dir() -> Path:
    """Where local state lives (database, broker data, chosen ports): ./var unless overridden."""
    return Path(os.environ.get("ELDERCARE_VAR_DIR", "var")).resolve()


def local_env_file() -> Path:
    return var_dir() / "local.env"


@dataclass(frozen=True)
class MqttEndpoint:
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> MqttEndpoint:
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "tcp"):
            raise ValueError(f"unsupported MQTT URL scheme {parts.scheme!r}: use mqtt://host:port")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 1883,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


def redact_url(url: str) -> str:
    """A database URL or keyword conninfo (`host=… password=…`) without its password, in the
    userinfo or as a `password` parameter: safe to print and log."""
    if "://" not in url:
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError:
            return "(an unreadable connection string, not shown: it may hold a password)"
        params.pop("password", None)
        return make_conninfo("", **params)
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}@{hosts}" if user else hosts
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, v) for k, v in pairs if k != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ELDERCARE_", env_file=None, extra="ignore", frozen=True
    )

    # Unset: use the local PostgreSQL on 127.0.0.1:5432 if it answers, else a private one under var/.
    database_url: str | None = None
    # Unset: the project's own Mosquitto (its auth/ACL config), started by `make run`.
    mqtt_url: str | None = None
    # The backend's own broker login; devices each have their own (see devices/credentials.py).
    mqtt_service_username: str = "eldercare-service"
    mqtt_service_password: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # Reverse proxies (comma-separated addresses or networks) whose X-Forwarded-For the API believes
    # for the client's address (rate limits, audit log). Empty: none, the peer's address is used.
    http_trusted_proxies: str = ""
    # /readyz answers from one check at most this old: a loop of requests costs one database query
    # and one broker probe per interval, not one connection each.
    http_ready_cache_seconds: float = Field(default=2.0, ge=0, le=60)
    # /metrics serves aggregates computed in the background this often; scrapes never query.
    http_metrics_interval_seconds: float = Field(default=15.0, gt=0, le=3600)
    # 'auto' uses TimescaleDB when the extension can be created; 'off' forces plain PostgreSQL;
    # 'require' fails loudly when the extension is missing (production).
    timescale: str = Field(default="auto", pattern="^(auto|off|require)$")
    log_level: str = "INFO"

    @property
    def http_url(self) -> str:
        return f"http://{self.http_host}:{self.http_port}"

    @cached_property
    def mqtt(self) -> MqttEndpoint:
        if not self.mqtt_url:
            raise RuntimeError(
                "no broker configured: start the system with `make run` (it records the broker in "
                "var/local.env) or set ELDERCARE_MQTT_URL=mqtt://host:port"
            )
        return MqttEndpoint.parse(self.mqtt_url)

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError(
                "no database configured: run `make run` once (it records the database in "
                "var/local.env) or set ELDERCARE_DATABASE_URL=postgresql://user@host:port/db"
            )
        return self.database_url


def load_settings() -> Settings:
    env_file = local_env_file()
    return Settings(_env_file=env_file if env_file.exists() else None)  # type: ignore[call-arg]


def write_local_env(values: dict[str, str]) -> Path:
    """Record endpoints chosen at start-up so that other commands find the same system."""
    path = local_env_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"ELDERCARE_{key.upper()}={value}" for key, value in sorted(values.items())]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)
    return path
