"""Database URLs: yoyo gets every parameter intact (store/db.py), printing never shows a password
(eldercare/settings.py: redact_url)."""

from __future__ import annotations

import uuid
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from yoyo import get_backend
from yoyo.connections import parse_uri

from eldercare.settings import redact_url
from store import db
from tests.support import cli_json

AWKWARD = "p/a#s@s:w?o%rd &'x"


@pytest.fixture()
def awkward_role(conn):
    name = f"yoyo_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), AWKWARD))
    yield name
    conn.execute(f"DROP ROLE {name}")


def _url(database_url, user, password, query=""):
    params = conninfo_to_dict(database_url)
    return (
        f"postgresql://{quote(user)}:{quote(password, safe='')}@{params['host']}:"
        f"{params.get('port', 5432)}/{params['dbname']}{query}"
    )


def test_yoyo_connects_with_a_password_full_of_url_syntax(database_url, awkward_role):
    url = _url(database_url, awkward_role, AWKWARD)
    parsed = parse_uri(db._yoyo_url(url))
    assert (parsed.args["user"], parsed.args["password"]) == (awkward_role, AWKWARD)
    backend = get_backend(db._yoyo_url(url))
    try:
        assert backend.execute("SELECT current_user").fetchone() == (awkward_role,)
    finally:
        backend.connection.close()


def test_yoyo_keeps_the_other_connection_parameters(database_url):
    # This server has TLS off: that the connection fails shows sslmode reached libpq.
    with pytest.raises(psycopg.OperationalError, match="SSL"):
        get_backend(db._yoyo_url(database_url + " sslmode=require"))
    socket_dir = parse_uri(db._yoyo_url("host=/run/postgresql dbname=eldercare user=care"))
    assert socket_dir.args == {"host": "/run/postgresql", "dbname": "eldercare", "user": "care"}


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://care:secret@db:5432/eldercare", "postgresql://care@db:5432/eldercare"),
        ("postgresql://care:s%2Fe%23cret@db/eldercare", "postgresql://care@db/eldercare"),
        (
            "postgresql://care@db/eldercare?sslmode=require&password=secret",
            "postgresql://care@db/eldercare?sslmode=require",
        ),
        ("postgresql://:secret@db/eldercare", "postgresql://db/eldercare"),
        (
            "postgresql://care:secret@h1:5432,h2:5433/eldercare",
            "postgresql://care@h1:5432,h2:5433/eldercare",
        ),
        ("postgresql://db/eldercare", "postgresql://db/eldercare"),
        (
            "host=db user=care password=secret dbname=eldercare",
            "host=db user=care dbname=eldercare",
        ),
        ("host=db password='se cret \\' quoted' dbname=eldercare", "host=db dbname=eldercare"),
    ],
)
def test_redact_url_removes_every_form_of_password(url, shown):
    if "://" in url:
        assert redact_url(url) == shown
    else:  # keyword form: the same parameters, in libpq's order
        assert conninfo_to_dict(redact_url(url)) == conninfo_to_dict(shown)


def test_an_unreadable_conninfo_is_not_shown_at_all():
    shown = redact_url("host=db password='secret")
    assert "secret" not in shown and "not shown" in shown


def test_config_never_prints_the_password(env):
    keyword = env["ELDERCARE_DATABASE_URL"] + " password=topsecret"
    out = cli_json("config", env={**env, "ELDERCARE_DATABASE_URL": keyword})
    assert "topsecret" not in out["database_url"] and "dbname=" in out["database_url"]
