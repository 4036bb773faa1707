"""SQL of the care relationships (institutions, doctors, contracts, escalation policies, residents'
records and thresholds), in one place; care/service.py runs them. Adding and listing emergency
contacts reuse the registry's statements (devices/queries.py)."""

# {table} is an identifier (sql.Identifier): the row must exist before something refers to it.
ROW_EXISTS = "SELECT 1 FROM {table} WHERE id = %s"

INSERT_INSTITUTION = "INSERT INTO institution (name, kind, phone) VALUES (%s, %s, %s) RETURNING *"

INSERT_DUTY_DESK = """
INSERT INTO doctor (name, role, institution_id, phone)
VALUES (%s, 'duty_desk', %s, %s) RETURNING id
"""

INSERT_DOCTOR = """
INSERT INTO doctor (name, institution_id, team, phone, email)
VALUES (%s, %s, %s, %s, %s) RETURNING id, name, role, institution_id, team, phone, email, channels
"""

# None leaves a preference as it is.
UPDATE_PREFERENCES = """
UPDATE doctor SET channels = coalesce(%s, channels), quiet_start = coalesce(%s::time, quiet_start),
    quiet_end = coalesce(%s::time, quiet_end), timezone = coalesce(%s, timezone)
WHERE id = %s RETURNING id, name, channels, quiet_start, quiet_end, timezone
"""

INSERT_CONTRACT = """
INSERT INTO contract (resident_id, doctor_id, valid_from, valid_to)
VALUES (%s, %s, coalesce(%s, now()), %s) RETURNING *
"""

IS_CONTRACTED = """
SELECT EXISTS (SELECT 1 FROM contract WHERE resident_id = %s AND doctor_id = %s
    AND valid_from <= now() AND (valid_to IS NULL OR valid_to > now()))
"""

# now() of the same transaction, so "ended already" and the default end are the same moment.
CONTRACT_FOR_UPDATE = "SELECT *, now() AS now FROM contract WHERE id = %s FOR UPDATE"

END_CONTRACT = "UPDATE contract SET valid_to = %s WHERE id = %s RETURNING *"

SET_RESIDENT_INSTITUTION = "UPDATE resident SET institution_id = %s WHERE id = %s"

INSERT_AGREEMENT = """
INSERT INTO cooperation_agreement (care_home_id, medical_institution_id)
VALUES (%s, %s) RETURNING *
"""

UPSERT_POLICY = """
INSERT INTO escalation_policy (institution_id, severity, reminder_every_s, tiers)
VALUES (%s, %s, %s, %s) ON CONFLICT (institution_id, severity) DO UPDATE SET
    reminder_every_s = EXCLUDED.reminder_every_s, tiers = EXCLUDED.tiers
RETURNING *
"""

RESIDENT_SPO2_SCALE = "SELECT spo2_scale FROM resident WHERE id = %s"

# Locked until the upsert: a concurrent change waits, so `previous` is the override replaced.
THRESHOLD_FOR_UPDATE = """
SELECT low, high FROM resident_threshold WHERE resident_id = %s AND metric = %s FOR UPDATE
"""

UPSERT_THRESHOLD = """
INSERT INTO resident_threshold (resident_id, metric, low, high, set_by)
VALUES (%s, %s, %s, %s, %s) ON CONFLICT (resident_id, metric) DO UPDATE SET
    low = EXCLUDED.low, high = EXCLUDED.high, set_by = EXCLUDED.set_by, set_at = now()
RETURNING *
"""

INSERT_WEBHOOK = """
INSERT INTO webhook_subscription (name, url, secret, min_severity, institution_id)
VALUES (%s, %s, %s, %s, %s) RETURNING id, name, url, min_severity, institution_id
"""

# {assignments}: "column = %(column)s" for each field changed (identifiers from RESIDENT_FIELDS).
UPDATE_RESIDENT = "UPDATE resident SET {assignments} WHERE id = %(resident_id)s"

CONTACT_KEYS = "SELECT id, name, phone FROM emergency_contact WHERE resident_id = %s"

UPDATE_CONTACT = """
UPDATE emergency_contact SET name = %s, phone = %s, relation = %s, priority = %s WHERE id = %s
"""

DELETE_CONTACTS = "DELETE FROM emergency_contact WHERE id = ANY(%s)"

RESIDENT_RECORD = """
SELECT id, name, archive_id, birth_date, gender, address, spo2_scale, institution_id
FROM resident WHERE id = %s
"""

SET_BREATHING = """
UPDATE resident SET on_oxygen = %s, on_oxygen_set_by = %s, on_oxygen_set_at = now()
WHERE id = %s RETURNING id, on_oxygen, on_oxygen_set_by, on_oxygen_set_at
"""
