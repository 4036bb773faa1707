"""Emergency contacts: reached only through platforms authorised for the resident's institution,
and never silently unreached — without such a platform, or when it does not accept in time, the
duty desk is given the contacts to call."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from alerts import escalation, lifecycle, outbox
from alerts.channels.webhook import WebhookChannel
from alerts.clock import ManualClock
from alerts.models import Finding
from care import service as care

PHONE = "13800000000"  # the circle fixture's contact


class Receiver:
    """Platforms on one local HTTP server: each path is a platform; bodies recorded per path."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[dict[str, object]]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.bodies.setdefault(self.path, []).append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver():
    instance = Receiver()
    yield instance
    instance.close()


@pytest.fixture()
def hooks(conn):
    """add(path, institution_id=None, url=None) -> webhook id; deactivated afterwards."""
    created: list[int] = []

    def add(url: str, institution_id: int | None = None) -> int:
        hook = care.add_webhook(
            conn,
            name=f"platform-{uuid.uuid4().hex[:6]}",
            url=url,
            secret="s",
            min_severity="warning",
        )
        conn.execute(
            "UPDATE webhook_subscription SET institution_id = %s WHERE id = %s",
            (institution_id, hook["id"]),
        )
        created.append(hook["id"])
        return int(hook["id"])

    yield add
    conn.execute("UPDATE webhook_subscription SET active = false WHERE id = ANY(%s)", (created,))


@pytest.fixture()
def clock():
    return ManualClock(datetime.now(UTC))


def _sos(conn, circle, clock):
    return lifecycle.raise_finding(
        conn,
        resident_id=circle["resident"],
        finding=Finding(rule="sos", severity="critical", title="SOS 呼救 / SOS button pressed"),
        now=clock.now(),
    )


def _rows(conn, alert_id, **where):
    sql = (
        "SELECT kind, recipient_kind, recipient_id, channel, state, payload, last_error "
        "FROM notification WHERE alert_id = %(alert_id)s"
    )
    for column in where:
        sql += f" AND {column} = %({column})s"
    return conn.execute(sql + " ORDER BY id", {"alert_id": alert_id, **where}).fetchall()


def test_without_an_authorised_platform_the_duty_desk_is_given_the_contacts(
    conn, circle, clock, hooks, receiver
):
    everywhere = hooks(receiver.base + "/national")  # serves every institution: no phone numbers
    alert = _sos(conn, circle, clock)
    escalation.run_due(conn, clock.advance(timedelta(minutes=10)))
    (contact,) = _rows(conn, alert.id, recipient_kind="contact")
    assert contact[4] == "failed" and "no platform authorised" in contact[6]
    desk = _rows(conn, alert.id, kind="contacts_unreached")
    assert {(r[1], int(r[2])) for r in desk} == {("doctor", circle["desk"])}
    assert desk[0][5]["notify_contacts"] == [{"name": "王小明", "phone": PHONE}]
    assert conn.execute(
        "SELECT 1 FROM alert_transition WHERE alert_id = %s AND action = 'contacts_unreached'",
        (alert.id,),
    ).fetchone()
    platforms = _rows(conn, alert.id, recipient_kind="webhook")
    assert everywhere in {int(r[2]) for r in platforms}
    assert all("notify_contacts" not in r[5] for r in platforms), "no phone numbers"


def test_contacts_go_only_to_the_platform_of_the_residents_institution(
    conn, circle, clock, hooks, receiver
):
    other = care.add_institution(conn, name=f"别的中心 {uuid.uuid4().hex[:4]}", kind="care_home")
    own = hooks(receiver.base + "/own", circle["centre"])
    hooks(receiver.base + "/other", other["id"])
    hooks(receiver.base + "/national")
    alert = _sos(conn, circle, clock)
    escalation.run_due(conn, clock.advance(timedelta(minutes=10)))
    with WebhookChannel() as channel:
        outbox.dispatch(conn, {"webhook": channel}, clock.now(), alert_id=alert.id)
    assert "/other" not in receiver.bodies, "another institution's platform hears nothing of it"
    with_phones = {
        path
        for path, bodies in receiver.bodies.items()
        for body in bodies
        if PHONE in orjson.dumps(body).decode()
    }
    assert with_phones == {"/own"}
    assert _rows(conn, alert.id, recipient_kind="contact")[0][4] == "suppressed"
    assert _rows(conn, alert.id, kind="contacts_unreached") == []
    delivered = _rows(conn, alert.id, recipient_kind="webhook", recipient_id=str(own))
    assert {r[4] for r in delivered} == {"sent"}
    # Delivered: the fall-back never fires.
    escalation.run_due(conn, clock.advance(timedelta(minutes=5)))
    assert _rows(conn, alert.id, kind="contacts_unreached") == []


def test_a_platform_that_does_not_accept_in_time_hands_the_contacts_to_the_desk(
    conn, circle, clock, hooks
):
    hooks("http://127.0.0.1:9/closed", circle["centre"])  # nothing listens there
    alert = _sos(conn, circle, clock)
    escalation.run_due(conn, clock.advance(timedelta(minutes=10)))
    with WebhookChannel() as channel:
        outbox.dispatch(conn, {"webhook": channel}, clock.now(), alert_id=alert.id)
    assert _rows(conn, alert.id, kind="contacts_unreached") == [], "it may still accept"
    escalation.run_due(conn, clock.advance(timedelta(minutes=1, seconds=59)))
    assert _rows(conn, alert.id, kind="contacts_unreached") == []
    escalation.run_due(conn, clock.advance(timedelta(seconds=1)))
    desk = _rows(conn, alert.id, kind="contacts_unreached")
    assert {int(r[2]) for r in desk} == {circle["desk"]}
    assert "within 0:02:00" in desk[0][5]["reason"]
    escalation.run_due(conn, clock.advance(timedelta(minutes=1)))
    assert len(_rows(conn, alert.id, kind="contacts_unreached")) == len(desk), "once"
