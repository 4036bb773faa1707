"""Tests for eldercare.localdb: the machine's PostgreSQL and the project's private cluster."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from eldercare import localdb
from eldercare.localdb import LOCAL_SERVER_URL, PrivatePostgres, local_server_answers, server_url
from eldercare.ports import free_port


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    # Not tmp_path: it lies under /tmp/pytest-of-root, which every new pytest session resets to
    # 0700, so a concurrent session would lock the server's unprivileged user out mid-test.
    path = Path(tempfile.mkdtemp(prefix="eldercare-localdb-"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _postmaster_pid(data_dir: Path) -> str:
    return (data_dir / "postmaster.pid").read_text().splitlines()[0]


def test_local_server_answers_on_5432() -> None:
    assert local_server_answers()


def test_local_server_does_not_answer_on_a_closed_port() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    assert not local_server_answers(url, timeout=1.0)


def test_server_url_prefers_the_machines_server(tmp_path: Path) -> None:
    assert server_url(tmp_path / "var") == (LOCAL_SERVER_URL, None)
    assert not (tmp_path / "var" / "postgres").exists()


def test_missing_binaries_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(localdb, "_PG_ROOT", tmp_path / "no-postgresql")
    with pytest.raises(RuntimeError, match="apt-get install postgresql"):
        PrivatePostgres(tmp_path / "postgres").start()
    assert not (tmp_path / "postgres").exists()


@pytest.mark.timeout(120)
def test_private_postgres_starts_once_and_keeps_data(shared_dir: Path) -> None:
    data_dir = shared_dir / "var" / "postgres"
    server = PrivatePostgres(data_dir)
    try:
        url = server.start()
        assert url == server.url
        assert url != LOCAL_SERVER_URL
        assert server.is_running()
        assert local_server_answers(url)
        assert (data_dir / "eldercare-port").read_text().strip() == str(server.port)

        pid = _postmaster_pid(data_dir)
        assert server.start() == url
        assert _postmaster_pid(data_dir) == pid  # the second start touched nothing

        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE kept (note text)")
            conn.execute("INSERT INTO kept VALUES ('survives a restart')")

        server.stop()
        assert not server.is_running()
        assert not local_server_answers(url, timeout=1.0)
        server.stop()  # stopping a stopped server is a no-op

        # A fresh object, as a later `make run` would make: the port comes from the data dir.
        again = PrivatePostgres(data_dir)
        assert again.start() == url
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT note FROM kept").fetchall() == [("survives a restart",)]
    finally:
        server.stop()
    assert not server.is_running()
