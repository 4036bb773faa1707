"""Demo residents and their devices in the registry, created once per fleet name and then reused.

Every resident wears a wristband; residents 1, 4, 7 … (every 3rd, counting from the first) also
have a blood-pressure cuff and residents 1, 5, 9 … (every 4th) an SOS button, so even a fleet of one
can show every episode. Device ids are `{fleet}-{NNN}-{kind}`; that is how a re-run with the same
`--fleet` finds its residents and devices again. The registry keeps only password hashes, so every
run rotates the devices' broker passwords (service.rotate_credentials): a second simulator with the
same fleet name, started while one runs, logs the first one's devices out at the next broker sync.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import psycopg

from devices import service
from devices.models import Device
from devices.service import EmergencyContact, RegistryError
from ingest.contract.envelope import Limits

FLEET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
MAX_RESIDENTS = 999  # three digits in the device ids
COUNTY = "310115"  # 上海市浦东新区 (GB/T 2260), the first 6 digits of the health archive number
# Bindings start this far back so that accelerated runs, which replay the past (plan.py), and
# backlog uploads fall inside them: the whole backfill window the contract accepts.
BOUND_SINCE = Limits().backfill_window

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN_FEMALE = ("秀英", "桂英", "秀兰", "玉兰", "桂兰", "凤英", "玉珍", "淑珍", "素珍", "丽华")
GIVEN_MALE = ("建国", "国华", "德明", "志强", "文华", "建军", "保国", "振华", "永华", "德胜")
CHILD_GIVEN = ("伟", "敏", "静", "磊", "军", "洋", "勇", "艳", "杰", "娟")
ROADS = ("张杨路", "东方路", "浦电路", "峨山路", "崂山路", "潍坊路", "源深路", "福山路")


@dataclass(frozen=True)
class Person:
    name: str
    gender: str
    birth_date: date
    address: str
    contact: EmergencyContact


@dataclass(frozen=True)
class FleetResident:
    index: int
    resident_id: int
    name: str
    created: bool


@dataclass(frozen=True)
class FleetDevice:
    device_id: str
    kind: str
    resident_index: int
    resident_id: int
    password: str  # fresh for this run; the registry stores only its hash
    created: bool


@dataclass(frozen=True)
class Fleet:
    name: str
    residents: tuple[FleetResident, ...]
    devices: tuple[FleetDevice, ...]


def device_kinds(index: int) -> tuple[str, ...]:
    kinds = ["wristband"]
    if index % 3 == 0:
        kinds.append("bp_cuff")
    if index % 4 == 0:
        kinds.append("sos_button")
    return tuple(kinds)


def device_id(fleet: str, index: int, kind: str) -> str:
    return f"{fleet}-{index + 1:03d}-{kind}"


def demo_person(fleet: str, index: int) -> Person:
    """A plausible older resident of Pudong, the same for the same fleet and index."""
    rng = random.Random(f"{fleet}/{index}")
    surname = rng.choice(SURNAMES)
    gender = "female" if rng.random() < 0.6 else "male"  # women outnumber men among the old
    given = rng.choice(GIVEN_FEMALE if gender == "female" else GIVEN_MALE)
    birth = date(1930, 1, 1) + timedelta(
        days=rng.randrange((date(1955, 12, 31) - date(1930, 1, 1)).days)
    )
    child = surname + rng.choice(CHILD_GIVEN)
    phone = f"13{rng.choice('89')}{rng.randrange(10**8):08d}"
    address = (
        f"上海市浦东新区{rng.choice(ROADS)}{rng.randint(10, 1500)}弄"
        f"{rng.randint(1, 40)}号{rng.randint(1, 18)}{rng.randint(1, 4):02d}室"
    )
    relation = rng.choice(("son", "daughter"))
    return Person(
        f"{surname}{given}", gender, birth, address, EmergencyContact(child, phone, relation)
    )


def archive_id(fleet: str, index: int, attempt: int = 0) -> str:
    """17 digits per CLINICAL.md: county 6 + township 3 + village 3 + serial 5."""
    rng = random.Random(f"{fleet}/{index}/archive/{attempt}")
    return f"{COUNTY}{rng.randint(1, 40):03d}{rng.randint(1, 30):03d}{rng.randint(1, 99999):05d}"


def provision(conn: psycopg.Connection, *, fleet: str, residents: int, now: datetime) -> Fleet:
    """The fleet's residents and devices, created where missing; every device gets a new login."""
    if not FLEET_NAME.match(fleet):
        raise RegistryError("a fleet name has 1-32 letters, digits, '_' or '-' (e.g. demo)")
    if not 1 <= residents <= MAX_RESIDENTS:
        raise RegistryError(f"a fleet has 1-{MAX_RESIDENTS} residents")
    people: list[FleetResident] = []
    devices: list[FleetDevice] = []
    for index in range(residents):
        resident = _resident(conn, fleet, index)
        people.append(resident)
        for kind in device_kinds(index):
            devices.append(_device(conn, fleet, resident, kind, now - BOUND_SINCE))
    return Fleet(fleet, tuple(people), tuple(devices))


def _resident(conn: psycopg.Connection, fleet: str, index: int) -> FleetResident:
    anchor = device_id(fleet, index, "wristband")
    wristband = _find(conn, anchor)
    if wristband is not None:
        if wristband.resident_id is None:
            raise RegistryError(
                f"{anchor} is no longer bound to a resident; bind it again or use another --fleet"
            )
        found = service.get_resident(conn, wristband.resident_id)
        return FleetResident(index, found.id, found.name, created=False)
    person = demo_person(fleet, index)
    for attempt in range(20):
        try:
            created = service.add_resident(
                conn,
                name=person.name,
                birth_date=person.birth_date,
                gender=person.gender,
                address=person.address,
                archive_id=archive_id(fleet, index, attempt),
                contacts=[person.contact],
            )
        except RegistryError as exc:
            if "already belongs" in str(exc):
                continue  # another resident has this archive number: draw another serial
            raise
        return FleetResident(index, created.id, created.name, created=True)
    raise RegistryError(f"no free health archive number found for resident {index + 1}")


def _device(
    conn: psycopg.Connection, fleet: str, resident: FleetResident, kind: str, bound_from: datetime
) -> FleetDevice:
    ident = device_id(fleet, resident.index, kind)
    existing = _find(conn, ident)
    if existing is None:
        new = service.add_device(
            conn,
            device_id=ident,
            kind=kind,
            model="eldercare-sim",
            resident_id=resident.resident_id,
            bound_from=bound_from,
        )
        return FleetDevice(
            ident, kind, resident.index, resident.resident_id, new.mqtt_password, True
        )
    if existing.status != "active":
        raise RegistryError(f"{ident} was retired; use another --fleet name")
    if existing.resident_id != resident.resident_id:
        raise RegistryError(
            f"{ident} is bound to resident {existing.resident_id}, not {resident.resident_id}"
        )
    rotated = service.rotate_credentials(conn, device_id=ident)
    return FleetDevice(
        ident, kind, resident.index, resident.resident_id, rotated.mqtt_password, False
    )


def _find(conn: psycopg.Connection, ident: str) -> Device | None:
    try:
        return service.get_device(conn, ident)
    except RegistryError:
        return None
