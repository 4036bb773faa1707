"""Broker accounts: device and service logins share one namespace and never turn into each other."""

from __future__ import annotations

import uuid

import pytest

from devices import service


def _account(conn, username):
    return conn.execute(
        "SELECT role, password_hash, device_id FROM broker_account WHERE username = %s",
        (username,),
    ).fetchone()


def test_a_device_id_that_is_a_service_login_is_refused(conn):
    name = f"backend-{uuid.uuid4().hex[:6]}"  # a custom ELDERCARE_MQTT_SERVICE_USERNAME
    service.ensure_service_account(conn, username=name, password="secret-1")
    before = _account(conn, name)
    with pytest.raises(service.RegistryError, match="already belongs to a service account"):
        service.add_device(conn, device_id=name, kind="wristband")
    assert _account(conn, name) == before
    assert conn.execute("SELECT 1 FROM device WHERE device_id = %s", (name,)).fetchone() is None


def test_a_service_login_that_is_a_device_id_is_refused(conn):
    device_id = f"wb-{uuid.uuid4().hex[:6]}"
    service.add_device(conn, device_id=device_id, kind="wristband")
    before = _account(conn, device_id)
    with pytest.raises(service.RegistryError, match="ELDERCARE_MQTT_SERVICE_USERNAME"):
        service.ensure_service_account(conn, username=device_id, password="secret-2")
    assert _account(conn, device_id) == before and before[0] == "device"


@pytest.mark.parametrize("device_id", ["eldercare-alerts", "Eldercare-Service"])
def test_the_service_namespace_is_reserved(conn, device_id):
    with pytest.raises(service.RegistryError, match="reserved"):
        service.add_device(conn, device_id=device_id, kind="sos_button")


def test_same_kind_updates_still_work(conn):
    name = f"backend-{uuid.uuid4().hex[:6]}"
    service.ensure_service_account(conn, username=name, password="one")
    first = _account(conn, name)
    service.ensure_service_account(conn, username=name, password="two")  # password changed
    assert _account(conn, name)[1] != first[1]
    device_id = f"wb-{uuid.uuid4().hex[:6]}"
    new = service.add_device(conn, device_id=device_id, kind="wristband")
    rotated = service.rotate_credentials(conn, device_id=device_id)
    assert rotated.mqtt_password != new.mqtt_password
    assert _account(conn, device_id)[0] == "device"
