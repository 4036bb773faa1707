"""The login rate limit: per account and address, so that an attacker cannot lock a doctor out from
somewhere else; per address; a slow-down for a guess spread over many addresses; and atomic, so
that concurrent wrong attempts never get more tries than the limit."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from fastapi.testclient import TestClient

from api import access
from api.access import AccessError
from store import db
from tests.test_api import client, world  # noqa: F401 - fixtures

LOGIN = "/api/v1/auth/login"
# The limits (api/access/login_limits.py), as numbers: what an operator reads in docs/api.md.
PER_ADDRESS_AND_ACCOUNT = 5
PER_ADDRESS = 30
SLOWED_AFTER = 20  # failures on one account from all addresses together


def _from(client, address: str) -> TestClient:  # noqa: F811
    """A client of the same running app whose requests come from `address`."""
    return TestClient(client.app, client=(address, 40000))


def _login(http: TestClient, username: str, password: str) -> int:
    return http.post(LOGIN, json={"username": username, "password": password}).status_code


def _fill(conn: psycopg.Connection, username: str, addresses: list[str]) -> None:
    """Recent failed attempts for `username`, one from each address (an attack already going on)."""
    for address in addresses:
        conn.execute(
            "INSERT INTO login_failure (username, address) VALUES (%s, %s)", (username, address)
        )


def test_an_attacker_elsewhere_cannot_lock_the_doctor_out(client, world, conn):  # noqa: F811
    username, password = world["users"]["a"]
    attacker, doctor = _from(client, "203.0.113.66"), _from(client, "198.51.100.7")
    tries = [_login(attacker, username, "guess") for _ in range(8)]
    assert tries == [401] * PER_ADDRESS_AND_ACCOUNT + [429] * 3
    assert _login(attacker, username, password) == 429, "the attacker's address stays blocked"
    # Apps and platforms are told when to try again (the window), instead of hammering the limit.
    blocked = attacker.post(LOGIN, json={"username": username, "password": password})
    assert blocked.headers.get("retry-after") == "300", blocked.headers
    # The doctor, from the clinic, is not: a typo is a 401, the right password gets in.
    assert _login(doctor, username, "typo") == 401
    assert _login(doctor, username, password) == 200
    # The same for a platform's OAuth2 client credentials.
    platform = str(
        conn.execute(
            "SELECT client_id FROM api_token WHERE token_hash = %s",
            (access.token_hash(world["own_key"]),),
        ).fetchone()[0]
    )
    form = {"grant_type": "client_credentials", "client_id": platform, "client_secret": "guess"}
    token = "/api/v1/auth/token"
    answers = [attacker.post(token, data=form) for _ in range(6)]
    assert [a.status_code for a in answers] == [401] * 5 + [429]
    assert answers[-1].headers.get("retry-after") == "300"
    granted = doctor.post(token, data={**form, "client_secret": world["own_key"]})
    assert granted.status_code == 200, granted.text


def test_a_successful_login_does_not_count_as_a_failure(client, world):  # noqa: F811
    username, password = world["users"]["b"]
    clinic = _from(client, "198.51.100.8")
    assert [_login(clinic, username, "typo") for _ in range(4)] == [401] * 4
    assert _login(clinic, username, password) == 200
    assert _login(clinic, username, "typo") == 401, "the fifth failure is still tried"
    assert _login(clinic, username, password) == 429


def test_too_many_accounts_tried_from_one_address_are_refused(client, world, conn):  # noqa: F811
    spray = "203.0.113.77"
    tag = uuid.uuid4().hex[:6]
    for n in range(PER_ADDRESS - 1):
        conn.execute(
            "INSERT INTO login_failure (username, address) VALUES (%s, %s)", (f"x{n}-{tag}", spray)
        )
    sprayer = _from(client, spray)
    assert _login(sprayer, f"last-{tag}", "guess") == 401
    assert _login(sprayer, f"more-{tag}", "guess") == 429
    username, password = world["users"]["a"]
    assert _login(sprayer, username, password) == 429, "the address is blocked for every account"
    assert _login(_from(client, "198.51.100.9"), username, password) == 200


def test_a_guess_spread_over_many_addresses_is_slowed_down_not_a_lockout(client, world, conn):  # noqa: F811
    username, password = world["users"]["a"]
    _fill(conn, username, [f"192.0.2.{n}" for n in range(1, SLOWED_AFTER + 1)])
    # Each further address gets one guess only (instead of five) while the account is under attack.
    another = _from(client, "203.0.113.99")
    assert [_login(another, username, "guess") for _ in range(3)] == [401, 429, 429]
    # The doctor's first attempt from anywhere is always tried: the right password gets in.
    assert _login(_from(client, "198.51.100.10"), username, password) == 200
    # An account not under attack keeps its five tries per address.
    other_user = world["users"]["b"][0]
    tries = [_login(another, other_user, "guess") for _ in range(6)]
    assert tries == [401] * PER_ADDRESS_AND_ACCOUNT + [429]


def _concurrently(database_url: str, attempts: list[tuple[str, str, str]]) -> list[int]:
    """Run the logins (username, password, address) at the same moment, each on its own
    connection as API processes would; the status each ended with."""
    barrier = threading.Barrier(len(attempts))
    results: list[int] = [0] * len(attempts)

    def attempt(i: int, username: str, password: str, address: str) -> None:
        with db.connection(database_url, autocommit=True) as conn:
            barrier.wait(30)
            try:
                access.login(conn, username=username, password=password, address=address)
                results[i] = 200
            except AccessError as exc:
                results[i] = exc.status

    threads = [threading.Thread(target=attempt, args=(i, *a)) for i, a in enumerate(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(r for r in results), results
    return results


@pytest.mark.parametrize("already", [0, 3])
def test_concurrent_wrong_attempts_never_exceed_the_limit(database_url, world, conn, already):  # noqa: F811
    username = world["users"]["b"][0]
    address = f"203.0.113.{10 + already}"
    _fill(conn, username, [address] * already)
    results = _concurrently(database_url, [(username, "guess", address)] * 10)
    assert results.count(401) == PER_ADDRESS_AND_ACCOUNT - already, results
    assert results.count(429) == 10 - (PER_ADDRESS_AND_ACCOUNT - already)


def test_concurrent_attempts_on_many_accounts_never_exceed_the_address_limit(database_url, conn):
    address, tag = "203.0.113.88", uuid.uuid4().hex[:6]
    _fill(conn, f"earlier-{tag}", [address] * (PER_ADDRESS - 2))
    results = _concurrently(database_url, [(f"u{n}-{tag}", "guess", address) for n in range(8)])
    assert results.count(401) == 2 and results.count(429) == 6, results
