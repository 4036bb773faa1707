"""Residents and their readings, within the caller's scope; every access is audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from psycopg import sql
from psycopg.rows import dict_row

from api import cursor, queries
from api.access import audit
from api.deps import Caller, Conn, IdPath, client_address
from api.schemas.residents import Latest, Reading, ReadingPage, ResidentDetail, ResidentSummary
from ingest.metrics import METRICS

router = APIRouter(prefix="/api/v1/residents", tags=["residents"])

# The metric table as an enum, so the OpenAPI schema lists the accepted names.
MetricName = StrEnum("MetricName", {key: key for key in METRICS})  # type: ignore[misc]

NOT_FOUND = "no such resident (or not one of yours)"


@router.get("", response_model=list[ResidentSummary], responses={401: {}})
def list_residents(
    caller: Caller,
    conn: Conn,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[dict[str, Any]]:
    """The residents the caller looks after."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            queries.LIST_RESIDENTS, {**caller.visibility(), "limit": limit, "offset": offset}
        ).fetchall()
    audit(
        conn,
        caller,
        "read.residents",
        request.url.path,
        address=client_address(request),
        resident_ids=[r["id"] for r in rows],
        detail={"count": len(rows)},
    )
    return rows


def _visible(conn: Conn, caller: Caller, resident_id: int) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            queries.GET_RESIDENT, {**caller.visibility(), "resident_id": resident_id}
        ).fetchone()
    if row is None:
        raise HTTPException(404, NOT_FOUND)
    return row


@router.get("/{resident_id}", response_model=ResidentDetail, responses={401: {}, 404: {}})
def get_resident(
    resident_id: IdPath, caller: Caller, conn: Conn, request: Request
) -> dict[str, Any]:
    """Identity, archive number, contracted doctor and devices."""
    resident = _visible(conn, caller, resident_id)
    with conn.cursor(row_factory=dict_row) as cur:
        resident["devices"] = cur.execute(queries.RESIDENT_DEVICES, (resident_id,)).fetchall()
    audit(
        conn,
        caller,
        "read.resident",
        request.url.path,
        address=client_address(request),
        resident_id=resident_id,
    )
    return resident


@router.get(
    "/{resident_id}/readings", response_model=ReadingPage, responses={401: {}, 404: {}, 422: {}}
)
def readings(
    resident_id: IdPath,
    caller: Caller,
    conn: Conn,
    request: Request,
    metric: Annotated[
        MetricName | None, Query(description="e.g. spo2; all metrics when left out")
    ] = None,
    since: Annotated[datetime | None, Query(description="default: 24 h ago")] = None,
    until: Annotated[datetime | None, Query(description="default: now")] = None,
    bucket: Literal["raw", "minute", "hour", "day"] = "raw",
    cursor_: Annotated[
        str | None,
        Query(alias="cursor", pattern=cursor.READINGS, description="the previous page's next"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 2_000,
) -> ReadingPage:
    """Readings by time range, raw or bucketed in the database (continuous aggregates on
    TimescaleDB, the same views on PostgreSQL), oldest first, a page at a time."""
    position = _position(cursor_)
    _visible(conn, caller, resident_id)
    now = datetime.now(UTC)
    since_at = _aware(since) if since else now - timedelta(hours=24)
    params = {
        "resident_id": resident_id,
        "metric": metric.value if metric else None,
        "limit": limit + 1,  # one more tells whether there is a next page
        # The cursor's time as the lower bound too, so the index range starts there.
        "since": max(since_at, position["c_at"]) if position["c_at"] else since_at,
        "until": _aware(until) if until else now,
        **position,
    }
    if bucket == "raw":
        statement: sql.SQL | sql.Composed = sql.SQL(queries.RAW_READINGS)
    else:
        statement = sql.SQL(queries.BUCKETED_READINGS).format(
            view=sql.Identifier(f"reading_{bucket}")
        )
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(statement, params).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    audit(
        conn,
        caller,
        "read.readings",
        request.url.path,
        address=client_address(request),
        resident_id=resident_id,
        detail={"bucket": bucket, "metric": params["metric"], "rows": len(rows)},
    )
    return ReadingPage(
        resident_id=resident_id,
        bucket=bucket,
        readings=[Reading(**r) for r in rows],
        next=_next(rows[-1]) if more else None,
    )


def _position(token: str | None) -> dict[str, Any]:
    """The keyset position a `next` cursor stands for (all None for the first page)."""
    if token is None:
        return {"c_at": None, "c_metric": None, "c_device": None}
    key = cursor.parse_readings(token)
    return {"c_at": key.at, "c_metric": key.metric, "c_device": key.device_id}


def _next(last: dict[str, Any]) -> str:
    return cursor.readings_cursor(last["at"], last["metric"], last.get("device_id"))


@router.get("/{resident_id}/latest", response_model=list[Latest], responses={401: {}, 404: {}})
def latest(resident_id: IdPath, caller: Caller, conn: Conn, request: Request) -> list[Latest]:
    """The latest value of each metric (within 7 days)."""
    _visible(conn, caller, resident_id)
    rows = conn.execute(
        queries.LATEST_READINGS, {"resident_id": resident_id, "metrics": list(METRICS)}
    ).fetchall()
    audit(
        conn,
        caller,
        "read.latest",
        request.url.path,
        address=client_address(request),
        resident_id=resident_id,
    )
    return [
        Latest(metric=m, value=v, unit=METRICS[m].unit, measured_at=at, device_id=d)
        for m, v, at, d in rows
    ]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@router.get("/{resident_id}/news2", responses={401: {}, 404: {}})
def news2_now(resident_id: IdPath, caller: Caller, conn: Conn, request: Request) -> dict[str, Any]:
    """NEWS2 now, exactly as the alert rule judges it (alerts/rules/early_warning.py assess_news2): each
    parameter's latest confirmed value, the resident's SpO2 scale and oxygen record; a partial score
    says which parameters it used and their age, what is missing or unscored, which readings are not
    yet confirmed, and where air/oxygen and consciousness came from."""
    from alerts.rules.early_warning import assess_news2
    from alerts.window import load_window

    _visible(conn, caller, resident_id)
    detail = assess_news2(load_window(conn, resident_id, datetime.now(UTC))).detail
    audit(
        conn,
        caller,
        "read.news2",
        request.url.path,
        address=client_address(request),
        resident_id=resident_id,
    )
    return detail


@router.get("/{resident_id}/thresholds", responses={401: {}, 404: {}})
def thresholds(
    resident_id: IdPath, caller: Caller, conn: Conn, request: Request
) -> dict[str, dict[str, float | None]]:
    """Alert thresholds per metric, as the rules apply them: the defaults for the resident's SpO2
    scale, each side replaced by the doctor's override where one is set."""
    from alerts.rules.limits import Limits, defaults_for, effective_limits
    from alerts.window import overrides

    resident = _visible(conn, caller, resident_id)
    defaults = defaults_for(resident["spo2_scale"])
    overridden = overrides(conn, resident_id)
    merged = {
        metric: {"low": limits.low, "high": limits.high}
        for metric in {**defaults, **overridden}
        for limits in [effective_limits(defaults.get(metric, Limits()), overridden.get(metric))]
    }
    audit(
        conn,
        caller,
        "read.thresholds",
        request.url.path,
        address=client_address(request),
        resident_id=resident_id,
    )
    return merged
