"""The overview: residents by risk, devices offline, unacknowledged alerts by age."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from psycopg.rows import dict_row

from alerts.models import SEVERITIES
from api import queries
from api.access import audit
from api.deps import Caller, Conn, client_address

router = APIRouter(prefix="/api/v1", tags=["overview"])
SEVERITY = dict(enumerate(SEVERITIES))  # the rank the overview query returns → its name
RISK_BY_SEVERITY = {"critical": "high", "warning": "medium", "info": "low"}


@router.get("/overview", responses={401: {}})
def overview(caller: Caller, conn: Conn, request: Request) -> dict[str, Any]:
    visibility = caller.visibility()
    rows = conn.execute(queries.OVERVIEW_RESIDENTS, visibility).fetchall()
    bands: dict[int, str] = dict(
        conn.execute(queries.OVERVIEW_NEWS2, ([r[0] for r in rows],)).fetchall()
    )
    residents = []
    for resident_id, name, open_alerts, worst in rows:
        severity = SEVERITY.get(worst) if worst is not None else None
        risk = bands.get(resident_id) or (RISK_BY_SEVERITY[severity] if severity else "unknown")
        residents.append(
            {
                "id": resident_id,
                "name": name,
                "risk": risk,
                "open_alerts": open_alerts,
                "worst_severity": severity,
            }
        )
    order = {"high": 0, "medium": 1, "low-medium": 2, "low": 3, "unknown": 4}
    residents.sort(key=lambda r: (order.get(r["risk"], 5), -r["open_alerts"]))
    with conn.cursor(row_factory=dict_row) as cur:
        offline = cur.execute(queries.OVERVIEW_OFFLINE, visibility).fetchall()
    ages = conn.execute(queries.OVERVIEW_UNACKED, visibility).fetchone() or (0, 0, 0, 0)
    audit(
        conn,
        caller,
        "read.overview",
        request.url.path,
        address=client_address(request),
        resident_ids=[r["id"] for r in residents] + [d["resident_id"] for d in offline],
        detail={"residents": len(residents)},
    )
    return {
        "residents": residents,
        "devices_offline": offline,
        "unacknowledged_by_age": dict(zip(("<5m", "5-30m", "30m-2h", ">2h"), ages, strict=True)),
    }
