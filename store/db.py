"""Database connections, creation of the project's database, and schema migrations (yoyo)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# Keepalives let a process notice a dead database host instead of waiting forever on a socket;
# keepalives cover idle connections only, so a query sent into a silent network partition is
# bounded by tcp_user_timeout (ms of unacknowledged data; a long query is acknowledged at once).
_KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


def is_transient(exc: BaseException) -> bool:
    """True for database errors that go away by themselves: lost connections, deadlocks and
    serialization failures (psycopg's OperationalError covers those), and a read-only server, which
    is what a primary that failed over to a standby looks like until the next connection. Work that
    failed with one of these is retried, never quarantined."""
    return isinstance(exc, psycopg.OperationalError | psycopg.errors.ReadOnlySqlTransaction)


def conninfo(url: str, application_name: str = "eldercare") -> str:
    """`url` with the settings every connection of ours uses (timeouts, keepalives, a name)."""
    return make_conninfo(url, application_name=application_name, connect_timeout=10, **_KEEPALIVE)


def connect(
    url: str, *, autocommit: bool = False, application_name: str = "eldercare"
) -> psycopg.Connection:
    return psycopg.connect(conninfo(url, application_name), autocommit=autocommit)


@retry(
    retry=retry_if_exception_type(psycopg.OperationalError),
    wait=wait_exponential(multiplier=0.2, max=3),
    stop=stop_after_delay(60),
    reraise=True,
)
def connect_with_retry(
    url: str, *, autocommit: bool = False, application_name: str = "eldercare"
) -> psycopg.Connection:
    """Connect, waiting up to a minute for a database that is still starting."""
    return connect(url, autocommit=autocommit, application_name=application_name)


def keep_connected(
    url: str,
    name: str,
    stop: threading.Event,
    body: Callable[[psycopg.Connection], None],
    *,
    pause_after_error_s: float = 1.0,
) -> None:
    """Run `body(conn)` on an autocommit connection until `stop` is set, starting again on a fresh
    connection after it ends or fails: a thread that must outlive any database trouble (the alert
    engine's). A lost connection pauses 1 s, any other error `pause_after_error_s`; both are
    logged, neither ends the loop. `body` loops itself and returns only to be called again."""
    while not stop.is_set():
        try:
            with connect_with_retry(url, autocommit=True, application_name=name) as conn:
                body(conn)
        except psycopg.OperationalError as exc:
            log.error("%s: lost the database (%s); reconnecting", name, exc)
            stop.wait(1)
        except Exception:
            log.exception("%s failed; starting again in a moment", name)
            stop.wait(pause_after_error_s)


@contextmanager
def connection(url: str, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
    conn = connect(url, autocommit=autocommit)
    try:
        yield conn
    finally:
        conn.close()


def with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo("", **params)


def database_name(url: str) -> str:
    return str(conninfo_to_dict(url).get("dbname") or "")


def ensure_database(url: str) -> bool:
    """Create the database named in `url` if it is missing; True when it was created."""
    name = database_name(url)
    with connection(with_dbname(url, "postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def drop_database(url: str) -> None:
    name = database_name(url)
    with connection(with_dbname(url, "postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def migrate(url: str, *, timescale: str = "auto") -> list[str]:
    """Apply pending migrations; returns the ids applied. `timescale`: auto | off | require."""
    from yoyo import get_backend, read_migrations

    # The time-series migration reads this to decide hypertables vs plain tables (0002).
    with connection(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET eldercare.timescale = {}").format(
                sql.Identifier(database_name(url)), sql.Literal(timescale)
            )
        )
    backend = get_backend(_yoyo_url(url))
    migrations = read_migrations(str(MIGRATIONS_DIR))
    try:
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
    finally:
        backend.connection.close()
    applied = [m.id for m in pending]
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    return applied


def _yoyo_url(url: str) -> str:
    """yoyo's URI for `url` (URL or keyword form). Every connection parameter goes into the query
    string, percent-encoded; yoyo hands those to psycopg.connect as keywords. So a password with
    '/', '#' or '@', sslmode, a unix-socket host and any other libpq parameter arrive unchanged."""
    params = {key: str(value) for key, value in conninfo_to_dict(url).items() if value is not None}
    dbname = quote(params.get("dbname", ""), safe="")
    return f"postgresql+psycopg:///{dbname}?{urlencode(params)}"


def storage_kind(conn: psycopg.Connection) -> str:
    """'timescaledb' when readings live in a hypertable, else 'postgresql'."""
    row = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    if not row or not row[0]:
        return "postgresql"
    row = conn.execute(
        "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'reading'"
    ).fetchone()
    return "timescaledb" if row and row[0] else "postgresql"
