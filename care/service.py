"""Reads and writes of care relationships and the rules they obey, for the CLI (care/cli.py) and
the API (api/views/admin_*.py); the SQL is in care/queries.py."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal, get_args

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from alerts.models import SEVERITIES
from care import queries
from devices import queries as registry_queries
from devices.service import DuplicateArchive

# Each list is written once, as a Literal type (the API's schemas and mypy use it); the tuple is
# taken from it for the checks below and the CLI's help.
InstitutionKind = Literal[
    "community_health_centre",
    "township_hospital",
    "care_home",
    "care_home_medical_room",
    "partner_hospital",
    "duty_desk",
]
INSTITUTION_KINDS: tuple[InstitutionKind, ...] = get_args(InstitutionKind)
TierTarget = Literal[
    "contracted_doctor", "team", "duty_desk", "partner_duty_desk", "emergency_contacts"
]
TIER_TARGETS: tuple[TierTarget, ...] = get_args(TierTarget)
CHANNELS = ("mqtt", "email")


class CareError(Exception):
    """A request about care relationships that is refused; the message says what to do."""


class ThresholdError(CareError):
    """Limits that cannot be set: not a metric, outside what a reading can be, or no room between
    low and high (invalid input rather than a conflict: the API answers 422). `side`: the limit
    at fault ('low' or 'high'), None for both."""

    def __init__(self, message: str, side: str | None = None) -> None:
        super().__init__(message)
        self.side = side


def _one(conn: psycopg.Connection, statement: str, params: Any) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(statement, params).fetchone()
    assert row is not None
    return row


def _exists(conn: psycopg.Connection, table: str, row_id: int, what: str) -> None:
    statement = sql.SQL(queries.ROW_EXISTS).format(table=sql.Identifier(table))
    if conn.execute(statement, (row_id,)).fetchone() is None:
        raise CareError(f"no {what} {row_id}")


def add_institution(
    conn: psycopg.Connection,
    *,
    name: str,
    kind: str,
    phone: str | None = None,
    with_duty_desk: bool = True,
) -> dict[str, Any]:
    """An institution, and (by default) its duty desk as a recipient of alerts."""
    if kind not in INSTITUTION_KINDS:
        raise CareError(f"unknown institution kind {kind!r}; known: {', '.join(INSTITUTION_KINDS)}")
    with conn.transaction():
        row = _one(conn, queries.INSERT_INSTITUTION, (name, kind, phone))
        if with_duty_desk:
            desk = _one(conn, queries.INSERT_DUTY_DESK, (f"{name} 值班台", row["id"], phone))
            row["duty_desk_id"] = desk["id"]
    return row


def add_doctor(
    conn: psycopg.Connection,
    *,
    name: str,
    institution_id: int | None = None,
    team: str | None = None,
    phone: str | None = None,
    email: str | None = None,
) -> dict[str, Any]:
    with conn.transaction():
        if institution_id is not None:
            _exists(conn, "institution", institution_id, "institution")
        return _one(conn, queries.INSERT_DOCTOR, (name, institution_id, team, phone, email))


def set_preferences(
    conn: psycopg.Connection,
    *,
    doctor_id: int,
    channels: dict[str, list[str]] | None = None,
    quiet_start: str | None = None,
    quiet_end: str | None = None,
    timezone: str | None = None,
) -> dict[str, Any]:
    """Which channels for which severities, and quiet hours (never applied to critical alerts)."""
    if channels is not None:
        for severity, names in channels.items():
            if severity not in SEVERITIES:
                raise CareError(f"unknown severity {severity!r}: use info, warning or critical")
            unknown = [n for n in names if n not in CHANNELS]
            if unknown:
                raise CareError(
                    f"unknown channel {', '.join(unknown)}; doctors get: {', '.join(CHANNELS)}"
                )
        if "mqtt" not in channels.get("critical", ["mqtt"]):
            raise CareError(
                "critical alerts always go to the doctor's app (mqtt); add other channels to it"
            )
    with conn.transaction():
        _exists(conn, "doctor", doctor_id, "doctor")
        return _one(
            conn,
            queries.UPDATE_PREFERENCES,
            (
                Jsonb(channels) if channels is not None else None,
                quiet_start,
                quiet_end,
                timezone,
                doctor_id,
            ),
        )


def add_contract(
    conn: psycopg.Connection,
    *,
    resident_id: int,
    doctor_id: int,
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
) -> dict[str, Any]:
    """家庭医生签约: the resident's contracted family doctor from `valid_from` (default now)."""
    with conn.transaction():
        _exists(conn, "resident", resident_id, "resident")
        _exists(conn, "doctor", doctor_id, "doctor")
        return _one(conn, queries.INSERT_CONTRACT, (resident_id, doctor_id, valid_from, valid_to))


def is_contracted(conn: psycopg.Connection, *, resident_id: int, doctor_id: int) -> bool:
    """Whether the doctor has an active contract (家庭医生签约) with the resident now."""
    row = conn.execute(queries.IS_CONTRACTED, (resident_id, doctor_id)).fetchone()
    return bool(row and row[0])


def set_resident_institution(
    conn: psycopg.Connection, *, resident_id: int, institution_id: int
) -> None:
    with conn.transaction():
        _exists(conn, "resident", resident_id, "resident")
        _exists(conn, "institution", institution_id, "institution")
        conn.execute(queries.SET_RESIDENT_INSTITUTION, (institution_id, resident_id))


def add_agreement(
    conn: psycopg.Connection, *, care_home_id: int, medical_institution_id: int
) -> dict[str, Any]:
    """A care home's medical cooperation agreement: covers all of the care home's residents."""
    with conn.transaction():
        _exists(conn, "institution", care_home_id, "institution")
        _exists(conn, "institution", medical_institution_id, "institution")
        return _one(conn, queries.INSERT_AGREEMENT, (care_home_id, medical_institution_id))


def set_policy(
    conn: psycopg.Connection,
    *,
    institution_id: int | None,
    severity: str,
    tiers: list[dict[str, Any]],
    reminder_every_s: int | None,
) -> dict[str, Any]:
    """Escalation tiers for one severity (institution None: the default policy)."""
    if severity not in SEVERITIES:
        raise CareError("severity must be info, warning or critical")
    if not tiers or tiers[0].get("after_s") != 0:
        raise CareError("the first tier must notify at once (after_s 0)")
    for tier in tiers:
        unknown = [t for t in tier.get("notify", []) if t not in TIER_TARGETS]
        if unknown or not tier.get("notify"):
            raise CareError(f"each tier notifies some of: {', '.join(TIER_TARGETS)}")
    with conn.transaction():
        if institution_id is not None:
            _exists(conn, "institution", institution_id, "institution")
        return _one(
            conn,
            queries.UPSERT_POLICY,
            (institution_id, severity, reminder_every_s, Jsonb(tiers)),
        )


def check_threshold(metric: str, *, low: float | None, high: float | None) -> None:
    """Refuse limits no reading can cross (ThresholdError). A reading outside the metric's
    plausible range (ingest/metrics.py) is quarantined, never judged, so a high at or above the
    range's top, or a low at or below its bottom, would silence the rule for the resident."""
    from ingest.metrics import METRICS

    if metric not in METRICS:
        raise ThresholdError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    m = METRICS[metric]
    for side, value in (("low", low), ("high", high)):
        if value is not None and not math.isfinite(value):
            raise ThresholdError(f"{side} must be a number, not {value}", side)
    plausible = f"(plausible: {m.low:g}–{m.high:g} {m.unit})"
    if high is not None and high >= m.high:
        raise ThresholdError(
            f"{metric}: high {high:g} would never alert: a reading above {m.high:g} {m.unit} "
            f"is refused as implausible {plausible}; give a high below {m.high:g}",
            "high",
        )
    if low is not None and low <= m.low:
        raise ThresholdError(
            f"{metric}: low {low:g} would never alert: a reading below {m.low:g} {m.unit} "
            f"is refused as implausible {plausible}; give a low above {m.low:g}",
            "low",
        )


def set_threshold(
    conn: psycopg.Connection,
    *,
    resident_id: int,
    metric: str,
    low: float | None,
    high: float | None,
    set_by: str,
) -> dict[str, Any]:
    """The doctor's limits for one resident and metric. A side given as None keeps the rule's
    default (alerts/rules/limits.py effective_limits): `high=200` for systolic_bp raises the crisis limit
    and leaves hypotension at ≤ 90. Both None puts the metric back on the defaults. Each side must
    be one a reading can cross (check_threshold), and the limits that result must leave room
    between them, or every reading would alert (ThresholdError). The answer also holds the
    limits in force (`effective`) and the override replaced (`previous`, None if none)."""
    from alerts.rules.limits import Limits, defaults_for, effective_limits

    check_threshold(metric, low=low, high=high)
    with conn.transaction():
        _exists(conn, "resident", resident_id, "resident")
        scale = conn.execute(queries.RESIDENT_SPO2_SCALE, (resident_id,))
        row = scale.fetchone()
        default = defaults_for(row[0] if row else 1).get(metric, Limits())
        merged = effective_limits(default, Limits(low, high))
        if merged.low is not None and merged.high is not None and merged.low >= merged.high:
            raise ThresholdError(
                f"{metric}: low {merged.low:g} must be below high {merged.high:g}"
                + (" (the default)" if low is None or high is None else "")
                + "; give both sides"
            )
        with conn.cursor(row_factory=dict_row) as cur:
            previous = cur.execute(queries.THRESHOLD_FOR_UPDATE, (resident_id, metric)).fetchone()
        return _one(conn, queries.UPSERT_THRESHOLD, (resident_id, metric, low, high, set_by)) | {
            "effective": {"low": merged.low, "high": merged.high},
            "previous": previous,
        }


def add_webhook(
    conn: psycopg.Connection,
    *,
    name: str,
    url: str,
    secret: str,
    min_severity: str = "warning",
    institution_id: int | None = None,
) -> dict[str, Any]:
    """A platform receiving alerts by signed webhook. With `institution_id`, that institution's
    alerts only, including the emergency contacts to call (names and phones); without, every
    institution's alerts, never with contacts (alerts/fanout.py to_contacts)."""
    if not url.startswith(("http://", "https://")):
        raise CareError("the webhook URL must start with http:// or https://")
    if min_severity not in SEVERITIES:
        raise CareError("min_severity must be info, warning or critical")
    with conn.transaction():
        if institution_id is not None:
            _exists(conn, "institution", institution_id, "institution")
        row = _one(conn, queries.INSERT_WEBHOOK, (name, url, secret, min_severity, institution_id))
    return row


def end_contract(
    conn: psycopg.Connection, *, contract_id: int, valid_to: datetime | None = None
) -> dict[str, Any]:
    """End a contract at `valid_to` (default now): from then on the doctor no longer sees the
    resident nor gets their alerts."""
    with conn.transaction():
        with conn.cursor(row_factory=dict_row) as cur:
            contract = cur.execute(queries.CONTRACT_FOR_UPDATE, (contract_id,)).fetchone()
        if contract is None:
            raise CareError(f"no contract {contract_id}")
        now = contract.pop("now")
        if contract["valid_to"] is not None and contract["valid_to"] <= now:
            raise CareError(f"contract {contract_id} ended already at {contract['valid_to']}")
        moment = valid_to or now
        if moment <= contract["valid_from"]:
            raise CareError(f"a contract ends after it began ({contract['valid_from']})")
        return _one(conn, queries.END_CONTRACT, (moment, contract_id))


# What an update of a resident may change (contacts are replaced as a whole, see below).
RESIDENT_FIELDS = (
    "name",
    "archive_id",
    "birth_date",
    "gender",
    "address",
    "spo2_scale",
    "institution_id",
)


def update_resident(
    conn: psycopg.Connection,
    *,
    resident_id: int,
    changes: dict[str, Any],
    contacts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Change some of RESIDENT_FIELDS, and replace the emergency contacts when `contacts` is given
    (in the order of priority: an escalation calls them in that order)."""
    unknown = set(changes) - set(RESIDENT_FIELDS)
    if unknown:
        raise CareError(f"cannot change {', '.join(sorted(unknown))}")
    try:
        with conn.transaction():
            _exists(conn, "resident", resident_id, "resident")
            if changes.get("institution_id") is not None:
                _exists(conn, "institution", changes["institution_id"], "institution")
            if changes:
                conn.execute(
                    sql.SQL(queries.UPDATE_RESIDENT).format(
                        assignments=sql.SQL(", ").join(
                            sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k))
                            for k in changes
                        )
                    ),
                    {**changes, "resident_id": resident_id},
                )
            if contacts is not None:
                _replace_contacts(conn, resident_id, contacts)
    except psycopg.errors.UniqueViolation:
        raise DuplicateArchive(changes.get("archive_id")) from None
    except psycopg.errors.CheckViolation as exc:
        raise CareError(f"invalid resident: {exc.diag.message_primary}") from None
    return resident_record(conn, resident_id)


def _replace_contacts(
    conn: psycopg.Connection, resident_id: int, contacts: list[dict[str, Any]]
) -> None:
    # A contact who stays (same name and phone) keeps its row: an escalation in progress does not
    # take them for someone new and call them twice.
    existing = {
        (name, phone): contact_id
        for contact_id, name, phone in conn.execute(queries.CONTACT_KEYS, (resident_id,))
    }
    for priority, contact in enumerate(contacts, start=1):
        values = (contact["name"], contact["phone"], contact.get("relation"), priority)
        contact_id = existing.pop((contact["name"], contact["phone"]), None)
        if contact_id is None:
            conn.execute(registry_queries.INSERT_CONTACT, (resident_id, *values))
        else:
            conn.execute(queries.UPDATE_CONTACT, (*values, contact_id))
    conn.execute(queries.DELETE_CONTACTS, (list(existing.values()),))


def resident_record(conn: psycopg.Connection, resident_id: int) -> dict[str, Any]:
    """A resident's registry record with institution and emergency contacts."""
    resident = _one(conn, queries.RESIDENT_RECORD, (resident_id,))
    with conn.cursor(row_factory=dict_row) as cur:
        resident["emergency_contacts"] = cur.execute(
            registry_queries.SELECT_CONTACTS, (resident_id,)
        ).fetchall()
    return resident


# How the resident breathes, as NEWS2's "air or oxygen" (resident.on_oxygen, migration 0011).
BREATHING: dict[str, bool | None] = {"air": False, "oxygen": True, "unknown": None}


def set_breathing(
    conn: psycopg.Connection, *, resident_id: int, breathing: str, set_by: str
) -> dict[str, Any]:
    """Record whether the resident breathes room air or supplemental oxygen, for NEWS2 (oxygen
    scores 2; on SpO2 scale 2 it also decides how a saturation of 93 % or more scores).

    A standing record, not a measurement, so NEWS2 findings name it with who set it and when:
    'oxygen' for oxygen worn continuously (a home concentrator all day), 'air' for a resident with
    no oxygen at home, 'unknown' otherwise (oxygen at night only): NEWS2 then lists the parameter
    as missing rather than guess.
    """
    if breathing not in BREATHING:
        raise CareError(f"breathing must be one of {', '.join(BREATHING)}, not {breathing!r}")
    with conn.transaction():
        _exists(conn, "resident", resident_id, "resident")
        return _one(conn, queries.SET_BREATHING, (BREATHING[breathing], set_by, resident_id))
