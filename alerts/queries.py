"""SQL of the alert domain, in one place. Every statement takes `now` as a parameter: the engine's
clock, not the database's, decides time (tests move it by hand)."""

ALERT_COLUMNS = """
id, resident_id, rule, severity, state, title, detail, device_id, opened_at, last_seen_at,
occurrences, acknowledged_at, acknowledged_by, resolved_at, resolved_by, resolution_note,
tier, next_tier_at, next_reminder_at, reminders_sent, escalation_base, escalation_round
"""

# An event from a device bound to nobody belongs to that device: two unbound buttons are two alerts.
# Serializes raising the same alert: two transactions that both find no open alert for a resident
# and rule (two SOS presses handled on two threads, two engines) must not both insert one.
LOCK_ALERT_KEY = """
SELECT pg_advisory_xact_lock(hashtextextended(
    %(rule)s || ':' || coalesce(%(resident_id)s::bigint::text, 'device:' || %(device_id)s::text), 0))
"""

LOCK_UNRESOLVED = f"""
SELECT {ALERT_COLUMNS} FROM alert
WHERE resident_id IS NOT DISTINCT FROM %(resident_id)s AND rule = %(rule)s AND state <> 'resolved'
  AND (%(resident_id)s::bigint IS NOT NULL OR device_id IS NOT DISTINCT FROM %(device_id)s)
FOR UPDATE
"""

# The SOS presses or falls an unresolved alert holds: the events of its rule handled since it opened,
# of its resident (or, for a device bound to nobody, of its device). At most one alert per resident
# and rule is unresolved at a time, so they are all this alert's.
ALERT_PRESSES = """
SELECT device_id, occurred_at FROM device_event
WHERE type = %(rule)s AND alert_processed_at >= %(opened_at)s
  AND resident_id IS NOT DISTINCT FROM %(resident_id)s
  AND (%(resident_id)s::bigint IS NOT NULL OR device_id = %(device_id)s)
"""

# Has a person ever taken the alert on (a new press since may have reopened it)?
EVER_ACKNOWLEDGED = (
    "SELECT EXISTS (SELECT 1 FROM alert_transition WHERE alert_id = %s AND action = 'acknowledged')"
)

# The latest alert of this resident and rule that a person (not the system) resolved recently.
# Who resolved it, as an opaque id (migration 0015): it goes into the new alert's detail, which
# webhooks and platforms receive.
RECENTLY_RESOLVED = """
SELECT id, resolved_at, actor_ref(resolved_by) FROM alert
WHERE resident_id IS NOT DISTINCT FROM %(resident_id)s AND rule = %(rule)s AND state = 'resolved'
  AND resolved_by <> 'system' AND resolved_at >= %(since)s
ORDER BY resolved_at DESC LIMIT 1
"""

LOCK_ALERT = f"SELECT {ALERT_COLUMNS} FROM alert WHERE id = %s FOR UPDATE"
SELECT_ALERT = f"SELECT {ALERT_COLUMNS} FROM alert WHERE id = %s"

INSERT_ALERT = f"""
INSERT INTO alert (resident_id, rule, severity, state, title, detail, device_id, event_id,
                   opened_at, last_seen_at, tier, next_tier_at, escalation_base)
VALUES (%(resident_id)s, %(rule)s, %(severity)s, %(state)s, %(title)s, %(detail)s, %(device_id)s,
        %(event_id)s, %(now)s, %(now)s, 0, %(next_tier_at)s, %(next_tier_at)s)
RETURNING {ALERT_COLUMNS}
"""

REPEAT_ALERT = """
UPDATE alert SET last_seen_at = %(now)s, occurrences = occurrences + 1, cleared_since = NULL,
       detail = %(detail)s
WHERE id = %(id)s
"""

RAISE_SEVERITY = """
UPDATE alert SET severity = %(severity)s, title = %(title)s WHERE id = %(id)s
"""

# An event reported late adds to the count of an open alert, without changing what it says.
COUNT_OCCURRENCE = "UPDATE alert SET occurrences = occurrences + 1 WHERE id = %s"

# A live event replacing what a late one said.
SET_DESCRIPTION = "UPDATE alert SET title = %(title)s, detail = %(detail)s WHERE id = %(id)s"

DELETE_SNOOZES = "DELETE FROM alert_snooze WHERE alert_id = %s"

# A new escalation round from tier 0, counting from `base`; it needs a new acknowledgement.
NEW_ROUND = """
UPDATE alert SET state = 'open', tier = 0, next_tier_at = %(base)s, escalation_base = %(base)s,
       escalation_round = escalation_round + 1, next_reminder_at = NULL,
       acknowledged_at = NULL, acknowledged_by = NULL
WHERE id = %(id)s
"""

SET_STATE = """
UPDATE alert SET state = %(state)s,
    acknowledged_at = CASE WHEN %(state)s = 'acknowledged' THEN %(now)s ELSE acknowledged_at END,
    acknowledged_by = CASE WHEN %(state)s = 'acknowledged' THEN %(actor)s ELSE acknowledged_by END,
    resolved_at = CASE WHEN %(state)s = 'resolved' THEN %(now)s ELSE resolved_at END,
    resolved_by = CASE WHEN %(state)s = 'resolved' THEN %(actor)s ELSE resolved_by END,
    resolution_note = CASE WHEN %(state)s = 'resolved' THEN %(note)s ELSE resolution_note END,
    next_tier_at = CASE WHEN %(state)s IN ('acknowledged', 'resolved') THEN NULL ELSE next_tier_at END,
    next_reminder_at = CASE WHEN %(state)s IN ('acknowledged', 'resolved') THEN NULL ELSE next_reminder_at END
WHERE id = %(id)s
"""

SET_TIMERS = """
UPDATE alert SET state = %(state)s, tier = %(tier)s, next_tier_at = %(next_tier_at)s,
       next_reminder_at = %(next_reminder_at)s, reminders_sent = %(reminders_sent)s
WHERE id = %(id)s
"""

INSERT_TRANSITION = """
INSERT INTO alert_transition (alert_id, at, actor, action, from_state, to_state, severity, note)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
RETURNING id
"""

NOTIFY_STREAM = "SELECT pg_notify('eldercare_alert', %s)"

DUE_TIERS = """
SELECT id FROM alert
WHERE state IN ('pending', 'open') AND next_tier_at <= %(now)s
ORDER BY next_tier_at LIMIT 500
"""

DUE_REMINDERS = """
SELECT id FROM alert
WHERE state = 'open' AND next_reminder_at <= %(now)s
ORDER BY next_reminder_at LIMIT 500
"""

UNRESOLVED_READING_ALERTS = """
SELECT id, rule, cleared_since, last_seen_at FROM alert
WHERE resident_id = %(resident_id)s AND state <> 'resolved' AND rule = ANY(%(rules)s)
"""

MARK_CLEARED = (
    "UPDATE alert SET cleared_since = %(now)s WHERE id = %(id)s AND cleared_since IS NULL"
)
# The evidence that it cleared stopped (no fresh readings): not cleared after all.
UNMARK_CLEARED = "UPDATE alert SET cleared_since = NULL WHERE id = %(id)s"

# The newest reading of each of these metrics: does data show the condition gone, or is it missing?
NEWEST_READINGS = """
SELECT metric, max(measured_at) FROM reading
WHERE resident_id = %(resident_id)s AND metric = ANY(%(metrics)s)
  AND measured_at > %(start)s AND measured_at <= %(now)s
GROUP BY metric
"""

# Device alerts with what became of their device: still in service for this resident, or not.
UNRESOLVED_DEVICE_ALERTS = """
SELECT a.id, a.rule, d.status,
       EXISTS (SELECT 1 FROM device_binding b WHERE b.device_id = a.device_id
               AND b.resident_id = a.resident_id AND b.unbound_at IS NULL) AS bound
FROM alert a LEFT JOIN device d ON d.device_id = a.device_id
WHERE a.state <> 'resolved' AND (a.rule LIKE 'no_data:%%' OR a.rule LIKE 'low_battery:%%')
"""

POLICY = """
SELECT reminder_every_s, tiers FROM escalation_policy
WHERE severity = %(severity)s AND (institution_id = %(institution_id)s OR institution_id IS NULL)
ORDER BY institution_id NULLS LAST LIMIT 1
"""

PERSON_COLUMNS = "d.id, d.name, d.email, d.channels, d.quiet_start, d.quiet_end, d.timezone"

RESIDENT_INSTITUTION = """
SELECT r.institution_id, i.kind FROM resident r LEFT JOIN institution i ON i.id = r.institution_id
WHERE r.id = %s
"""

CONTRACTED_DOCTOR = f"""
SELECT {PERSON_COLUMNS}, d.team, d.institution_id
FROM contract c JOIN doctor d ON d.id = c.doctor_id
WHERE c.resident_id = %(resident_id)s AND c.valid_from <= %(now)s
  AND (c.valid_to IS NULL OR c.valid_to > %(now)s) AND d.active
ORDER BY c.valid_from DESC LIMIT 1
"""

TEAM = f"""
SELECT {PERSON_COLUMNS} FROM doctor d
WHERE d.team = %(team)s AND d.institution_id IS NOT DISTINCT FROM %(institution_id)s
  AND d.id <> %(doctor_id)s AND d.role = 'doctor' AND d.active
ORDER BY d.id
"""

DUTY_DESK = f"""
SELECT {PERSON_COLUMNS} FROM doctor d
WHERE d.role = 'duty_desk' AND d.active AND d.institution_id = %(institution_id)s
ORDER BY d.id LIMIT 1
"""

DEFAULT_DUTY_DESK = f"""
SELECT {PERSON_COLUMNS} FROM doctor d
JOIN institution i ON i.id = d.institution_id
WHERE d.role = 'duty_desk' AND i.kind = 'duty_desk' AND d.active
ORDER BY d.id LIMIT 1
"""

PARTNER_INSTITUTION = """
SELECT medical_institution_id FROM cooperation_agreement
WHERE care_home_id = %(institution_id)s AND valid_from <= %(now)s
  AND (valid_to IS NULL OR valid_to > %(now)s)
ORDER BY valid_from DESC LIMIT 1
"""

CONTACTS = """
SELECT id, name, phone FROM emergency_contact WHERE resident_id = %s ORDER BY priority, id
"""

RESIDENT_NAME = "SELECT name, spo2_scale FROM resident WHERE id = %s"

NOTIFIED_RECIPIENTS = """
SELECT DISTINCT recipient_kind, recipient_id FROM notification
WHERE alert_id = %s AND kind IN ('raised', 'escalation') AND recipient_kind IN ('doctor', 'contact')
"""

# The name people know an actor by (migration 0015), for notifications to people; never a username.
ACTOR_NAME = "SELECT actor_name(%s)"

ACTIVE_SNOOZERS = "SELECT doctor_id FROM alert_snooze WHERE alert_id = %s AND until > %s"

UPSERT_SNOOZE = """
INSERT INTO alert_snooze (alert_id, doctor_id, until) VALUES (%s, %s, %s)
ON CONFLICT (alert_id, doctor_id) DO UPDATE SET until = EXCLUDED.until
"""

# Platforms that take this institution's alerts: its own, and those serving every institution.
WEBHOOKS = """
SELECT id, name, url, secret, min_severity FROM webhook_subscription
WHERE active AND (institution_id IS NULL OR institution_id = %(institution_id)s)
ORDER BY id
"""

# Platforms authorised to receive this institution's emergency contacts (names and phones).
CONTACT_WEBHOOKS = """
SELECT id FROM webhook_subscription
WHERE active AND institution_id = %(institution_id)s
ORDER BY id
"""

# Steps whose contact deliveries no platform has accepted by the deadline, and for which the duty
# desk has not been asked to call yet. A step's rows share the key prefix before ':contacts:'.
CONTACTS_UNDELIVERED = """
SELECT DISTINCT n.alert_id, split_part(n.idempotency_key, ':contacts:', 1) AS step
FROM notification n JOIN alert a ON a.id = n.alert_id AND a.state <> 'resolved'
WHERE n.recipient_kind = 'webhook' AND n.state <> 'sent' AND n.idempotency_key LIKE '%%:contacts:%%'
  AND n.created_at <= %(deadline)s AND n.created_at > %(since)s
  AND NOT EXISTS (
      SELECT 1 FROM notification s
      WHERE s.alert_id = n.alert_id AND s.recipient_kind = 'webhook' AND s.state = 'sent'
        AND starts_with(s.idempotency_key, split_part(n.idempotency_key, ':contacts:', 1) || ':contacts:'))
  AND NOT EXISTS (
      SELECT 1 FROM notification f
      WHERE f.alert_id = n.alert_id
        AND starts_with(f.idempotency_key, split_part(n.idempotency_key, ':contacts:', 1) || ':contacts-desk:'))
LIMIT 100
"""

CONTACTS_OF_STEP = """
SELECT recipient_id FROM notification
WHERE alert_id = %s AND recipient_kind = 'contact' AND starts_with(idempotency_key, %s)
"""

INSERT_NOTIFICATION = """
INSERT INTO notification (alert_id, kind, recipient_kind, recipient_id, channel, payload,
                          idempotency_key, state, created_at, next_attempt_at, last_error)
VALUES (%(alert_id)s, %(kind)s, %(recipient_kind)s, %(recipient_id)s, %(channel)s, %(payload)s,
        %(key)s, %(state)s, %(now)s, %(send_at)s, %(error)s)
ON CONFLICT (idempotency_key) DO NOTHING
"""

DUE_NOTIFICATIONS = """
SELECT id FROM notification
WHERE state = 'pending' AND next_attempt_at <= %(now)s AND channel = ANY(%(channels)s)
  AND (%(alert_id)s::bigint IS NULL OR alert_id = %(alert_id)s)
ORDER BY id
LIMIT %(limit)s
"""

# Due is checked again here, not only in DUE_NOTIFICATIONS: a dispatcher working through a list
# it read a moment ago must not resend a row that another one has just tried and put off.
CLAIM_NOTIFICATION = """
SELECT id, alert_id, kind, recipient_kind, recipient_id, channel, payload, idempotency_key, attempts
FROM notification WHERE id = %(id)s AND state = 'pending' AND next_attempt_at <= %(now)s
FOR UPDATE SKIP LOCKED
"""

MARK_SENT = (
    "UPDATE notification SET state = 'sent', sent_at = %s, attempts = attempts + 1 WHERE id = %s"
)

MARK_RETRY = """
UPDATE notification SET attempts = attempts + 1, last_error = %(error)s, next_attempt_at = %(next)s,
       state = CASE WHEN %(give_up)s THEN 'failed' ELSE 'pending' END
WHERE id = %(id)s
"""

DOCTOR_CONTACT = "SELECT id, name, email FROM doctor WHERE id = %s"
# A doctor as a recipient: name, e-mail, and whether an app can log in to receive and acknowledge.
DOCTOR_RECIPIENT = """
SELECT d.name, d.email,
       d.active AND EXISTS (SELECT 1 FROM broker_account a
                            WHERE a.doctor_id = d.id AND a.revoked_at IS NULL)
FROM doctor d WHERE d.id = %s
"""

# The doctor's app acknowledged a notification published to it (alerts/app_acks.py): delivered. Only
# its own (the acks topic names the doctor, the broker's ACL vouches for it), only on its app's
# channel, and only one published at least once. The row is locked first: an app answers within
# milliseconds, while the dispatcher that published it may not have recorded the publish yet (it
# holds the row); an UPDATE alone would judge "published" on the version before it and miss it.
LOCK_APP_NOTIFICATION = """
SELECT 1 FROM notification
WHERE id = %(id)s AND channel = 'mqtt' AND recipient_kind = 'doctor' AND recipient_id = %(doctor_id)s
FOR UPDATE
"""
CONFIRM_APP_DELIVERY = """
UPDATE notification SET state = 'sent', sent_at = %(now)s, last_error = NULL
WHERE id = %(id)s AND channel = 'mqtt' AND recipient_kind = 'doctor'
  AND recipient_id = %(doctor_id)s AND attempts > 0 AND state IN ('pending', 'failed')
RETURNING id
"""
DOCTOR_PERSON = f"SELECT {PERSON_COLUMNS} FROM doctor d WHERE d.id = %s"
USER_DOCTOR = "SELECT doctor_id FROM app_user WHERE id = %s"
CONTACT_ROW = "SELECT id, name, phone FROM emergency_contact WHERE id = %s"
WEBHOOK_ROW = "SELECT id, name, url, secret FROM webhook_subscription WHERE id = %s"

UNPROCESSED_EVENTS = """
SELECT id, device_id, resident_id, type, occurred_at, received_at FROM device_event
WHERE alert_processed_at IS NULL ORDER BY id LIMIT 200
"""

LOCK_EVENT = """
SELECT id, device_id, resident_id, type, occurred_at, received_at FROM device_event
WHERE id = %s AND alert_processed_at IS NULL FOR UPDATE SKIP LOCKED
"""

MARK_EVENT = "UPDATE device_event SET alert_processed_at = %s WHERE id = %s"

# Residents to evaluate: new readings still fresh for their metric (alerts/rules/window.py LOOKBACKS: an
# upload of old data is stored, not judged); readings that have just stood long enough for NEWS2 to
# confirm a lone one (a cuff reading, with no wearable to prompt another evaluation); and alerts
# waiting to resolve themselves. `earliest` (the oldest fresh_from) lets TimescaleDB skip chunks.
RESIDENTS_TO_EVALUATE = """
SELECT DISTINCT r.resident_id
FROM reading r
JOIN unnest(%(metrics)s::text[], %(fresh_from)s::timestamptz[]) AS f(metric, fresh_from)
  ON f.metric = r.metric
WHERE r.measured_at >= %(earliest)s AND r.measured_at >= f.fresh_from
  AND (r.received_at > %(since)s
       OR (r.measured_at > %(stood_after)s AND r.measured_at <= %(stood_until)s))
UNION
SELECT resident_id FROM alert
WHERE state <> 'resolved' AND cleared_since IS NOT NULL AND resident_id IS NOT NULL
"""

# A resident's readings per metric (oldest first): every one since `every_from`, and before that
# the last `context_readings` since `context_from` (a thermometer's previous check, this morning's
# blood pressure) without loading a day of a wristband's minute stream.
WINDOW_READINGS = """
SELECT w.metric, r.value, r.measured_at, r.device_id
FROM unnest(%(metrics)s::text[], %(every_from)s::timestamptz[], %(context_from)s::timestamptz[])
     AS w(metric, every_from, context_from)
CROSS JOIN LATERAL (
    (SELECT value, measured_at, device_id FROM reading
     WHERE resident_id = %(resident_id)s AND metric = w.metric
       AND measured_at >= w.every_from AND measured_at <= %(now)s)
    UNION ALL
    (SELECT value, measured_at, device_id FROM reading
     WHERE resident_id = %(resident_id)s AND metric = w.metric
       AND measured_at >= w.context_from AND measured_at < w.every_from
       AND measured_at >= %(earliest)s
     ORDER BY measured_at DESC LIMIT %(context_readings)s)
) r
ORDER BY r.measured_at
"""

OVERRIDES = "SELECT metric, low, high FROM resident_threshold WHERE resident_id = %s"
# What the rules know about the resident besides readings (migration 0011: air or oxygen).
RESIDENT_FACTS = """
SELECT spo2_scale, on_oxygen, on_oxygen_set_by, on_oxygen_set_at FROM resident WHERE id = %s
"""

# A resident's usual value of a metric (IDSA's temperature baseline): the median of the hourly means
# of their own readings in [start, end), a week ending a day ago (the building episode left out;
# readings of the last week are not yet compressed, so the resident's index serves). Hours near an
# alert of `rule` (from `before_episode` ahead of its opening until it was resolved) are left out:
# an episode is not the resident's usual. Hourly means weigh a wristband's minute stream and a
# twice-daily thermometer alike: one value per hour measured.
BASELINE = """
WITH hourly AS (
    SELECT date_bin(INTERVAL '1 hour', measured_at, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS hour,
           avg(value) AS mean
    FROM reading
    WHERE resident_id = %(resident_id)s AND metric = %(metric)s
      AND measured_at >= %(start)s AND measured_at < %(end)s
    GROUP BY 1
)
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY h.mean), count(*), min(h.hour), max(h.hour)
FROM hourly h
WHERE NOT EXISTS (
    SELECT 1 FROM alert a
    WHERE a.resident_id = %(resident_id)s AND a.rule = %(rule)s
      AND h.hour + INTERVAL '1 hour' > a.opened_at - %(before_episode)s
      AND h.hour < coalesce(a.resolved_at, %(now)s)
)
"""

DEVICE_STATES = """
SELECT d.device_id, d.kind, b.resident_id,
       -- NULL: never reported a status (so no Last Will either), not "offline"
       CASE WHEN EXISTS (SELECT 1 FROM device_presence p WHERE p.device_id = d.device_id) THEN d.online END,
       d.battery, d.last_seen_at, b.bound_at, d.expected_interval_s
FROM device d JOIN device_binding b ON b.device_id = d.device_id AND b.unbound_at IS NULL
WHERE d.status = 'active'
"""

LIST_ALERTS = f"""
SELECT {ALERT_COLUMNS} FROM alert
WHERE (%(state)s::text IS NULL OR state = %(state)s OR (%(state)s = 'unresolved' AND state <> 'resolved'))
  AND (%(resident_id)s::bigint IS NULL OR resident_id = %(resident_id)s)
  AND (%(severity)s::text IS NULL OR severity = %(severity)s)
ORDER BY CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, opened_at DESC
LIMIT %(limit)s
"""

TIMELINE = """
SELECT at, actor, action, from_state, to_state, severity, note FROM alert_transition
WHERE alert_id = %s ORDER BY id
"""

NOTIFICATIONS_OF = """
SELECT kind, recipient_kind, recipient_id, channel, state, attempts, sent_at, last_error
FROM notification WHERE alert_id = %s ORDER BY id
"""
