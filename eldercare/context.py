"""What every command needs: settings and a database connection, with errors that say what to do."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from eldercare.output import fail
from eldercare.settings import Settings, load_settings, redact_url
from store.db import connect


def settings() -> Settings:
    return load_settings()


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@contextmanager
def database(cfg: Settings | None = None) -> Iterator[psycopg.Connection]:
    cfg = cfg or settings()
    try:
        url = cfg.require_database_url()
    except RuntimeError as exc:
        fail(str(exc))
    try:
        conn = connect(url, autocommit=True)
    except psycopg.OperationalError as exc:
        fail(
            f"cannot reach the database at {redact_url(url)}: {str(exc).strip()}. Is it running (make run)?"
        )
    try:
        yield conn
    except psycopg.errors.UndefinedTable:
        fail("the database has no eldercare tables yet: run `eldercare migrate`")
    finally:
        conn.close()
