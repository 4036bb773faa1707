"""What the administration routes share: paging parameters, a care or registry refusal as a 409
(an archive number in use named only to who may see its holder), and the audit of a change."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import HTTPException, Query, Request

from api import queries
from api.access import Principal, audit
from api.deps import Conn, client_address
from devices.service import DuplicateArchive

Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


def refused(exc: Exception) -> HTTPException:
    return HTTPException(409, str(exc))


ARCHIVE_TAKEN = "this archive number cannot be used: check it against the resident's documents"


def archive_refused(conn: Conn, caller: Principal, exc: DuplicateArchive) -> HTTPException:
    """409 for an archive number in use: naming the holder only to a caller who may see them, so
    that probing numbers does not tell which belong to another institution's residents."""
    row = conn.execute(
        queries.ARCHIVE_HOLDER, {**caller.visibility(), "archive_id": exc.archive_id}
    ).fetchone()
    if row is None:
        return HTTPException(409, ARCHIVE_TAKEN)
    return HTTPException(
        409, f"archive number {exc.archive_id} already belongs to resident {row[0]}"
    )


def audit_request(
    conn: Conn, caller: Principal, request: Request, action: str, **kwargs: Any
) -> None:
    """The audit row of a request: its path and the client's address with what was done."""
    audit(conn, caller, action, request.url.path, address=client_address(request), **kwargs)
