"""SQL of the device registry, in one place."""

RESIDENT_COLUMNS = "id, name, birth_date, gender, address, archive_id, spo2_scale, created_at"

INSERT_RESIDENT = f"""
INSERT INTO resident (name, birth_date, gender, address, archive_id, spo2_scale)
VALUES (%(name)s, %(birth_date)s, %(gender)s, %(address)s, %(archive_id)s, %(spo2_scale)s)
RETURNING {RESIDENT_COLUMNS}
"""

SELECT_RESIDENTS = f"SELECT {RESIDENT_COLUMNS} FROM resident ORDER BY id"
SELECT_RESIDENT = f"SELECT {RESIDENT_COLUMNS} FROM resident WHERE id = %s"

INSERT_CONTACT = """
INSERT INTO emergency_contact (resident_id, name, phone, relation, priority)
VALUES (%s, %s, %s, %s, %s)
"""

SELECT_CONTACTS = """
SELECT name, phone, relation, priority FROM emergency_contact WHERE resident_id = %s ORDER BY priority, id
"""

DEVICE_COLUMNS = """
d.device_id, d.kind, d.model, d.status, b.resident_id, d.online, d.battery, d.firmware,
d.last_seen_at, d.created_at
"""

SELECT_DEVICES = f"""
SELECT {DEVICE_COLUMNS}
FROM device d LEFT JOIN device_binding b ON b.device_id = d.device_id AND b.unbound_at IS NULL
WHERE (%(resident_id)s::bigint IS NULL OR b.resident_id = %(resident_id)s)
  AND (%(include_retired)s OR d.status = 'active')
ORDER BY d.device_id
"""

SELECT_DEVICE = f"""
SELECT {DEVICE_COLUMNS}
FROM device d LEFT JOIN device_binding b ON b.device_id = d.device_id AND b.unbound_at IS NULL
WHERE d.device_id = %s
"""

# The owning institution (migration 0009): whose administrators may manage the device.
SELECT_DEVICE_OWNER = "SELECT institution_id FROM device WHERE device_id = %s"
SET_DEVICE_OWNER = "UPDATE device SET institution_id = %s WHERE device_id = %s"

INSERT_DEVICE = "INSERT INTO device (device_id, kind, model) VALUES (%s, %s, %s)"

CLOSE_BINDING = """
UPDATE device_binding SET unbound_at = %(at)s
WHERE device_id = %(device_id)s AND unbound_at IS NULL
RETURNING resident_id
"""

OPEN_BINDING = """
INSERT INTO device_binding (device_id, resident_id, bound_at) VALUES (%(device_id)s, %(resident_id)s, %(at)s)
"""

RETIRE_DEVICE = (
    "UPDATE device SET status = 'retired', retired_at = now(), online = false WHERE device_id = %s"
)

# Never turns one kind of account into another: a device named like the service account (or the
# reverse) would lock the backend out of the broker at the next sync. No row back: refused.
UPSERT_ACCOUNT = """
INSERT INTO broker_account (username, password_hash, role, device_id, doctor_id)
VALUES (%(username)s, %(password_hash)s, %(role)s, %(device_id)s, %(doctor_id)s)
ON CONFLICT (username) DO UPDATE
SET password_hash = EXCLUDED.password_hash, revoked_at = NULL
WHERE broker_account.role = EXCLUDED.role
  AND broker_account.device_id IS NOT DISTINCT FROM EXCLUDED.device_id
  AND broker_account.doctor_id IS NOT DISTINCT FROM EXCLUDED.doctor_id
RETURNING username
"""

REVOKE_ACCOUNT = (
    "UPDATE broker_account SET revoked_at = now() WHERE device_id = %s AND revoked_at IS NULL"
)

# A doctor's app login lasts as long as the doctor is active (migration 0014).
SELECT_ACTIVE_ACCOUNTS = """
SELECT a.username, a.password_hash, a.role, a.doctor_id
FROM broker_account a LEFT JOIN doctor d ON d.id = a.doctor_id
WHERE a.revoked_at IS NULL AND (a.doctor_id IS NULL OR d.active)
ORDER BY a.username
"""

SELECT_DOCTOR_ACTIVE = "SELECT active FROM doctor WHERE id = %s"
# The doctor's app login in force, if any.
SELECT_DOCTOR_LOGIN = """
SELECT username FROM broker_account WHERE doctor_id = %s AND revoked_at IS NULL
"""
REVOKE_DOCTOR_LOGIN = """
UPDATE broker_account SET revoked_at = now() WHERE doctor_id = %s AND revoked_at IS NULL
RETURNING username
"""

# The ingestor's view of the registry: every device with its binding history.
SELECT_REGISTRY = """
SELECT d.device_id, d.kind, d.status, b.resident_id, b.bound_at, b.unbound_at
FROM device d LEFT JOIN device_binding b ON b.device_id = d.device_id
ORDER BY d.device_id, b.bound_at
"""

# Read before the registry itself, in a separate statement: a version seen is committed, so the
# rows read after it include its change (migration 0013).
SELECT_REGISTRY_VERSION = "SELECT version, true FROM registry_change"
