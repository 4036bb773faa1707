"""SQL of the HTTP API's access layer: logins, tokens, the audit log and the visibility rule."""

SELECT_USER = """
SELECT u.id, u.username, u.password_hash, u.role, u.doctor_id, u.institution_id, d.institution_id
FROM app_user u LEFT JOIN doctor d ON d.id = u.doctor_id
WHERE u.username = %s AND u.active
"""

# A login attempt is reserved (as a failure, deleted again when the password was right) under two
# advisory locks, the address's and then the account's, always in that order (no deadlock): two
# concurrent attempts cannot both see room for one more (api/access/login_limits.py: reserve_attempt).
LOCK_LOGIN_ADDRESS = "SELECT pg_advisory_xact_lock(hashtextextended('login-address:' || %s, 0))"
LOCK_LOGIN_ACCOUNT = "SELECT pg_advisory_xact_lock(hashtextextended('login-account:' || %s, 0))"
RESERVE_LOGIN_ATTEMPT = """
WITH recent AS (
    SELECT count(*) FILTER (WHERE username = %(username)s AND address = %(address)s) AS pair,
           count(*) FILTER (WHERE address = %(address)s) AS from_address,
           count(*) FILTER (WHERE username = %(username)s) AS account
    FROM login_failure
    WHERE (username = %(username)s OR address = %(address)s) AND at > now() - %(window)s::interval
)
INSERT INTO login_failure (username, address)
SELECT %(username)s, %(address)s FROM recent
WHERE from_address < %(address_max)s
  AND pair < CASE WHEN account >= %(slowdown_after)s THEN %(slowed_max)s ELSE %(pair_max)s END
RETURNING id
"""
RELEASE_LOGIN_ATTEMPT = "DELETE FROM login_failure WHERE id = %s"
PRUNE_FAILURES = "DELETE FROM login_failure WHERE at < now() - %(window)s::interval"

INSERT_TOKEN = """
INSERT INTO api_token (token_hash, kind, user_id, client_id, scopes, expires_at)
VALUES (%s, %s, %s, %s, %s, %s) RETURNING id
"""

# The token's owner, whether a person or a platform, with what they may see.
# Who a token belongs to, if it still may: an active account or a platform not disabled. The
# login check and the live stream's re-check share these joins.
_TOKEN_OWNER = """
FROM api_token t
LEFT JOIN app_user u ON u.id = t.user_id AND u.active
LEFT JOIN doctor d ON d.id = u.doctor_id
LEFT JOIN platform_client p ON p.id = t.client_id AND p.disabled_at IS NULL
"""

SELECT_TOKEN = f"""
SELECT t.id, t.kind, t.scopes, t.expires_at,
       u.id, u.username, u.role, u.doctor_id, u.institution_id, d.institution_id,
       p.id, p.name, p.institution_ids
{_TOKEN_OWNER}
WHERE t.token_hash = %s AND t.revoked_at IS NULL
"""

TOUCH_TOKEN = """
UPDATE api_token SET last_used_at = now()
WHERE id = %s AND (last_used_at IS NULL OR last_used_at < now() - INTERVAL '1 minute')
"""
REVOKE_TOKEN = "UPDATE api_token SET revoked_at = now() WHERE id = %s"

INSERT_AUDIT = """
INSERT INTO audit_log
    (actor, action, resident_id, resident_ids, resource, address, outcome, detail, actor_institutions)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
"""

# An institution's administrators see what their people did, and what anyone did with their
# residents. A resident they may not see is never named (a row of their doctor's refused look at
# another institution's resident says only that something was refused); the resident filter
# matches only the residents they may see. Actors as opaque ids with their display names (the
# username stays in the table). Newest first; page with before_id.
_AUDIT_OURS = "may_see_resident({column}, NULL, NULL, %(institutions)s::bigint[], false)"
SELECT_AUDIT = f"""
SELECT * FROM (
    SELECT a.id, a.at, actor_ref(a.actor) AS actor, actor_name(a.actor) AS actor_name, a.action,
           CASE WHEN %(everyone)s OR {_AUDIT_OURS.format(column="a.resident_id")}
                THEN a.resident_id END AS resident_id,
           CASE WHEN %(everyone)s OR a.resident_ids IS NULL THEN a.resident_ids
                ELSE ARRAY(SELECT x FROM unnest(a.resident_ids) x
                           WHERE {_AUDIT_OURS.format(column="x")})
           END AS resident_ids,
           a.resource, a.address, a.outcome, a.detail
    FROM audit_log a
    WHERE (%(everyone)s
           OR a.actor_institutions && %(institutions)s::bigint[]
           OR (a.resident_id IS NOT NULL AND {_AUDIT_OURS.format(column="a.resident_id")})
           OR EXISTS (SELECT 1 FROM unnest(a.resident_ids) x WHERE {_AUDIT_OURS.format(column="x")}))
      AND (%(actor)s::text IS NULL OR actor_ref(a.actor) = actor_ref(%(actor)s))
      AND (%(action)s::text IS NULL OR a.action = %(action)s)
      AND (%(outcome)s::text IS NULL OR a.outcome = %(outcome)s)
      AND (%(since)s::timestamptz IS NULL OR a.at >= %(since)s)
      AND (%(until)s::timestamptz IS NULL OR a.at < %(until)s)
      AND (%(before_id)s::bigint IS NULL OR a.id < %(before_id)s)
      AND (%(resident_id)s::bigint IS NULL OR a.resident_id = %(resident_id)s
           OR a.resident_ids @> ARRAY[%(resident_id)s::bigint])
) v
WHERE %(resident_id)s::bigint IS NULL OR v.resident_id = %(resident_id)s
   OR v.resident_ids @> ARRAY[%(resident_id)s::bigint]
ORDER BY v.id DESC LIMIT %(limit)s
"""

VISIBLE = "may_see_resident({column}, %(doctor_id)s, %(doctor_institution)s, %(institutions)s, %(everyone)s)"

INSERT_USER = """
INSERT INTO app_user (username, password_hash, role, doctor_id, institution_id, display_name)
VALUES (%s, %s, %s, %s, %s, %s) RETURNING id
"""
INSERT_PLATFORM = "INSERT INTO platform_client (name, institution_ids) VALUES (%s, %s) RETURNING id"

EXISTING_INSTITUTIONS = "SELECT array_agg(id) FROM institution WHERE id = ANY(%s)"
PLATFORM_BY_NAME = "SELECT id FROM platform_client WHERE name = %s"

# Platforms with their API keys, newest key first (the secrets are not stored, only digests).
LIST_PLATFORMS = """
SELECT p.id, p.name, p.institution_ids, p.created_at, p.disabled_at,
       coalesce((SELECT json_agg(json_build_object(
                    'id', t.id, 'scopes', t.scopes, 'created_at', t.created_at,
                    'expires_at', t.expires_at, 'revoked_at', t.revoked_at,
                    'last_used_at', t.last_used_at) ORDER BY t.id DESC)
                 FROM api_token t WHERE t.client_id = p.id AND t.kind = 'api_key'), '[]') AS keys
FROM platform_client p
WHERE (%(platform_id)s::bigint IS NULL OR p.id = %(platform_id)s)
ORDER BY p.id
"""
REVOKE_PLATFORM_TOKENS = (
    "UPDATE api_token SET revoked_at = now() WHERE client_id = %s AND revoked_at IS NULL"
)
DISABLE_PLATFORM = "UPDATE platform_client SET disabled_at = now() WHERE id = %s"

# A platform's live API key, for the OAuth2 client-credentials grant.
SELECT_CLIENT_KEY = """
SELECT t.id, t.scopes, t.expires_at, p.id, p.name
FROM api_token t JOIN platform_client p ON p.id = t.client_id
WHERE t.token_hash = %s AND t.client_id = %s AND t.kind = 'api_key' AND t.revoked_at IS NULL
  AND p.disabled_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())
"""

# Administration, within the caller's scope: everything (system admins) or these institutions.
_OURS = "(%(everyone)s OR {column} = ANY(%(institutions)s::bigint[]))"

LIST_INSTITUTIONS = "SELECT id, name, kind, phone FROM institution ORDER BY id"

LIST_DOCTORS = f"""
SELECT id, name, role, institution_id, team, phone, email, active FROM doctor
WHERE {_OURS.format(column="institution_id")}
  AND (%(doctor_id)s::bigint IS NULL OR id = %(doctor_id)s)
  AND (%(institution_id)s::bigint IS NULL OR institution_id = %(institution_id)s)
  AND (%(role)s::text IS NULL OR role = %(role)s)
ORDER BY id LIMIT %(limit)s OFFSET %(offset)s
"""

DOCTOR_INSTITUTION = "SELECT institution_id FROM doctor WHERE id = %s"

# A contract is an institution's business when its doctor works there or its resident lives there.
LIST_CONTRACTS = f"""
SELECT c.id, c.resident_id, r.name AS resident_name, c.doctor_id, d.name AS doctor_name,
       c.valid_from, c.valid_to,
       (c.valid_from <= now() AND (c.valid_to IS NULL OR c.valid_to > now())) AS active
FROM contract c JOIN doctor d ON d.id = c.doctor_id JOIN resident r ON r.id = c.resident_id
WHERE ({_OURS.format(column="d.institution_id")} OR r.institution_id = ANY(%(institutions)s::bigint[]))
  AND (%(contract_id)s::bigint IS NULL OR c.id = %(contract_id)s)
  AND (%(resident_id)s::bigint IS NULL OR c.resident_id = %(resident_id)s)
  AND (%(doctor_id)s::bigint IS NULL OR c.doctor_id = %(doctor_id)s)
  AND (%(active)s::boolean IS NULL
       OR %(active)s = (c.valid_from <= now() AND (c.valid_to IS NULL OR c.valid_to > now())))
ORDER BY c.id LIMIT %(limit)s OFFSET %(offset)s
"""

LIST_DEVICES = f"""
SELECT d.device_id, d.kind, d.model, d.status, d.institution_id, b.resident_id, d.online, d.battery,
       d.firmware, d.last_seen_at, d.created_at, d.retired_at
FROM device d LEFT JOIN device_binding b ON b.device_id = d.device_id AND b.unbound_at IS NULL
WHERE {_OURS.format(column="d.institution_id")}
  AND (%(device_id)s::text IS NULL OR d.device_id = %(device_id)s)
  AND (%(resident_id)s::bigint IS NULL OR b.resident_id = %(resident_id)s)
  AND (%(institution_id)s::bigint IS NULL OR d.institution_id = %(institution_id)s)
  AND (%(status)s::text IS NULL OR d.status = %(status)s)
ORDER BY d.device_id LIMIT %(limit)s OFFSET %(offset)s
"""

# Everyone's default policies, and the institution's own.
LIST_POLICIES = f"""
SELECT id, institution_id, severity, reminder_every_s, tiers FROM escalation_policy
WHERE (institution_id IS NULL OR {_OURS.format(column="institution_id")})
  AND (%(institution_id)s::bigint IS NULL OR institution_id = %(institution_id)s)
ORDER BY institution_id NULLS FIRST, CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END
"""

RESIDENT_INSTITUTION = "SELECT institution_id FROM resident WHERE id = %s"

_SEE_R = VISIBLE.format(column="r.id")

LIST_RESIDENTS = f"""
SELECT r.id, r.name, r.archive_id, r.birth_date, r.gender, r.institution_id
FROM resident r WHERE {_SEE_R}
ORDER BY r.id LIMIT %(limit)s OFFSET %(offset)s
"""

# Who holds an archive number, if the caller may see them (a 409 names only a visible holder).
ARCHIVE_HOLDER = f"SELECT r.id FROM resident r WHERE r.archive_id = %(archive_id)s AND {_SEE_R}"

GET_RESIDENT = f"""
SELECT r.id, r.name, r.archive_id, r.birth_date, r.gender, r.address, r.institution_id, r.spo2_scale,
       (SELECT json_build_object('id', d.id, 'name', d.name, 'team', d.team)
        FROM contract c JOIN doctor d ON d.id = c.doctor_id
        WHERE c.resident_id = r.id AND c.valid_from <= now() AND (c.valid_to IS NULL OR c.valid_to > now())
        ORDER BY c.valid_from DESC LIMIT 1) AS contracted_doctor
FROM resident r WHERE r.id = %(resident_id)s AND {_SEE_R}
"""

RESIDENT_DEVICES = """
SELECT d.device_id, d.kind, d.online, d.battery, d.last_seen_at
FROM device d JOIN device_binding b ON b.device_id = d.device_id AND b.unbound_at IS NULL
WHERE b.resident_id = %s AND d.status = 'active' ORDER BY d.device_id
"""

# Keyset paging: a page starts after the previous page's last (time, metric[, device]) — the whole
# sort key, so rows sharing the boundary timestamp are neither lost nor repeated. The caller raises
# `since` to the cursor's time, which keeps the index range tight.
RAW_READINGS = """
SELECT measured_at AS at, metric, value, device_id
FROM reading
WHERE resident_id = %(resident_id)s AND measured_at >= %(since)s AND measured_at < %(until)s
  AND (%(metric)s::text IS NULL OR metric = %(metric)s)
  AND (%(c_at)s::timestamptz IS NULL OR measured_at > %(c_at)s
       OR (measured_at = %(c_at)s AND (metric, device_id) > (%(c_metric)s::text, %(c_device)s::text)))
ORDER BY measured_at, metric, device_id
LIMIT %(limit)s
"""

BUCKETED_READINGS = """
SELECT bucket AS at, metric, avg_value AS value, min_value, max_value, samples
FROM {view}
WHERE resident_id = %(resident_id)s AND bucket >= %(since)s AND bucket < %(until)s
  AND (%(metric)s::text IS NULL OR metric = %(metric)s)
  AND (%(c_at)s::timestamptz IS NULL OR bucket > %(c_at)s
       OR (bucket = %(c_at)s AND metric > %(c_metric)s::text))
ORDER BY bucket, metric
LIMIT %(limit)s
"""

# One index probe per metric (the newest reading within 7 days), not a scan of a week of readings:
# a week of a wearable is ~10,000 rows per resident, mostly not in memory on a big table.
LATEST_READINGS = """
SELECT m.metric, r.value, r.measured_at, r.device_id
FROM unnest(%(metrics)s::text[]) AS m(metric)
CROSS JOIN LATERAL (
    SELECT value, measured_at, device_id FROM reading
    WHERE resident_id = %(resident_id)s AND metric = m.metric
      AND measured_at > now() - INTERVAL '7 days'
    ORDER BY measured_at DESC LIMIT 1
) r
ORDER BY m.metric
"""

# An alert of a resident: whoever may see the resident. An alert of a device bound to nobody (an
# unbound SOS button) has no resident: system admins, and the duty desks that were notified of it
# (a duty desk login of the desk's institution, or the desk itself), see it; nobody else does.
NOTIFIED_DESKS = """
SELECT d.id, d.institution_id FROM notification n
JOIN doctor d ON n.recipient_id = d.id::text AND d.role = 'duty_desk'
WHERE n.alert_id = a.id AND n.recipient_kind = 'doctor'
"""
_SEE_A = f"""(CASE WHEN a.resident_id IS NOT NULL THEN {VISIBLE.format(column="a.resident_id")}
ELSE %(everyone)s OR (%(desk)s AND EXISTS (
    SELECT 1 FROM ({NOTIFIED_DESKS}) x(id, institution_id)
    WHERE x.institution_id = ANY(%(institutions)s::bigint[]) OR x.id = %(doctor_id)s)) END)"""

# Critical first, then newest; `id` completes the sort key so keyset paging (the cursor: the last
# row's rank, opened_at and id) neither skips nor repeats alerts opened at the same moment.
LIST_ALERTS = f"""
SELECT a.id, a.resident_id, r.name AS resident_name, a.device_id, a.rule, a.severity, a.state, a.title,
       a.opened_at, a.last_seen_at, a.occurrences, actor_ref(a.acknowledged_by) AS acknowledged_by,
       actor_shown(a.acknowledged_by, %(people)s) AS acknowledged_by_name, a.acknowledged_at, s.rank
FROM alert a LEFT JOIN resident r ON r.id = a.resident_id
CROSS JOIN LATERAL (SELECT CASE a.severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END AS rank) s
WHERE {_SEE_A}
  AND (%(state)s::text IS NULL OR a.state = %(state)s OR (%(state)s = 'unresolved' AND a.state <> 'resolved'))
  AND (%(severity)s::text IS NULL OR a.severity = %(severity)s)
  AND (%(resident_id)s::bigint IS NULL OR a.resident_id = %(resident_id)s)
  AND (%(since)s::timestamptz IS NULL OR a.opened_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR a.opened_at < %(until)s)
  AND (%(c_rank)s::int IS NULL OR s.rank > %(c_rank)s
       OR (s.rank = %(c_rank)s AND (a.opened_at, a.id) < (%(c_opened)s::timestamptz, %(c_id)s::bigint)))
ORDER BY s.rank, a.opened_at DESC, a.id DESC
LIMIT %(limit)s
"""

ALERT_RESIDENT = f"""
SELECT a.resident_id FROM alert a WHERE a.id = %(alert_id)s AND {_SEE_A}
"""

# The stream's columns (api/hub.py: alert_event); for an alert without a resident, the duty desks
# notified of it, as (desk ids, their institutions): the stream shows it to those desks only.
_STREAM_COLUMNS = f"""
t.id, t.alert_id, a.resident_id, a.device_id, a.rule, t.action, t.to_state, t.severity, t.at,
actor_ref(t.actor), actor_name(t.actor),
CASE WHEN a.resident_id IS NULL THEN ARRAY(SELECT x.id FROM ({NOTIFIED_DESKS}) x(id, i)) END,
CASE WHEN a.resident_id IS NULL THEN ARRAY(SELECT x.i FROM ({NOTIFIED_DESKS}) x(id, i)) END
"""
STREAM_TRANSITIONS = f"""
SELECT {_STREAM_COLUMNS}
FROM alert_transition t JOIN alert a ON a.id = t.alert_id
WHERE t.id > %(after)s AND {_SEE_A}
ORDER BY t.id LIMIT 500
"""

LAST_TRANSITION = "SELECT coalesce(max(id), 0) FROM alert_transition"

OVERVIEW_RESIDENTS = f"""
SELECT r.id, r.name,
       count(a.id) FILTER (WHERE a.state <> 'resolved') AS open_alerts,
       max(CASE a.severity WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 WHEN 'info' THEN 0 END)
           FILTER (WHERE a.state <> 'resolved') AS worst
FROM resident r LEFT JOIN alert a ON a.resident_id = r.id
WHERE {_SEE_R}
GROUP BY r.id, r.name ORDER BY r.id LIMIT 2000
"""

OVERVIEW_NEWS2 = """
SELECT DISTINCT ON (resident_id) resident_id, detail->>'band' FROM alert
WHERE rule = 'news2' AND state <> 'resolved' AND resident_id = ANY(%s)
ORDER BY resident_id, opened_at DESC
"""

OVERVIEW_OFFLINE = f"""
SELECT d.device_id, d.kind, r.id AS resident_id, r.name AS resident_name, d.last_seen_at
FROM device d JOIN device_binding b ON b.device_id = d.device_id AND b.unbound_at IS NULL
JOIN resident r ON r.id = b.resident_id
WHERE d.status = 'active' AND {_SEE_R}
  AND (NOT d.online OR d.last_seen_at IS NULL OR d.last_seen_at < now() - INTERVAL '10 minutes')
ORDER BY d.last_seen_at NULLS FIRST LIMIT 500
"""

OVERVIEW_UNACKED = f"""
SELECT count(*) FILTER (WHERE age < INTERVAL '5 minutes'),
       count(*) FILTER (WHERE age >= INTERVAL '5 minutes' AND age < INTERVAL '30 minutes'),
       count(*) FILTER (WHERE age >= INTERVAL '30 minutes' AND age < INTERVAL '2 hours'),
       count(*) FILTER (WHERE age >= INTERVAL '2 hours')
FROM alert a, LATERAL (SELECT now() - a.opened_at AS age) x
WHERE a.state = 'open' AND {_SEE_A}
"""

THRESHOLD_OVERRIDES = "SELECT metric, low, high FROM resident_threshold WHERE resident_id = %s"

# The alert page's timeline and handlers: who, as an opaque id (never a username), and by name for
# people (migration 0015: actor_ref, actor_shown).
ALERT_TIMELINE = """
SELECT at, actor_ref(actor) AS actor, actor_shown(actor, %(people)s) AS actor_name, action,
       from_state, to_state, severity, note
FROM alert_transition WHERE alert_id = %(alert_id)s ORDER BY id
"""
ALERT_HANDLERS = """
SELECT actor_ref(acknowledged_by) AS acknowledged_by,
       actor_shown(acknowledged_by, %(people)s) AS acknowledged_by_name,
       actor_ref(resolved_by) AS resolved_by, actor_shown(resolved_by, %(people)s) AS resolved_by_name
FROM alert WHERE id = %(alert_id)s
"""

# The live stream's shared listener (api/hub.py) reads each new transition once for every open
# stream: those above the floor it has not read yet (a transaction that commits after a later
# one still arrives), whoever may see them; each stream keeps its caller's.
LIVE_TRANSITIONS_PAGE = 1000
LIVE_TRANSITIONS = f"""
SELECT {_STREAM_COLUMNS}
FROM alert_transition t JOIN alert a ON a.id = t.alert_id
WHERE t.id > %(floor)s AND t.id <> ALL(%(seen)s::bigint[])
ORDER BY t.id LIMIT {LIVE_TRANSITIONS_PAGE}
"""

# The latest value per metric of each device that sent telemetry since `since` (found through
# telemetry_message's received_at index; then one index probe per device and metric).
LIVE_VITALS = """
SELECT x.resident_id, m.metric, x.value, x.measured_at, d.device_id
FROM (SELECT DISTINCT device_id FROM telemetry_message WHERE received_at > %(since)s) d
CROSS JOIN unnest(%(metrics)s::text[]) AS m(metric)
CROSS JOIN LATERAL (
    SELECT r.resident_id, r.value, r.measured_at FROM reading r
    WHERE r.device_id = d.device_id AND r.metric = m.metric
      AND r.measured_at > now() - INTERVAL '7 days'
    ORDER BY r.measured_at DESC LIMIT 1
) x
"""

# Stream tickets (migration 0008): single use, so redeeming one deletes it.
INSERT_STREAM_TICKET = """
INSERT INTO stream_ticket (ticket_hash, token_id, principal, expires_at)
VALUES (%s, %s, %s, now() + %s * INTERVAL '1 second') RETURNING expires_at
"""
PURGE_STREAM_TICKETS = "DELETE FROM stream_ticket WHERE expires_at < now()"
REDEEM_STREAM_TICKET = """
DELETE FROM stream_ticket WHERE ticket_hash = %s RETURNING principal, expires_at > now()
"""

# An open stream re-checks its caller's token at every heartbeat: still there, not revoked, its
# account active, not expired.
TOKEN_STILL_VALID = f"""
SELECT t.expires_at
{_TOKEN_OWNER}
WHERE t.id = %s AND t.revoked_at IS NULL AND (u.id IS NOT NULL OR p.id IS NOT NULL)
"""

VISIBLE_RESIDENT_IDS = f"SELECT r.id FROM resident r WHERE {_SEE_R}"
