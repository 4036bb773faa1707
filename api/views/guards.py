"""Who may administer what: the checks shared by the administration routes.

A role that may not administer at all gets 403; an object outside an institution admin's
institutions is 404 when the caller names it by path (it does not exist for them), 403 when the
caller asks to put something into another institution.

Seeing is not owning: a write needs ownership (docs/api.md, "Ownership"), defined here.
- A resident is owned by its institution (`resident.institution_id`); a device by its owning
  institution (`device.institution_id`; `scope()` below, which the device queries apply); an
  alert and a contract belong to their resident. An institution's administrators own what their
  institution owns; a system admin owns everything; what belongs to no institution, only a system
  admin. An institution admin who sees another institution's resident (signed with one of its own
  doctors) may read it but changes nothing about it, its alerts or its devices: 403.
- The care of a resident (thresholds, the SpO2 scale) is also changed by its contracted doctor:
  a doctor with an active contract, not one who sees the resident through a care home's
  cooperation agreement, nor a duty desk.
"""

from __future__ import annotations

from fastapi import HTTPException

from api import queries
from api.access import Principal
from api.deps import Conn
from care import service as care

NOT_YOURS = "(or not one of yours)"
NOT_OWNER = (
    "the resident belongs to another institution: only its administrators may change it, "
    "its alerts or its devices"
)


def require_admin(caller: Principal, *, system_only: bool = False) -> None:
    """403 unless a system admin, or (unless `system_only`) an institution admin."""
    if caller.role == "system_admin":
        return
    if system_only:
        raise HTTPException(403, "only a system administrator may do this")
    if caller.role == "institution_admin" and caller.can_write:
        return
    raise HTTPException(403, "this needs an administrator of the institution concerned")


def require_institution(caller: Principal, institution_id: int | None) -> None:
    """403 when an institution admin names an institution other than its own (or none)."""
    if caller.role == "system_admin":
        return
    if institution_id is None or institution_id not in caller.institutions:
        raise HTTPException(403, "this needs an administrator of the institution concerned")


def see_resident(conn: Conn, caller: Principal, resident_id: int) -> None:
    """404 unless the caller may see the resident (the may_see_resident rule)."""
    row = conn.execute(
        queries.GET_RESIDENT, {**caller.visibility(), "resident_id": resident_id}
    ).fetchone()
    if row is None:
        raise HTTPException(404, f"no such resident {NOT_YOURS}")


def scope(caller: Principal) -> dict[str, object]:
    """Parameters of the administration queries' scope: everything, or these institutions."""
    return {"everyone": caller.role == "system_admin", "institutions": list(caller.institutions)}


def owns_institution(caller: Principal, institution_id: int | None) -> bool:
    """The ownership rule: a system admin owns everything; an institution admin (a login that may
    write) what belongs to its institution; nobody else anything."""
    if caller.role == "system_admin":
        return True
    return (
        caller.role == "institution_admin"
        and caller.can_write
        and institution_id is not None
        and institution_id in caller.institutions
    )


def owns_resident(conn: Conn, caller: Principal, resident_id: int) -> bool:
    """Whether the caller owns the resident (that is, the resident's institution)."""
    if caller.role == "system_admin":
        return True
    row = conn.execute(queries.RESIDENT_INSTITUTION, (resident_id,)).fetchone()
    return row is not None and owns_institution(caller, row[0])


def require_owner(conn: Conn, caller: Principal, resident_id: int) -> None:
    """For a write about a resident: 404 unless the caller sees it, 403 unless it owns it."""
    see_resident(conn, caller, resident_id)
    if not owns_resident(conn, caller, resident_id):
        raise HTTPException(403, NOT_OWNER)


def is_contracted_doctor(conn: Conn, caller: Principal, resident_id: int) -> bool:
    """Whether the caller is a doctor's login whose doctor has an active contract with the
    resident."""
    return (
        caller.role == "doctor"
        and caller.doctor_id is not None
        and care.is_contracted(conn, resident_id=resident_id, doctor_id=caller.doctor_id)
    )
