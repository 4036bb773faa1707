"""`eldercare bench api`: latency of the resident page's queries and the alert queue over HTTP, on a
history generated inside the database (200 residents × 1 year × 5 metrics every 5 minutes ≈ 105 M
readings by default).

Everything is real: a throwaway database on the configured (or local) PostgreSQL server with the
project's migrations (TimescaleDB when installed: hypertable, compression, continuous aggregates),
`eldercare api` as a subprocess, and a doctor who logs in and reads through HTTP like the dashboard:
one request per chart and metric, a resident chosen at random among hers each time.

Generation goes one day at a time (one TimescaleDB chunk): insert the day's readings, refresh the
hourly and daily aggregates for that day, compress the chunk once it is older than the compression
policy's age — the state a year of normal operation leaves behind. `--keep` keeps the database and
`--reuse NAME` measures a kept one again without regenerating it.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from rich.progress import Progress

from api import access
from benchmarks.ingest import machine_description, percentile
from eldercare.ports import free_port
from store import db, rollups
from store.timescale import COMPRESS_AFTER

# The five metrics of the generated history: a wristband that measures them all every 5 minutes.
# (base, daily swing, noise, decimals): plausible values for an older adult (CLINICAL.md ranges).
METRICS: dict[str, tuple[float, float, float, int]] = {
    "heart_rate": (72, 6, 5, 0),
    "spo2": (96.5, 0.8, 0.9, 0),
    "resp_rate": (16, 1.5, 1.2, 0),
    "body_temp": (36.6, 0.25, 0.12, 1),
    "systolic_bp": (132, 9, 7, 0),
}
RESIDENTS_PER_DOCTOR = 50
DOCTOR_USER = "bench-doctor"

# --- SQL of the generator (one visible place) -------------------------------------------------

INSERT_INSTITUTION = (
    "INSERT INTO institution (name, kind) VALUES ('基准社区卫生服务中心', 'community_health_centre') "
    "RETURNING id"
)
INSERT_DOCTORS = """
INSERT INTO doctor (name, institution_id, team)
SELECT '基准医生 ' || n, %(institution)s, 'team ' || n FROM generate_series(1, %(doctors)s) n
RETURNING id
"""
# Archive numbers per CLINICAL.md: 17 digits (county 6 + township 3 + village 3 + serial 5).
INSERT_RESIDENTS = """
INSERT INTO resident (name, archive_id, birth_date, gender, institution_id)
SELECT '基准居民 ' || n, '110105001001' || lpad(n::text, 5, '0'),
       DATE '1936-01-01' + (n * 97 %% 7300), CASE n %% 2 WHEN 0 THEN 'female' ELSE 'male' END,
       %(institution)s
FROM generate_series(1, %(residents)s) n
RETURNING id
"""
INSERT_DEVICES = """
INSERT INTO device (device_id, kind, model, online, battery, last_seen_at)
SELECT 'bench-wb-' || r, 'wristband', 'bench', true, 80, now() FROM unnest(%(residents)s::bigint[]) r
"""
INSERT_BINDINGS = """
INSERT INTO device_binding (device_id, resident_id, bound_at)
SELECT 'bench-wb-' || r, r, %(since)s FROM unnest(%(residents)s::bigint[]) r
"""
INSERT_CONTRACTS = """
INSERT INTO contract (resident_id, doctor_id, valid_from)
SELECT r, (%(doctors)s::bigint[])[1 + (i - 1) / %(per_doctor)s], %(since)s
FROM unnest(%(residents)s::bigint[]) WITH ORDINALITY AS x(r, i)
"""
# One day of readings for every resident and metric; values follow a daily rhythm with noise.
INSERT_DAY = """
INSERT INTO reading (device_id, metric, measured_at, resident_id, value, received_at, msg_id)
SELECT 'bench-wb-' || r, m.metric, ts, r,
       round((m.base + m.swing * sin(2 * pi() * extract(epoch FROM ts) / 86400 + r)
              + m.noise * (random() + random() + random() - 1.5))::numeric, m.decimals)::float8,
       ts + INTERVAL '2 seconds', 'g' || extract(epoch FROM ts)::bigint
FROM generate_series(%(start)s::timestamptz, %(end)s::timestamptz - %(step)s::interval,
                     %(step)s::interval) ts
CROSS JOIN unnest(%(residents)s::bigint[]) r
CROSS JOIN (SELECT * FROM jsonb_to_recordset(%(metrics)s::jsonb)
            AS j(metric text, base float8, swing float8, noise float8, decimals int)) m
"""
COMPRESS_DAY = """
SELECT count(compress_chunk(c, if_not_compressed => true))
FROM show_chunks('reading', older_than => %(end)s::timestamptz, newer_than => %(start)s::timestamptz) c
"""
# About one alert per resident every three days over the year, acknowledged and resolved, each with
# its three transitions; and two unresolved alerts per resident for the queue.
INSERT_ALERT_HISTORY = """
WITH made AS (
    INSERT INTO alert (resident_id, rule, severity, state, title, opened_at, last_seen_at,
                       acknowledged_at, acknowledged_by, resolved_at, resolved_by, resolution_note)
    SELECT r, (ARRAY['spo2_low', 'heart_rate_high', 'systolic_bp_high', 'news2'])[1 + k %% 4],
           (ARRAY['warning', 'warning', 'critical', 'info'])[1 + (k + r) %% 4], 'resolved',
           'bench alert', t, t + INTERVAL '10 minutes', t + INTERVAL '4 minutes', 'user:1:bench',
           t + INTERVAL '40 minutes', 'user:1:bench', 'bench history'
    FROM unnest(%(residents)s::bigint[]) r,
         LATERAL (SELECT k, %(since)s::timestamptz + k * INTERVAL '3 days' + r * INTERVAL '7 minutes' AS t
                  FROM generate_series(0, %(days)s / 3 - 1) k) x
    RETURNING id, opened_at, severity
)
INSERT INTO alert_transition (alert_id, at, actor, action, from_state, to_state, severity)
SELECT id, opened_at + s.offs, s.actor, s.action, s.from_state, s.to_state, severity
FROM made, (VALUES (INTERVAL '0', 'system', 'raised', NULL, 'open'),
                   (INTERVAL '4 minutes', 'user:1:bench', 'acknowledged', 'open', 'acknowledged'),
                   (INTERVAL '40 minutes', 'user:1:bench', 'resolved', 'acknowledged', 'resolved'))
           AS s(offs, actor, action, from_state, to_state)
"""
INSERT_OPEN_ALERTS = """
INSERT INTO alert (resident_id, rule, severity, state, title, opened_at, last_seen_at, next_reminder_at)
SELECT r, rule, severity, state, 'bench open alert', now() - r * INTERVAL '1 minute', now(),
       now() + INTERVAL '1 hour'
FROM unnest(%(residents)s::bigint[]) r,
     (VALUES ('no_data:bench', 'warning', 'open'), ('spo2_low', 'critical', 'acknowledged'))
     AS v(rule, severity, state)
"""
BENCH_MARK = "COMMENT ON DATABASE {db} IS {note}"
COUNTS = "SELECT (SELECT count(DISTINCT resident_id) FROM contract), (SELECT count(*) FROM reading)"
READ_MARK = "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s"


@dataclass
class QueryStats:
    requests: int
    rows_per_request: float
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass
class ApiBenchResult:
    database: str
    storage: str
    residents: int
    days: int
    readings: int
    database_size_gb: float
    generated_in_s: float | None
    concurrency: int
    queries: dict[str, QueryStats] = field(default_factory=dict)
    machine: str = ""


def as_dict(result: ApiBenchResult) -> dict[str, Any]:
    """The JSON shape: the queries' stats flattened as `<query>_p50_ms` etc. plus the details."""
    out = asdict(result)
    for name, stats in result.queries.items():
        out[f"{name}_p50_ms"] = stats.p50_ms
        out[f"{name}_p99_ms"] = stats.p99_ms
    return out


class History:
    """The generated database: residents, contracts, a wristband each and a year of readings."""

    def __init__(self, url: str, residents: int, days: int, step_s: int, timescale: str) -> None:
        self.url = url
        self.timescale = timescale
        self.residents = residents
        self.days = days
        self.step = timedelta(seconds=step_s)

    def generate(self, progress: Progress) -> str:
        db.ensure_database(self.url)
        db.migrate(self.url, timescale=self.timescale)
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        first = today - timedelta(days=self.days - 1)
        with db.connection(self.url, autocommit=True) as conn:
            storage = db.storage_kind(conn)
            resident_ids, doctor_ids = self._registry(conn, first)
            metrics = Jsonb(
                [
                    {"metric": m, "base": b, "swing": s, "noise": n, "decimals": d}
                    for m, (b, s, n, d) in METRICS.items()
                ]
            )
            task = progress.add_task("generating readings (one day at a time)", total=self.days)
            now = datetime.now(UTC)
            compress_before = now - _interval(COMPRESS_AFTER)
            for day in range(self.days):
                start = first + timedelta(days=day)
                end = min(start + timedelta(days=1), now)
                conn.execute(
                    INSERT_DAY,
                    {
                        "start": start,
                        "end": end,
                        "step": self.step,
                        "residents": resident_ids,
                        "metrics": metrics,
                    },
                )
                self._settle_day(conn, storage, start, start + timedelta(days=1), compress_before)
                progress.advance(task)
            self._alerts(conn, resident_ids, first)
            self._analyze(conn, progress)
            conn.execute(
                sql.SQL(BENCH_MARK).format(
                    db=sql.Identifier(db.database_name(self.url)),
                    note=sql.Literal(
                        f"eldercare bench api: {self.residents} residents, {self.days} days, "
                        f"doctors {doctor_ids[0]}..{doctor_ids[-1]}"
                    ),
                )
            )
            progress.remove_task(task)
        return storage

    def _registry(self, conn: psycopg.Connection, since: datetime) -> tuple[list[int], list[int]]:
        institution = _scalar(conn, INSERT_INSTITUTION, {})
        doctors = -(-self.residents // RESIDENTS_PER_DOCTOR)
        doctor_ids = [
            r[0]
            for r in conn.execute(
                INSERT_DOCTORS, {"institution": institution, "doctors": doctors}
            ).fetchall()
        ]
        resident_ids = [
            r[0]
            for r in conn.execute(
                INSERT_RESIDENTS, {"institution": institution, "residents": self.residents}
            ).fetchall()
        ]
        params = {
            "residents": resident_ids,
            "doctors": doctor_ids,
            "per_doctor": RESIDENTS_PER_DOCTOR,
            "since": since - timedelta(days=1),
        }
        for statement in (INSERT_DEVICES, INSERT_BINDINGS, INSERT_CONTRACTS):
            conn.execute(statement, params)
        access.add_user(
            conn,
            username=DOCTOR_USER,
            password=_password(self.url),
            role="doctor",
            doctor_id=doctor_ids[0],
        )
        return resident_ids, doctor_ids

    def _settle_day(
        self,
        conn: psycopg.Connection,
        storage: str,
        start: datetime,
        end: datetime,
        compress_before: datetime,
    ) -> None:
        """What the rollup refresh and the compression policy would have done by now."""
        if storage != "timescaledb":
            rollups.refresh(conn, storage=storage, now=min(end, datetime.now(UTC)))
            return
        for view in ("reading_hour", "reading_day"):
            rollups.refresh_aggregate(conn, view, start, end)
        if end <= compress_before:
            conn.execute(COMPRESS_DAY, {"start": start, "end": end})

    def _alerts(self, conn: psycopg.Connection, resident_ids: list[int], since: datetime) -> None:
        params = {"residents": resident_ids, "since": since, "days": self.days}
        conn.execute(INSERT_ALERT_HISTORY, params)
        conn.execute(INSERT_OPEN_ALERTS, params)

    def _analyze(self, conn: psycopg.Connection, progress: Progress) -> None:
        # Autovacuum would have run during a year of operation (it is off on some test machines):
        # the visibility map and statistics are what the planner relies on.
        task = progress.add_task("vacuum and analyze", total=None)
        conn.execute("VACUUM ANALYZE")
        progress.remove_task(task)


def _interval(text: str) -> timedelta:
    number, unit = text.split()
    return timedelta(**{unit if unit.endswith("s") else unit + "s": float(number)})


def _scalar(conn: psycopg.Connection, statement: str, params: dict[str, Any]) -> Any:
    row = conn.execute(statement, params).fetchone()
    assert row is not None
    return row[0]


def _password(url: str) -> str:
    # Reproducible from the database name, so that `--reuse` can log in again; a bench database only.
    return f"bench-{uuid.uuid5(uuid.NAMESPACE_URL, db.database_name(url)).hex}"


class ApiServer:
    """`eldercare api` as a subprocess on a free port, against the bench database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.port = free_port()
        self.tmp = Path(tempfile.mkdtemp(prefix="eldercare-bench-api-"))
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ApiServer:
        env = {
            **os.environ,
            "ELDERCARE_DATABASE_URL": self.url,
            "ELDERCARE_VAR_DIR": str(self.tmp / "var"),
            "ELDERCARE_LOG_LEVEL": "WARNING",
        }
        exe = str(Path(sys.executable).with_name("eldercare"))
        with open(self.tmp / "api.log", "ab") as log:
            self.process = subprocess.Popen(
                [exe, "api", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the API exited at start-up; see {self.tmp / 'api.log'}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"the API did not answer within 30 s; see {self.tmp / 'api.log'}")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *_exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _queries(now: datetime) -> dict[str, Callable[[int, str], tuple[str, dict[str, Any]]]]:
    """The dashboard's requests: one chart series per metric, and the alert queue."""

    def series(hours: int, bucket: str) -> Callable[[int, str], tuple[str, dict[str, Any]]]:
        def request(resident: int, metric: str) -> tuple[str, dict[str, Any]]:
            since = now - timedelta(hours=hours)
            return f"/api/v1/residents/{resident}/readings", {
                "metric": metric,
                "bucket": bucket,
                "since": since.isoformat(),
                "until": now.isoformat(),
                "limit": 10_000,
            }

        return request

    return {
        "raw_24h": series(24, "raw"),
        "hourly_30d": series(30 * 24, "hour"),
        "daily_1y": series(365 * 24, "day"),
        "latest": lambda resident, _m: (f"/api/v1/residents/{resident}/latest", {}),
        "alert_queue": lambda _r, _m: ("/api/v1/alerts", {"state": "unresolved", "limit": 500}),
    }


def _rows(body: Any) -> int:
    if isinstance(body, list):
        return len(body)
    if isinstance(body, dict) and isinstance(body.get("readings"), list):
        return len(body["readings"])
    return 0


def _timed_get(
    client: httpx.Client, done: Callable[[], None], request: tuple[str, dict[str, Any]]
) -> tuple[float, int]:
    """(milliseconds, rows) of one GET; anything but 200 ends the benchmark with the answer."""
    path, params = request
    started = time.perf_counter()
    response = client.get(path, params=params)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"GET {path} → {response.status_code}: {response.text[:200]}")
    done()
    return elapsed, _rows(response.json())


def measure(
    server: ApiServer,
    url: str,
    *,
    requests: int,
    warmup: int,
    concurrency: int,
    progress: Progress,
) -> dict[str, QueryStats]:
    """p50/p99 per query over HTTP, as the bench doctor, residents and metrics picked at random."""
    with db.connection(url) as conn:
        mine = [
            r[0]
            for r in conn.execute(
                "SELECT c.resident_id FROM contract c JOIN app_user u ON u.doctor_id = c.doctor_id "
                "WHERE u.username = %s",
                (DOCTOR_USER,),
            ).fetchall()
        ]
    if not mine:
        raise RuntimeError(f"{db.database_name(url)} has no bench doctor: is it a bench database?")
    rng = random.Random(20261201)
    metrics = list(METRICS)
    results: dict[str, QueryStats] = {}
    with httpx.Client(base_url=server.base, timeout=30) as login_client:
        answer = login_client.post(
            "/api/v1/auth/login", json={"username": DOCTOR_USER, "password": _password(url)}
        )
        if answer.status_code != 200:
            raise RuntimeError(f"bench doctor could not log in: {answer.status_code} {answer.text}")
        token = answer.json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with (
        httpx.Client(base_url=server.base, timeout=30, headers=headers, limits=limits) as client,
        ThreadPoolExecutor(concurrency) as pool,
    ):
        for name, make in _queries(datetime.now(UTC)).items():
            task = progress.add_task(f"GET {name}", total=warmup + requests)
            plan = [make(rng.choice(mine), rng.choice(metrics)) for _ in range(warmup + requests)]
            send = partial(_timed_get, client, partial(progress.advance, task))
            list(pool.map(send, plan[:warmup]))
            timed = list(pool.map(send, plan[warmup:]))
            latencies = [t for t, _ in timed]
            results[name] = QueryStats(
                requests=requests,
                rows_per_request=round(statistics.fmean(r for _, r in timed), 1),
                p50_ms=round(percentile(latencies, 0.50), 1),
                p99_ms=round(percentile(latencies, 0.99), 1),
                max_ms=round(max(latencies), 1),
            )
            progress.remove_task(task)
    return results


def _settle_rollups(url: str) -> None:
    """Plain PostgreSQL: bring the rollups up to now, as the ingest maintenance thread does every
    minute in a running system (TimescaleDB's own policies run in the database)."""
    with db.connection(url, autocommit=True) as conn:
        storage = db.storage_kind(conn)
        if storage != "timescaledb":
            rollups.refresh(conn, storage=storage, now=datetime.now(UTC))


def run_bench(
    server_url: str,
    *,
    residents: int,
    days: int,
    step_s: int,
    requests: int,
    warmup: int,
    concurrency: int,
    keep: bool,
    reuse: str | None,
    quiet: bool,
    timescale: str = "auto",
) -> ApiBenchResult:
    name = reuse or f"eldercare_bench_api_{uuid.uuid4().hex[:8]}"
    url = db.with_dbname(server_url, name)
    generated_in: float | None = None
    with Progress(disable=quiet, transient=True) as progress:
        try:
            if reuse:
                with db.connection(db.with_dbname(server_url, "postgres")) as conn:
                    row = conn.execute(READ_MARK, (name,)).fetchone()
                if not row or not (row[0] or "").startswith("eldercare bench api"):
                    raise RuntimeError(
                        f"{name} is not a kept bench database (run with --keep first)"
                    )
                db.migrate(url, timescale=timescale)
            else:
                started = time.monotonic()
                History(url, residents, days, step_s, timescale).generate(progress)
                generated_in = round(time.monotonic() - started, 1)
            _settle_rollups(url)
            with ApiServer(url) as server:
                stats = measure(
                    server,
                    url,
                    requests=requests,
                    warmup=warmup,
                    concurrency=concurrency,
                    progress=progress,
                )
            with db.connection(url) as conn:
                storage = db.storage_kind(conn)
                counts = conn.execute(COUNTS).fetchone()
                size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
                mark = conn.execute(READ_MARK, (name,)).fetchone()
            assert counts is not None and size is not None
            return ApiBenchResult(
                database=name,
                storage=storage,
                residents=int(counts[0]),
                days=_days_from_mark(mark[0] if mark else None, days),
                readings=int(counts[1]),
                database_size_gb=round(size[0] / 2**30, 2),
                generated_in_s=generated_in,
                concurrency=concurrency,
                queries=stats,
                machine=machine_description(),
            )
        finally:
            if not keep and not reuse:
                db.drop_database(url)


def _days_from_mark(mark: str | None, default: int) -> int:
    try:
        return int((mark or "").split(", ")[1].split()[0])
    except (IndexError, ValueError):
        return default
