"""Where `make run` and the tests find PostgreSQL when nothing is configured.

A Debian machine with `apt-get install postgresql` has the packaged cluster on 127.0.0.1:5432 with
trust auth for `postgres`; when that does not answer, the project runs a cluster of its own (data,
log and socket under var/postgres) with the packaged server binaries, on a port of its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import pwd
import re
import shlex
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

from eldercare.ports import free_port

LOCAL_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PORT_FILE = "eldercare-port"
LOG_FILE = "server.log"

_PG_ROOT = Path("/usr/lib/postgresql")
# sun_path holds 107 bytes; with a longer socket path the server refuses to start at all.
_MAX_SOCKET_PATH = 107
_START_TIMEOUT = 60


def local_server_answers(url: str = LOCAL_SERVER_URL, timeout: float = 2.0) -> bool:
    """True when `url` accepts a connection and runs `SELECT 1` within about `timeout` seconds."""
    try:
        # libpq counts whole seconds (and treats anything under 2 as 2).
        with psycopg.connect(url, connect_timeout=max(1, math.ceil(timeout))) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except (psycopg.Error, OSError):
        return False


class PrivatePostgres:
    """A PostgreSQL cluster of the project's own, with its data, log and socket in `data_dir`."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        # Absolute, because pg_ctl and the server run with "/" as working directory.
        self.data_dir = data_dir.resolve()
        self._fixed_port = port is not None
        self.port: int = port if port is not None else self._recorded_port() or free_port()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def log_file(self) -> Path:
        return self.data_dir / LOG_FILE

    def start(self) -> str:
        """Initialise the cluster if needed, start it unless it runs, wait for it; the URL."""
        with self._lock():
            if self._data_version() is None:
                self._initdb()
            self._make_reachable()
            running = self._running_port()
            if running is not None:
                # Possibly started by another process (or an earlier `make run`): use it as it is.
                self.port = running
                self._wait_until_answering()
                return self.url
            if not self._fixed_port:
                self.port = self._recorded_port() or self.port
                if not _port_available(self.port):
                    # The recorded port went to something else meanwhile; URLs are not promised.
                    self.port = free_port()
            (self.data_dir / PORT_FILE).write_text(f"{self.port}\n")
            self._pg_ctl_start()
            self._wait_until_answering()
            return self.url

    def stop(self) -> None:
        """Fast shutdown (open sessions are cut off), only when the server is running."""
        with self._lock():
            if not self.is_running():
                return
            pg_ctl = self._bin_dir() / "pg_ctl"
            result = self._run(
                [
                    pg_ctl,
                    "-D",
                    self.data_dir,
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    str(_START_TIMEOUT),
                    "stop",
                ],
                timeout=_START_TIMEOUT + 30,
            )
            if result.returncode != 0 and self.is_running():
                raise RuntimeError(
                    f"pg_ctl could not stop PostgreSQL in {self.data_dir}: "
                    f"{(result.stderr or result.stdout).strip()}\n{self._log_tail()}\n"
                    f"Stop it by hand: kill the pid on the first line of "
                    f"{self.data_dir / 'postmaster.pid'}."
                )

    def is_running(self) -> bool:
        return self._running_port() is not None

    def _initdb(self) -> None:
        initdb = self._bin_dir() / "initdb"  # before touching anything on disk
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise RuntimeError(
                f"{self.data_dir} is not empty but holds no PostgreSQL cluster (no PG_VERSION): "
                "move it away or delete it, then start again."
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = _service_user()
            os.chown(self.data_dir, user.pw_uid, user.pw_gid)
        self.data_dir.chmod(0o700)
        self._make_reachable()
        command: list[str | Path] = [initdb, "-D", self.data_dir, "-A", "trust", "-U", "postgres"]
        command += ["-E", "UTF8", "--locale=C.UTF-8"]
        result = self._run(command, timeout=180)
        if result.returncode != 0:
            raise RuntimeError(
                f"initdb failed for {self.data_dir} (exit {result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}\n"
                f"Fix the cause above, delete {self.data_dir} and start again."
            )

    def _pg_ctl_start(self) -> None:
        # The socket lives in the data directory: /var/run/postgresql belongs to the packaged
        # cluster and may not be writable by the user the server runs as.
        socket_dir = str(self.data_dir)
        if len(f"{socket_dir}/.s.PGSQL.{self.port}") > _MAX_SOCKET_PATH:
            socket_dir = ""  # no Unix socket at all: TCP is what the URL uses anyway
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {shlex.quote(socket_dir)}"
        pg_ctl = self._bin_dir() / "pg_ctl"
        command: list[str | Path] = [pg_ctl, "-D", self.data_dir, "-l", self.log_file, "-w"]
        command += ["-t", str(_START_TIMEOUT), "-o", options, "start"]
        try:
            result = self._run(command, timeout=_START_TIMEOUT + 30)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"pg_ctl start for {self.data_dir} hung.\n{self._log_tail()}"
            ) from exc
        if result.returncode != 0:
            raise RuntimeError(
                f"PostgreSQL in {self.data_dir} did not start on port {self.port} "
                f"(pg_ctl exit {result.returncode}): {(result.stderr or result.stdout).strip()}\n"
                f"{self._log_tail()}\n"
                f"Fix the cause above (another server on the port? delete {self.data_dir} to "
                "start afresh) and run again."
            )

    def _wait_until_answering(self, timeout: float = 30.0) -> None:
        # pg_ctl -w returns once the postmaster says "ready"; wait for a real TCP session as well,
        # and for a server another process is still starting.
        deadline = time.monotonic() + timeout
        while not local_server_answers(self.url, timeout=2.0):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL in {self.data_dir} runs but {self.url} does not answer after "
                    f"{timeout:.0f}s.\n{self._log_tail()}"
                )
            time.sleep(0.1)

    def _running_port(self) -> int | None:
        """The port of the live server of this data directory, None when none runs."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            return None
        if not _is_postgres_process(pid):
            return None  # a stale file after a crash: the server clears it on its next start
        try:
            return int(lines[3])
        except (ValueError, IndexError):
            return self.port  # the server is writing the file right now; the port is ours

    def _recorded_port(self) -> int | None:
        try:
            return int((self.data_dir / PORT_FILE).read_text().strip())
        except (OSError, ValueError):
            return None

    def _data_version(self) -> str | None:
        try:
            return (self.data_dir / "PG_VERSION").read_text().strip()
        except OSError:
            return None

    def _bin_dir(self) -> Path:
        version = self._data_version()
        if version is None:
            return newest_bin_dir()
        bin_dir = _PG_ROOT / version / "bin"
        if not (bin_dir / "pg_ctl").is_file():
            # A cluster can only be run by the major version that made it.
            raise RuntimeError(
                f"{self.data_dir} was made by PostgreSQL {version}, which is not installed: "
                f"run `apt-get install postgresql-{version}`, or delete {self.data_dir} to start "
                "afresh with the installed version."
            )
        return bin_dir

    def _make_reachable(self) -> None:
        if os.geteuid() == 0:
            user = _service_user()
            _grant_traversal(self.data_dir, user.pw_uid, user.pw_gid)

    def _run(self, command: list[str | Path], timeout: float) -> subprocess.CompletedProcess[str]:
        # PostgreSQL refuses to run as root, so as root its tools run as an unprivileged user.
        user = _service_user() if os.geteuid() == 0 else None
        return subprocess.run(
            [str(part) for part in command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd="/",  # root's working directory may be closed to that user
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
        )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            tail = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"(no {self.log_file})"
        return f"--- last lines of {self.log_file} ---\n" + "\n".join(tail)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # `make run` and test sessions may start the same cluster at once; initdb and pg_ctl must
        # not race. The lock sits beside the data directory, which initdb wants empty.
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.data_dir.parent / f".{self.data_dir.name}.lock"
        with lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield


def server_url(var_dir: Path) -> tuple[str, PrivatePostgres | None]:
    """A server to use: the machine's, or the project's own (returned too, to stop it later)."""
    if local_server_answers():
        return LOCAL_SERVER_URL, None
    private = PrivatePostgres(var_dir / "postgres")
    return private.start(), private


def newest_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/VERSION/bin holding initdb and pg_ctl."""
    found: dict[tuple[int, ...], Path] = {}
    for bin_dir in _PG_ROOT.glob("*/bin"):
        version = bin_dir.parent.name
        if re.fullmatch(r"\d+(\.\d+)*", version) and all(
            (bin_dir / tool).is_file() for tool in ("initdb", "pg_ctl")
        ):
            found[tuple(int(part) for part in version.split("."))] = bin_dir
    if not found:
        raise RuntimeError(
            f"No PostgreSQL server binaries in {_PG_ROOT}/*/bin and no server on 127.0.0.1:5432: "
            "run `apt-get install postgresql`."
        )
    return found[max(found)]


def _service_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return pwd.getpwnam("nobody")


def _grant_traversal(path: Path, uid: int, gid: int) -> None:
    """Let uid:gid search every ancestor of `path`, adding the one x bit that applies to it."""
    for parent in path.parents:
        mode = parent.stat()
        if mode.st_uid == uid:
            bit = stat.S_IXUSR
        elif mode.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            # Search only, not listing: e.g. pytest's 0700 tmp dirs or a repo under /root.
            bit = stat.S_IXOTH
        if not mode.st_mode & bit:
            parent.chmod(stat.S_IMODE(mode.st_mode) | bit)


def _is_postgres_process(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    # After a crash and a reboot the pid in postmaster.pid may belong to something else.
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() in ("postgres", "postmaster")
    except OSError:
        return True


def _port_available(port: int) -> bool:
    # SO_REUSEADDR as the server itself sets it: leftover TIME_WAIT connections do not count.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
