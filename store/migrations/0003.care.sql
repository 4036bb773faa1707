-- Care relationships: institutions, doctors (and duty desks), contracts (家庭医生签约),
-- care-home cooperation agreements, escalation policies. Then alerts, their history and the outbox.
-- depends: 0002.timeseries

CREATE TABLE institution (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL,
    kind          text NOT NULL CHECK (kind IN (
                      'community_health_centre', 'township_hospital', 'care_home',
                      'care_home_medical_room', 'partner_hospital', 'duty_desk')),
    phone         text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Doctors, and duty desks as recipients of their own (role 'duty_desk'): every alert has a person
-- or a desk to go to. Channels per severity and quiet hours are the doctor's preferences.
CREATE TABLE doctor (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL,
    role          text NOT NULL DEFAULT 'doctor' CHECK (role IN ('doctor', 'duty_desk')),
    institution_id bigint REFERENCES institution(id),
    team          text,
    phone         text,
    email         text,
    channels      jsonb NOT NULL DEFAULT
                  '{"critical": ["mqtt", "email"], "warning": ["mqtt", "email"], "info": ["mqtt"]}',
    quiet_start   time,
    quiet_end     time,
    timezone      text NOT NULL DEFAULT 'Asia/Shanghai',
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX doctor_institution_idx ON doctor (institution_id, role);

-- Where the resident belongs: the community health centre of the area, or the care home.
ALTER TABLE resident ADD COLUMN institution_id bigint REFERENCES institution(id);

CREATE TABLE contract (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    resident_id   bigint NOT NULL REFERENCES resident(id),
    doctor_id     bigint NOT NULL REFERENCES doctor(id),
    valid_from    timestamptz NOT NULL DEFAULT now(),
    valid_to      timestamptz,
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);
CREATE INDEX contract_resident_idx ON contract (resident_id, valid_from DESC);
CREATE INDEX contract_doctor_idx ON contract (doctor_id);

-- A care home's signed medical cooperation agreement covers all of its residents.
CREATE TABLE cooperation_agreement (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    care_home_id  bigint NOT NULL REFERENCES institution(id),
    medical_institution_id bigint NOT NULL REFERENCES institution(id),
    valid_from    timestamptz NOT NULL DEFAULT now(),
    valid_to      timestamptz
);

-- Who is notified when, per institution and severity; institution NULL is the default policy.
-- tiers: [{"after_s": 0, "notify": ["contracted_doctor", "duty_desk"]}, ...]
CREATE TABLE escalation_policy (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    institution_id bigint REFERENCES institution(id),
    severity      text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    reminder_every_s integer CHECK (reminder_every_s > 0),
    tiers         jsonb NOT NULL,
    UNIQUE NULLS NOT DISTINCT (institution_id, severity)
);

-- The last resort: never drop an alert for lack of a recipient.
INSERT INTO institution (name, kind) VALUES ('eldercare 值班台 (default duty desk)', 'duty_desk');
INSERT INTO doctor (name, role, institution_id, channels)
SELECT '值班台 duty desk', 'duty_desk', id,
       '{"critical": ["mqtt"], "warning": ["mqtt"], "info": ["mqtt"]}'
FROM institution WHERE kind = 'duty_desk';

INSERT INTO escalation_policy (institution_id, severity, reminder_every_s, tiers) VALUES
    (NULL, 'critical', 120, '[{"after_s": 0, "notify": ["contracted_doctor", "duty_desk"]},
                              {"after_s": 300, "notify": ["team", "partner_duty_desk"]},
                              {"after_s": 600, "notify": ["emergency_contacts"]}]'),
    (NULL, 'warning', 900, '[{"after_s": 0, "notify": ["contracted_doctor"]},
                             {"after_s": 1800, "notify": ["duty_desk"]}]'),
    (NULL, 'info', NULL, '[{"after_s": 0, "notify": ["contracted_doctor"]}]');

-- Per-resident thresholds set by the doctor (a hypertensive resident's normal is not the textbook's).
CREATE TABLE resident_threshold (
    resident_id   bigint NOT NULL REFERENCES resident(id),
    metric        text NOT NULL,
    low           double precision,
    high          double precision,
    set_by        text,
    set_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (resident_id, metric)
);

CREATE TABLE alert (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    resident_id   bigint REFERENCES resident(id),
    rule          text NOT NULL,          -- e.g. spo2_low, sos, no_data:wb-0001
    severity      text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    state         text NOT NULL CHECK (state IN ('pending', 'open', 'acknowledged', 'resolved')),
    title         text NOT NULL,
    detail        jsonb NOT NULL DEFAULT '{}',
    device_id     text,
    event_id      bigint REFERENCES device_event(id),
    opened_at     timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    occurrences   integer NOT NULL DEFAULT 1,
    cleared_since timestamptz,            -- condition not seen since; auto-resolve after a while
    acknowledged_at timestamptz,
    acknowledged_by text,
    resolved_at   timestamptz,
    resolved_by   text,
    resolution_note text,
    -- escalation timers, persisted so that any restart continues exactly where it was
    tier          integer NOT NULL DEFAULT 0,       -- next tier to notify
    next_tier_at  timestamptz,                       -- when (NULL: no further tier)
    next_reminder_at timestamptz,
    reminders_sent integer NOT NULL DEFAULT 0
);
-- Dedup: at most one unresolved alert per resident and rule.
CREATE UNIQUE INDEX alert_one_unresolved_idx ON alert (resident_id, rule) WHERE state <> 'resolved';
CREATE INDEX alert_due_idx ON alert (next_tier_at) WHERE state IN ('pending', 'open');
CREATE INDEX alert_reminder_idx ON alert (next_reminder_at) WHERE state = 'open';
CREATE INDEX alert_resident_idx ON alert (resident_id, opened_at DESC);

CREATE TABLE alert_transition (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id      bigint NOT NULL REFERENCES alert(id),
    at            timestamptz NOT NULL,
    actor         text NOT NULL,          -- 'system', 'device:<id>', 'doctor:<id>', 'cli:<user>'
    action        text NOT NULL,          -- raised, repeated, severity_raised, acknowledged, snoozed, resolved, ...
    from_state    text,
    to_state      text NOT NULL,
    severity      text NOT NULL,
    note          text
);
CREATE INDEX alert_transition_alert_idx ON alert_transition (alert_id, id);

-- Snooze is per alert and per person; it silences reminders to that person only.
CREATE TABLE alert_snooze (
    alert_id      bigint NOT NULL REFERENCES alert(id),
    doctor_id     bigint NOT NULL REFERENCES doctor(id),
    until         timestamptz NOT NULL,
    PRIMARY KEY (alert_id, doctor_id)
);

-- Platforms that receive alerts by HMAC-signed webhook (e.g. a 12349 elderly-care platform).
CREATE TABLE webhook_subscription (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL,
    url           text NOT NULL,
    secret        text NOT NULL,
    min_severity  text NOT NULL DEFAULT 'warning' CHECK (min_severity IN ('info', 'warning', 'critical')),
    active        boolean NOT NULL DEFAULT true
);

-- The outbox: one row per (notification, recipient, channel); the idempotency key makes a restart
-- or a retry never send a different notification twice under another name.
CREATE TABLE notification (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id      bigint NOT NULL REFERENCES alert(id),
    kind          text NOT NULL,          -- raised, reminder, escalation, severity_raised, acknowledged, resolved
    recipient_kind text NOT NULL,         -- doctor, contact, webhook, device
    recipient_id  text NOT NULL,
    channel       text NOT NULL,          -- mqtt, email, webhook, device_ack
    payload       jsonb NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    state         text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed', 'suppressed')),
    created_at    timestamptz NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text,
    sent_at       timestamptz
);
CREATE INDEX notification_due_idx ON notification (next_attempt_at) WHERE state = 'pending';
CREATE INDEX notification_alert_idx ON notification (alert_id, id);

-- Events the alert engine has taken over (catch-up after a restart handles the rest).
ALTER TABLE device_event ADD COLUMN alert_processed_at timestamptz;
CREATE INDEX device_event_unprocessed_idx ON device_event (id) WHERE alert_processed_at IS NULL;
