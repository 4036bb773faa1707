"""Reads and writes of the device registry: residents, devices, bindings, broker accounts.

Every change commits in one transaction; triggers bump `registry_change.version` (in the same transaction) and notify
`eldercare_registry`, which the ingestor's cache and the broker-auth sync listen to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import psycopg
from psycopg.rows import class_row

from devices import queries
from devices.credentials import hash_password, new_password
from devices.models import DEVICE_KINDS, Device, Resident


class RegistryError(Exception):
    """A request the registry refuses; the message says what to do instead."""


class DuplicateArchive(RegistryError):
    """The archive number belongs to another resident. Callers who may not see that resident get
    a generic refusal (api/views/admin.py): the number is not confirmed to another tenant."""

    def __init__(self, archive_id: str | None) -> None:
        super().__init__(f"archive number {archive_id} already belongs to another resident")
        self.archive_id = archive_id


# Broker logins of the backend's own processes (ELDERCARE_MQTT_SERVICE_USERNAME) live here: a
# device id in this namespace could take over or shadow one of them.
RESERVED_PREFIX = "eldercare-"
# Doctors' app logins: eldercare-doctor-<doctor id>.
DOCTOR_LOGIN_PREFIX = f"{RESERVED_PREFIX}doctor-"


@dataclass(frozen=True)
class EmergencyContact:
    name: str
    phone: str
    relation: str | None = None
    priority: int = 1


@dataclass(frozen=True)
class NewLogin:
    """A doctor's app login; the password is shown once, only its hash is stored."""

    username: str
    password: str
    doctor_id: int


@dataclass(frozen=True)
class NewDevice:
    device: Device
    mqtt_username: str
    mqtt_password: str  # shown once; only its hash is stored


def add_resident(
    conn: psycopg.Connection,
    *,
    name: str,
    birth_date: date | None = None,
    gender: str | None = None,
    address: str | None = None,
    archive_id: str | None = None,
    spo2_scale: int = 1,
    contacts: Sequence[EmergencyContact] = (),
) -> Resident:
    if not name.strip():
        raise RegistryError("a resident needs a name")
    if archive_id is not None and not (len(archive_id) == 17 and archive_id.isdigit()):
        raise RegistryError(
            "the health archive number (健康档案编号) has 17 digits: county 6 + township 3 + village 3 "
            "+ serial 5"
        )
    params = dict(
        name=name.strip(),
        birth_date=birth_date,
        gender=gender,
        address=address,
        archive_id=archive_id,
        spo2_scale=spo2_scale,
    )
    try:
        with conn.transaction(), conn.cursor(row_factory=class_row(Resident)) as cur:
            resident = cur.execute(queries.INSERT_RESIDENT, params).fetchone()
            assert resident is not None
            for contact in contacts:
                cur.execute(
                    queries.INSERT_CONTACT,
                    (resident.id, contact.name, contact.phone, contact.relation, contact.priority),
                )
    except psycopg.errors.UniqueViolation:
        raise DuplicateArchive(archive_id) from None
    except psycopg.errors.CheckViolation as exc:
        raise RegistryError(f"invalid resident: {exc.diag.message_primary}") from None
    return resident


def list_residents(conn: psycopg.Connection) -> list[Resident]:
    with conn.cursor(row_factory=class_row(Resident)) as cur:
        return cur.execute(queries.SELECT_RESIDENTS).fetchall()


def get_resident(conn: psycopg.Connection, resident_id: int) -> Resident:
    with conn.cursor(row_factory=class_row(Resident)) as cur:
        resident = cur.execute(queries.SELECT_RESIDENT, (resident_id,)).fetchone()
    if resident is None:
        raise RegistryError(f"no resident {resident_id}: see `eldercare residents list`")
    return resident


def list_contacts(conn: psycopg.Connection, resident_id: int) -> list[EmergencyContact]:
    with conn.cursor(row_factory=class_row(EmergencyContact)) as cur:
        return cur.execute(queries.SELECT_CONTACTS, (resident_id,)).fetchall()


def get_device(conn: psycopg.Connection, device_id: str) -> Device:
    with conn.cursor(row_factory=class_row(Device)) as cur:
        device = cur.execute(queries.SELECT_DEVICE, (device_id,)).fetchone()
    if device is None:
        raise RegistryError(f"no device {device_id!r}: see `eldercare devices list`")
    return device


def owner(conn: psycopg.Connection, device_id: str) -> int | None:
    """The institution a device belongs to (None: managed by system administrators only)."""
    row = conn.execute(queries.SELECT_DEVICE_OWNER, (device_id,)).fetchone()
    if row is None:
        raise RegistryError(f"no device {device_id!r}: see `eldercare devices list`")
    institution_id: int | None = row[0]
    return institution_id


def set_owner(conn: psycopg.Connection, *, device_id: str, institution_id: int | None) -> None:
    conn.execute(queries.SET_DEVICE_OWNER, (institution_id, device_id))


def list_devices(
    conn: psycopg.Connection, *, resident_id: int | None = None, include_retired: bool = False
) -> list[Device]:
    with conn.cursor(row_factory=class_row(Device)) as cur:
        return cur.execute(
            queries.SELECT_DEVICES, {"resident_id": resident_id, "include_retired": include_retired}
        ).fetchall()


def add_device(
    conn: psycopg.Connection,
    *,
    device_id: str,
    kind: str,
    model: str | None = None,
    resident_id: int | None = None,
    bound_from: datetime | None = None,
) -> NewDevice:
    """Register a device (bound to `resident_id` from `bound_from`, default now) with a new login."""
    if kind not in DEVICE_KINDS:
        raise RegistryError(f"unknown device kind {kind!r}; known: {', '.join(DEVICE_KINDS)}")
    if device_id.lower().startswith(RESERVED_PREFIX):
        raise RegistryError(
            f"device ids starting with {RESERVED_PREFIX!r} are reserved for eldercare's own "
            "broker accounts; choose another id"
        )
    password = new_password()
    try:
        with conn.transaction():
            if resident_id is not None:
                get_resident(conn, resident_id)
            conn.execute(queries.INSERT_DEVICE, (device_id, kind, model))
            if resident_id is not None:
                conn.execute(
                    queries.OPEN_BINDING,
                    {
                        "device_id": device_id,
                        "resident_id": resident_id,
                        "at": bound_from or datetime_now(conn),
                    },
                )
            _set_account(
                conn, username=device_id, password=password, role="device", device_id=device_id
            )
    except psycopg.errors.UniqueViolation:
        raise RegistryError(f"device {device_id!r} already exists") from None
    except psycopg.errors.CheckViolation:
        raise RegistryError(
            f"invalid device id {device_id!r}: use 1-64 letters, digits, '.', '_' or '-'"
        ) from None
    return NewDevice(get_device(conn, device_id), device_id, password)


def bind(
    conn: psycopg.Connection, *, device_id: str, resident_id: int, at: datetime | None = None
) -> Device:
    """Bind a device to a resident from `at` (default now), ending any earlier binding then."""
    with conn.transaction():
        device = get_device(conn, device_id)
        if device.status != "active":
            raise RegistryError(f"device {device_id} is retired; add a new device instead")
        get_resident(conn, resident_id)
        moment = at or datetime_now(conn)
        conn.execute(queries.CLOSE_BINDING, {"device_id": device_id, "at": moment})
        conn.execute(
            queries.OPEN_BINDING, {"device_id": device_id, "resident_id": resident_id, "at": moment}
        )
    return get_device(conn, device_id)


def unbind(conn: psycopg.Connection, *, device_id: str, at: datetime | None = None) -> Device:
    with conn.transaction():
        get_device(conn, device_id)
        closed = conn.execute(
            queries.CLOSE_BINDING, {"device_id": device_id, "at": at or datetime_now(conn)}
        ).fetchone()
        if closed is None:
            raise RegistryError(f"device {device_id} is not bound to anyone")
    return get_device(conn, device_id)


def retire(conn: psycopg.Connection, *, device_id: str) -> Device:
    """Take a device out of service for good: binding closed, broker login revoked, data kept."""
    with conn.transaction():
        device = get_device(conn, device_id)
        if device.status == "retired":
            raise RegistryError(f"device {device_id} is already retired")
        conn.execute(queries.CLOSE_BINDING, {"device_id": device_id, "at": datetime_now(conn)})
        conn.execute(queries.RETIRE_DEVICE, (device_id,))
        conn.execute(queries.REVOKE_ACCOUNT, (device_id,))
    return get_device(conn, device_id)


def rotate_credentials(conn: psycopg.Connection, *, device_id: str) -> NewDevice:
    with conn.transaction():
        device = get_device(conn, device_id)
        if device.status != "active":
            raise RegistryError(f"device {device_id} is retired; it gets no new credentials")
        password = new_password()
        _set_account(
            conn, username=device_id, password=password, role="device", device_id=device_id
        )
    return NewDevice(device, device_id, password)


def ensure_service_account(conn: psycopg.Connection, *, username: str, password: str) -> None:
    """The backend's own broker login (ingest, alerts): full access to eldercare topics."""
    with conn.transaction():
        _set_account(conn, username=username, password=password, role="service", device_id=None)


def doctor_login_name(doctor_id: int) -> str:
    """In the reserved namespace: no device id can be, or take over, a doctor's app login."""
    return f"{DOCTOR_LOGIN_PREFIX}{doctor_id}"


def create_doctor_login(
    conn: psycopg.Connection, *, doctor_id: int, rotate: bool = False
) -> NewLogin:
    """The broker login of a doctor's (or duty desk's) app: reads only
    `eldercare/v1/doctors/{id}/alerts`, publishes only to `…/acks` (devices/broker_auth.py).
    Refused when one is in force, unless `rotate`: then it gets a new password and the old one
    stops working at the next broker sync. The password is returned once; only its hash is kept."""
    with conn.transaction():
        row = conn.execute(queries.SELECT_DOCTOR_ACTIVE, (doctor_id,)).fetchone()
        if row is None:
            raise RegistryError(f"no doctor {doctor_id}: see `eldercare care doctor`")
        if not row[0]:
            raise RegistryError(f"doctor {doctor_id} is no longer active: no app login")
        existing = conn.execute(queries.SELECT_DOCTOR_LOGIN, (doctor_id,)).fetchone()
        if existing is not None and not rotate:
            raise RegistryError(
                f"doctor {doctor_id} already has an app login ({existing[0]}): --rotate gives it "
                "a new password, --revoke ends it"
            )
        password = new_password()
        username = doctor_login_name(doctor_id)
        _set_account(
            conn,
            username=username,
            password=password,
            role="doctor",
            device_id=None,
            doctor_id=doctor_id,
        )
    return NewLogin(username, password, doctor_id)


def revoke_doctor_login(conn: psycopg.Connection, *, doctor_id: int) -> str:
    """End a doctor's app login (at the next broker sync); returns its username."""
    with conn.transaction():
        row = conn.execute(queries.REVOKE_DOCTOR_LOGIN, (doctor_id,)).fetchone()
    if row is None:
        raise RegistryError(f"doctor {doctor_id} has no app login in force")
    username: str = row[0]
    return username


def _set_account(
    conn: psycopg.Connection,
    *,
    username: str,
    password: str,
    role: str,
    device_id: str | None,
    doctor_id: int | None = None,
) -> None:
    row = conn.execute(
        queries.UPSERT_ACCOUNT,
        {
            "username": username,
            "password_hash": hash_password(password),
            "role": role,
            "device_id": device_id,
            "doctor_id": doctor_id,
        },
    ).fetchone()
    if row is None:
        # Device ids cannot start with RESERVED_PREFIX, so only the service account can stand in the
        # way of a device or an app login.
        raise RegistryError(
            f"broker username {username!r} already belongs to "
            + {
                "device": "a service account; choose another device id",
                "service": "a device or a doctor's app; set ELDERCARE_MQTT_SERVICE_USERNAME to "
                "a name no device or app uses",
            }.get(role, "the service account; set ELDERCARE_MQTT_SERVICE_USERNAME to another name")
        )


def datetime_now(conn: psycopg.Connection) -> datetime:
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    value: datetime = row[0]
    return value
