"""Login rate limits: failed attempts per account and address, per address, and across addresses,
checked and counted in one step in the database."""

from __future__ import annotations

import psycopg

from api import queries
from api.access.errors import AccessError

LOGIN_WINDOW = "5 minutes"
LOGIN_WINDOW_S = 5 * 60  # the same, for the Retry-After header
# Failed logins allowed within the window. Per account and address (guessing one password from one
# place): an attacker elsewhere uses up only their own address's tries, never the doctor's.
LOGIN_MAX_FAILURES = 5
# Per address, over all accounts (trying many accounts from one place; higher, because a clinic's
# staff may share one address).
ADDRESS_MAX_FAILURES = 30
# The slow-down for a guess spread over many addresses: once an account has this many failures
# from all addresses together, every address may fail on it only SLOWED_MAX_FAILURES times. No
# lockout: a first attempt from anywhere is always tried, so the doctor still gets in.
ACCOUNT_SLOWDOWN_AFTER = 20
SLOWED_MAX_FAILURES = 1


def reserve_attempt(conn: psycopg.Connection, *, username: str, address: str) -> int:
    """Count one login attempt as a failure before its password is checked, if the limits allow
    one more (429 otherwise); `release_attempt` takes it back when the password was right.

    Check and record are one step under the address's and the account's advisory locks, so
    concurrent attempts never get more tries than the limits, whichever API process they reach."""
    limits = {
        "username": username,
        "address": address,
        "window": LOGIN_WINDOW,
        "pair_max": LOGIN_MAX_FAILURES,
        "address_max": ADDRESS_MAX_FAILURES,
        "slowdown_after": ACCOUNT_SLOWDOWN_AFTER,
        "slowed_max": SLOWED_MAX_FAILURES,
    }
    with conn.transaction():
        conn.execute(queries.LOCK_LOGIN_ADDRESS, (address,))
        conn.execute(queries.LOCK_LOGIN_ACCOUNT, (username,))
        row = conn.execute(queries.RESERVE_LOGIN_ATTEMPT, limits).fetchone()
    if row is None:
        raise AccessError(
            429,
            "too many failed logins from this address; wait five minutes",
            retry_after_s=LOGIN_WINDOW_S,
        )
    # Rows older than the window count for nothing; the audit log keeps the history.
    conn.execute(queries.PRUNE_FAILURES, {"window": LOGIN_WINDOW})
    attempt: int = row[0]
    return attempt


def release_attempt(conn: psycopg.Connection, attempt: int) -> None:
    """The attempt succeeded: it does not count as a failure."""
    conn.execute(queries.RELEASE_LOGIN_ATTEMPT, (attempt,))
