"""Emergencies are never lost: faulty SOS/fall messages are stored, handed to alerting and acked.

Through the real broker and database, with the in-process ingestor (tests/conftest.py).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import orjson
import psycopg

from ingest import hooks
from store import db
from tests.support import Subscriber, cli_json, new_msg_id, now_ms, wait_for


def _event(conn, device_id, msg_id):
    return conn.execute(
        """SELECT type, occurred_at, received_at, lat, payload, ingest_problems, raw_payload,
                  resident_id
           FROM device_event WHERE device_id = %s AND msg_id = %s""",
        (device_id, msg_id),
    ).fetchone()


def _acks(subscriber):
    return [orjson.loads(p) for _, p in subscriber.messages]


# Generous: the database and broker are shared with other test runs on a loaded machine.
ACK_TIMEOUT = 30


def _ack_for(subscriber, msg_id):
    try:
        return wait_for(
            lambda: next((a for a in _acks(subscriber) if a.get("msg_id") == msg_id), None),
            ACK_TIMEOUT,
            f"ack of {msg_id}",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; acks received: {_acks(subscriber)}") from None


FAULTY_EMERGENCIES = [
    # (what the device sent, the repair recorded)
    (lambda m: {"msg_id": m, "ts": 0, "type": "sos"}, "clock_skew"),
    (lambda m: {"msg_id": m, "ts": now_ms() + 3_600_000, "type": "fall"}, "clock_skew"),
    (lambda m: {"msg_id": m, "type": "sos", "note": "a\u0000b"}, "nul_removed"),
    (
        lambda m: {"msg_id": m, "type": "sos", "location": {"lat": 0, "lon": None}},
        "invalid_location",
    ),
]


def test_faulty_emergencies_are_stored_notified_hooked_and_acked(
    register, ingestor, endpoint, conn, database_url
):
    device = register("sos_button")
    hooked: list[hooks.StoredEvent] = []
    hook = hooks.on_device_event(hooked.append)
    acks = Subscriber(endpoint, device.device_id, device.password, device.topic("ack"))
    with db.connection(database_url, autocommit=True) as listener:
        listener.execute("LISTEN eldercare_device_event")
        try:
            sent = []
            for build, code in FAULTY_EMERGENCIES:
                msg_id = new_msg_id()
                payload = orjson.dumps(build(msg_id))
                device.publish("events", payload, raw=True)
                sent.append((msg_id, code, payload))
            for msg_id, code, payload in sent:
                ack = _ack_for(acks, msg_id)
                assert ack["status"] == "received" and ack["problems"] == [code], ack
                _kind, occurred, received, lat, stored, problems, raw, resident = _event(
                    conn, device.device_id, msg_id
                )
                assert resident == device.resident_id
                assert [p["code"] for p in problems] == [code] and problems[0]["detail"]
                assert bytes(raw) == payload  # what arrived, byte for byte
                if code == "clock_skew":
                    assert occurred == received
                if code == "nul_removed":
                    assert stored["note"] == "ab"
                if code == "invalid_location":
                    assert lat is None
            notified = {}
            for note in listener.notifies(timeout=5, stop_after=len(sent)):
                body = orjson.loads(note.payload)
                notified[body["id"]] = body["problems"]
            wait_for(lambda: len(hooked) >= len(sent), what="the in-process hook")
            assert {e.id: list(e.problems) for e in hooked} == notified
            assert sorted(p for ps in notified.values() for p in ps) == sorted(
                code for _, code, _ in sent
            )
            # No quarantine: every one of them counted.
            assert (
                conn.execute(
                    "SELECT count(*) FROM quarantine WHERE device_id = %s", (device.device_id,)
                ).fetchone()[0]
                == 0
            )
        finally:
            hooks.remove_hook(hook)
            acks.close()


def test_a_resent_emergency_without_msg_id_is_stored_once_and_acked_each_time(
    register, ingestor, endpoint, conn
):
    device = register("sos_button")
    acks = Subscriber(endpoint, device.device_id, device.password, device.topic("ack"))
    try:
        payload = b'{"type": "SOS", "ts": 0, "note": "\xff\xfe"}'  # a firmware with every fault
        device.publish("events", payload, raw=True)
        device.publish("events", payload, raw=True)
        got = acks.wait(lambda m: len(m) >= 2, ACK_TIMEOUT)
        first, second = (orjson.loads(p) for _, p in got[:2])
        assert first["msg_id"] == second["msg_id"] and first["msg_id"].startswith("derived-")
        assert set(first["problems"]) == {
            "invalid_utf8",
            "invalid_msg_id",
            "type_normalised",
            "clock_skew",
        }
        rows = conn.execute(
            "SELECT type, raw_payload FROM device_event WHERE device_id = %s", (device.device_id,)
        ).fetchall()
        assert [(kind, bytes(raw)) for kind, raw in rows] == [("sos", payload)]
    finally:
        acks.close()


def test_an_emergency_whose_payload_the_database_refuses_is_stored_without_it(
    register, ingestor, endpoint, conn
):
    device = register("fall_detector")
    # A refusal the ingest cannot foresee (as jsonb refuses NUL characters), for this device only.
    conn.execute(
        f"""
        CREATE FUNCTION refuse_{device.device_id.replace("-", "_")}() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.device_id = '{device.device_id}' AND NEW.payload ? 'poison' THEN
                RAISE check_violation USING MESSAGE = 'payload not allowed here';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_poison BEFORE INSERT ON device_event
            FOR EACH ROW EXECUTE FUNCTION refuse_{device.device_id.replace("-", "_")}();
        """
    )
    acks = Subscriber(endpoint, device.device_id, device.password, device.topic("ack"))
    try:
        msg_id = new_msg_id()
        payload = orjson.dumps({"msg_id": msg_id, "type": "fall", "poison": 1})
        device.publish("events", payload, raw=True)
        assert _ack_for(acks, msg_id)["problems"] == ["payload_refused"]
        kind, _, _, _, stored, problems, raw, _ = _event(conn, device.device_id, msg_id)
        assert (kind, stored, bytes(raw)) == ("fall", {}, payload)
        assert "payload not allowed here" in problems[0]["detail"]
        # A non-emergency the database refuses goes to quarantine, and the device hears why.
        cancel = new_msg_id()
        device.publish("events", {"msg_id": cancel, "type": "fall_cancel", "poison": 1})
        ack = _ack_for(acks, cancel)
        assert (ack["status"], ack["reason"]) == ("rejected", "storage_error")
        assert conn.execute(
            "SELECT reason FROM quarantine WHERE device_id = %s", (device.device_id,)
        ).fetchall() == [("storage_error",)]
    finally:
        acks.close()
        conn.execute("DROP TRIGGER refuse_poison ON device_event")
        conn.execute(f"DROP FUNCTION refuse_{device.device_id.replace('-', '_')}()")


def test_a_refused_ordinary_event_is_quarantined_and_answered(register, ingestor, endpoint, conn):
    device = register("sos_button")
    acks = Subscriber(endpoint, device.device_id, device.password, device.topic("ack"))
    try:
        msg_id = new_msg_id()
        device.publish("events", {"msg_id": msg_id, "type": "sos_cancel", "ts": 0})
        ack = _ack_for(acks, msg_id)
        assert (ack["status"], ack["reason"]) == ("rejected", "too_old") and ack["detail"]
        assert conn.execute(
            "SELECT reason FROM quarantine WHERE device_id = %s", (device.device_id,)
        ).fetchall() == [("too_old",)]
    finally:
        acks.close()


def test_an_sos_from_a_retired_device_is_stored_with_a_note(
    register, ingestor, endpoint, conn, env
):
    device = register("sos_button")
    acks = Subscriber(endpoint, device.device_id, device.password, device.topic("ack"))
    try:
        device.client()  # connected before retirement: the broker keeps the session open
        cli_json("devices", "retire", device.device_id, env=env)
        msg_id = new_msg_id()
        device.publish("events", {"msg_id": msg_id, "type": "sos"})
        assert _ack_for(acks, msg_id)["problems"] == ["retired_device"]
        _, _, _, _, _, problems, _, resident = _event(conn, device.device_id, msg_id)
        assert resident is None and problems[0]["code"] == "retired_device"
        cancel = new_msg_id()
        device.publish("events", {"msg_id": cancel, "type": "sos_cancel"})
        assert _ack_for(acks, cancel)["reason"] == "retired_device"
    finally:
        acks.close()


def test_an_emergency_waits_out_a_read_only_database_instead_of_being_quarantined(
    register, ingestor, endpoint, conn, database_url, caplog
):
    """A primary that failed over looks read-only until the ingestor reconnects: retry, never
    quarantine, never acknowledge before it is stored."""
    device, other = register("sos_button"), register("wristband")
    name = db.database_name(database_url)
    acks = Subscriber(endpoint, device.device_id, device.password, device.topic("ack"))
    try:
        conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        conn.execute(
            """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
               WHERE datname = current_database() AND application_name LIKE 'eldercare-ingest-%'"""
        )
        sos, reading = new_msg_id(), new_msg_id()
        device.publish("events", {"msg_id": sos, "type": "sos"})
        other.telemetry({"heart_rate": 70}, msg_id=reading)
        wait_for(lambda: "ReadOnlySqlTransaction" in caplog.text, what="a read-only refusal")
        assert acks.messages == []
    finally:
        conn.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
    try:
        assert _ack_for(acks, sos)["status"] == "received"
        wait_for(lambda: _event(conn, device.device_id, sos), what="the sos stored")
        wait_for(
            lambda: conn.execute("SELECT 1 FROM reading WHERE msg_id = %s", (reading,)).fetchone(),
            what="the reading stored",
        )
        assert (
            conn.execute(
                "SELECT count(*) FROM quarantine WHERE device_id IN (%s, %s)",
                (device.device_id, other.device_id),
            ).fetchone()[0]
            == 0
        )
    finally:
        acks.close()


def test_hooks_fire_once_per_event_and_a_failing_hook_harms_nothing(
    register, ingestor, endpoint, conn
):
    device = register("sos_button")
    seen: list[hooks.StoredEvent] = []
    fired = threading.Event()

    def broken(_event: hooks.StoredEvent) -> None:
        raise RuntimeError("a buggy alert hook")

    def record(event: hooks.StoredEvent) -> None:
        seen.append(event)
        fired.set()

    hooks.on_device_event(broken)
    hooks.on_device_event(record)
    acks = Subscriber(endpoint, device.device_id, device.password, device.topic("ack"))
    try:
        msg_id = new_msg_id()
        ts = datetime.now(UTC) - timedelta(seconds=3)
        body = {
            "msg_id": msg_id,
            "type": "sos",
            "ts": ts.isoformat(),
            "location": {"lat": 31.2, "lon": 121.5},
        }
        device.publish("events", body)
        device.publish("events", body)  # a re-send: acked again, stored and hooked once
        acks.wait(lambda m: len(m) >= 2, ACK_TIMEOUT)
        assert fired.wait(5)
        (event,) = seen
        row = conn.execute(
            "SELECT id FROM device_event WHERE device_id = %s AND msg_id = %s",
            (device.device_id, msg_id),
        ).fetchone()
        assert (event.id, event.type, event.device_id, event.resident_id) == (
            row[0],
            "sos",
            device.device_id,
            device.resident_id,
        )
        assert abs(event.occurred_at - ts) < timedelta(milliseconds=1)
        assert (event.lat, event.lon, event.problems) == (31.2, 121.5, ())
    finally:
        hooks.remove_hook(broken)
        hooks.remove_hook(record)
        acks.close()


def test_psycopg_read_only_is_transient():
    assert db.is_transient(psycopg.errors.ReadOnlySqlTransaction())
    assert db.is_transient(psycopg.errors.DeadlockDetected())
    assert not db.is_transient(psycopg.errors.CheckViolation())


def test_an_sos_with_a_number_beyond_a_double_is_stored_and_acked(
    register, ingestor, endpoint, conn
):
    device = register("sos_button")
    acks = Subscriber(endpoint, device.device_id, device.password, device.topic("ack"))
    try:
        sent = {}
        for huge in ("1" + "0" * 400, "1" + "0" * 5000):  # beyond a double; beyond int() too
            msg_id = new_msg_id()
            payload = f'{{"msg_id": "{msg_id}", "type": "sos", "ts": {huge}}}'.encode()
            device.publish("events", payload, raw=True)
            sent[msg_id] = payload
        for msg_id, payload in sent.items():
            ack = _ack_for(acks, msg_id)
            assert ack["status"] == "received" and "non_finite" in ack["problems"], ack
            kind, occurred, received, _lat, stored, problems, raw, _res = _event(
                conn, device.device_id, msg_id
            )
            assert kind == "sos" and occurred == received and bytes(raw) == payload
            assert stored["ts"] is None and "non_finite" in {p["code"] for p in problems}
        assert (
            conn.execute(
                "SELECT count(*) FROM quarantine WHERE device_id = %s", (device.device_id,)
            ).fetchone()[0]
            == 0
        )
    finally:
        acks.close()
