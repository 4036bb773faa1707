"""A resident's alert thresholds through the API: set by its contracted doctor or its institution's
administrators (reading them: api/views/residents.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError

from api.deps import Caller, Conn, IdPath
from api.schemas.care import StoredThreshold, Threshold
from api.views.admin_common import audit_request, refused
from api.views.guards import is_contracted_doctor, owns_resident, see_resident
from care import service as care
from care.service import CareError, ThresholdError
from ingest.metrics import METRICS

router = APIRouter()  # under /api/v1 with the "administration" tag, see api/views/admin.py

if TYPE_CHECKING:
    MetricKey = str
else:  # The metric table's keys, which the schema lists inline (mypy cannot read a computed Literal).
    MetricKey = Literal[tuple(METRICS)]


@router.put(
    "/residents/{resident_id}/thresholds/{metric}",
    response_model=StoredThreshold,
    responses={401: {}, 403: {}, 404: {}, 409: {}},
)
def set_threshold(
    resident_id: IdPath,
    metric: MetricKey,
    body: Threshold,
    caller: Caller,
    conn: Conn,
    request: Request,
) -> dict[str, Any]:
    """The doctor's own thresholds for this resident (a hypertensive resident's normal is not the
    textbook's): its contracted doctor(s) and its owning administrators only. Each limit must be
    one a reading can cross (inside the metric's plausible range), low below high; else 422."""
    see_resident(conn, caller, resident_id)
    if not caller.can_write:
        raise HTTPException(403, "this credential may read but not change thresholds")
    # A threshold can silence a resident's alerts: its doctor and its owners only, not everyone
    # who sees it (duty desks, a doctor through a cooperation agreement, another institution).
    if not (
        is_contracted_doctor(conn, caller, resident_id) or owns_resident(conn, caller, resident_id)
    ):
        raise HTTPException(
            403,
            "only the resident's contracted doctor or an administrator of its institution may "
            "change its thresholds",
        )
    asked = {"metric": metric, "low": body.low, "high": body.high}
    try:
        row = care.set_threshold(
            conn,
            resident_id=resident_id,
            metric=metric,
            low=body.low,
            high=body.high,
            set_by=caller.ref,
        )
    except ThresholdError as exc:
        # An attempt to move a limit out of reach is worth knowing about, too.
        audit_request(
            conn,
            caller,
            request,
            "threshold.set",
            resident_id=resident_id,
            outcome="refused",
            detail={**asked, "reason": str(exc)},
        )
        # Shaped as FastAPI's own validation errors, which the schema documents for 422.
        loc = ("body", exc.side) if exc.side else ("body",)
        raise RequestValidationError(
            [{"loc": loc, "msg": str(exc), "type": "value_error"}]
        ) from None
    except CareError as exc:
        raise refused(exc) from None
    audit_request(
        conn,
        caller,
        request,
        "threshold.set",
        resident_id=resident_id,
        detail={**asked, "previous": row["previous"]},
    )
    return row
