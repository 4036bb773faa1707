"""Two transactions raising the same alert at once (two SOS presses on two engine threads, or two
engines) give one alert, never a crash on the one-open-alert-per-rule index."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from alerts import lifecycle
from alerts.models import Finding
from store import db


def test_the_same_alert_raised_concurrently_is_one_alert(database_url, circle, conn):
    now = datetime.now(UTC)
    finding = Finding(rule="sos", severity="critical", title="SOS", device_id="btn-race")
    first = db.connect(database_url)  # not autocommit: holds its transaction open
    errors: list[BaseException] = []
    raised: list[int] = []

    def second() -> None:
        try:
            with db.connection(database_url, autocommit=True) as other:
                raised.append(
                    lifecycle.raise_finding(
                        other, resident_id=circle["resident"], finding=finding, now=now
                    ).id
                )
        except BaseException as exc:
            errors.append(exc)

    try:
        first.execute("SELECT 1")  # an open transaction: raise_finding's block is a savepoint in it
        opened = lifecycle.raise_finding(
            first, resident_id=circle["resident"], finding=finding, now=now
        )
        racer = threading.Thread(target=second)
        racer.start()
        racer.join(1.0)
        assert racer.is_alive(), "the second raise waits for the first transaction"
        first.commit()
        racer.join(20)
    finally:
        first.close()
    assert not errors, errors
    assert raised == [opened.id]
    rows = conn.execute(
        "SELECT count(*), max(occurrences) FROM alert WHERE resident_id = %s AND rule = 'sos'",
        (circle["resident"],),
    ).fetchone()
    assert rows == (1, 2)
