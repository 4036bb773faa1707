"""SQL of the ingest pipeline, in one place."""

CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS staging_reading (
    device_id text, msg_id text, metric text, measured_at timestamptz, resident_id bigint,
    value double precision, received_at timestamptz
) ON COMMIT DELETE ROWS
"""

COPY_STAGING = """
COPY staging_reading (device_id, msg_id, metric, measured_at, resident_id, value, received_at)
FROM STDIN (FORMAT BINARY)
"""
STAGING_TYPES = ["text", "text", "text", "timestamptz", "int8", "float8", "timestamptz"]

# A message id seen before means a re-sent message: none of its readings are stored again.
# Readings with an already stored (device, metric, measured_at) are skipped too.
STORE_STAGED = """
WITH new_message AS (
    INSERT INTO telemetry_message (device_id, msg_id, received_at)
    SELECT DISTINCT ON (device_id, msg_id) device_id, msg_id, received_at FROM staging_reading
    ON CONFLICT DO NOTHING
    RETURNING device_id, msg_id
)
INSERT INTO reading (device_id, metric, measured_at, resident_id, value, received_at, msg_id)
SELECT s.device_id, s.metric, s.measured_at, s.resident_id, s.value, s.received_at, s.msg_id
FROM staging_reading s JOIN new_message USING (device_id, msg_id)
ON CONFLICT DO NOTHING
"""

INSERT_QUARANTINE = """
INSERT INTO quarantine (received_at, topic, device_id, reason, detail, payload, payload_size)
VALUES (%s, %s, %s, %s, %s, %s, %s)
"""

TOUCH_LAST_SEEN = """
UPDATE device d SET last_seen_at = v.seen
FROM unnest(%s::text[], %s::timestamptz[]) AS v(device_id, seen)
WHERE d.device_id = v.device_id
  AND (d.last_seen_at IS NULL OR d.last_seen_at < v.seen - INTERVAL '1 second')
"""

INSERT_EVENT = """
INSERT INTO device_event (device_id, msg_id, type, occurred_at, received_at, resident_id, lat, lon,
                          payload, ingest_problems, raw_payload)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (device_id, msg_id) DO NOTHING
RETURNING id
"""

SELECT_EVENT_ID = "SELECT id FROM device_event WHERE device_id = %s AND msg_id = %s"

NOTIFY_EVENT = "SELECT pg_notify('eldercare_device_event', %s)"

INSERT_PRESENCE = """
INSERT INTO device_presence (device_id, reported_at, online, battery, firmware)
VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
"""

UPDATE_PRESENCE = """
UPDATE device SET online = %(online)s,
    battery = coalesce(%(battery)s, battery),
    firmware = coalesce(%(firmware)s, firmware),
    last_seen_at = greatest(last_seen_at, %(received_at)s)
WHERE device_id = %(device_id)s
"""

SELECT_READINGS = """
SELECT r.resident_id, r.device_id, r.metric, r.value, r.measured_at, r.received_at
FROM reading r
WHERE r.resident_id = %(resident_id)s
  AND r.measured_at >= %(since)s
  AND (%(metric)s::text IS NULL OR r.metric = %(metric)s)
ORDER BY r.measured_at, r.metric
LIMIT %(limit)s
"""

SELECT_QUARANTINE = """
SELECT id, received_at, topic, device_id, reason, detail, payload, payload_size
FROM quarantine
WHERE (%(reason)s::text IS NULL OR reason = %(reason)s)
  AND (%(since)s::timestamptz IS NULL OR received_at >= %(since)s)
ORDER BY id DESC
LIMIT %(limit)s
"""

COUNT_QUARANTINE = "SELECT reason, count(*) FROM quarantine GROUP BY reason ORDER BY count(*) DESC"

# One statement for every rollup width, on TimescaleDB (continuous aggregates) and PostgreSQL (views).
SELECT_ROLLUP = """
SELECT bucket, metric, avg_value, min_value, max_value, samples
FROM {view}
WHERE resident_id = %(resident_id)s
  AND bucket >= %(since)s
  AND (%(metric)s::text IS NULL OR metric = %(metric)s)
ORDER BY bucket, metric
LIMIT %(limit)s
"""

# Retention (ingest/maintenance.py). Batches by the received_at indexes.
TRY_LOCK = "SELECT pg_try_advisory_lock(%s, %s)"
UNLOCK = "SELECT pg_advisory_unlock(%s, %s)"

PRUNE_TELEMETRY_MESSAGES = """
DELETE FROM telemetry_message WHERE (device_id, msg_id) IN (
    SELECT device_id, msg_id FROM telemetry_message WHERE received_at < %(before)s LIMIT %(limit)s
)
"""

PRUNE_QUARANTINE_EXPIRED = """
DELETE FROM quarantine WHERE id IN (
    SELECT id FROM quarantine WHERE received_at < %(before)s LIMIT %(limit)s
)
"""

# Per device (and the messages of no device together), all but the newest `cap` rows.
PRUNE_QUARANTINE_OVER_CAP = """
DELETE FROM quarantine WHERE id IN (
    SELECT id FROM (
        SELECT id, row_number() OVER (PARTITION BY device_id ORDER BY id DESC) AS newest
        FROM quarantine
        WHERE coalesce(device_id, '') IN (
            SELECT coalesce(device_id, '') FROM quarantine GROUP BY 1 HAVING count(*) > %(cap)s
        )
    ) ranked
    WHERE newest > %(cap)s
)
"""

# Whether this session still holds an ingest slot's advisory lock (ingest/slots.py): a two-key
# advisory lock shows as classid, objid with objsubid 2.
SLOT_LOCK_HELD = """
SELECT EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
      AND classid = %s::int::oid AND objid = %s::int::oid AND objsubid = 2
)
"""
