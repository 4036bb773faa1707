"""Who may administer what: the checks shared by the administration routes.

A role that may not administer at all gets 403; an object outside an institution admin's
institutions is 404 when the caller names it by path (it does not exist for them), 403 when the
caller asks to put something into another institution.
"""

from __future__ import annotations

from fastapi import HTTPException

from api import queries
from api.access import Principal
from api.deps import Conn

NOT_YOURS = "(or not one of yours)"


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
