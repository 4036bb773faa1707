-- Core registry and time-series tables. Applied by yoyo (store/db.py: migrate).
-- Time-series specifics (hypertable or plain indexes, rollups) are in 0002.

CREATE TABLE resident (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL CHECK (length(trim(name)) > 0),
    birth_date    date,
    gender        text CHECK (gender IN ('female', 'male', 'other', 'unknown')),
    address       text,
    -- 健康档案编号, 17 digits: county(6) + township(3) + village(3) + serial(5); CLINICAL.md.
    archive_id    text UNIQUE CHECK (archive_id ~ '^[0-9]{17}$'),
    -- NEWS2 SpO2 scale 2 only for residents the doctor flags (hypercapnic respiratory failure).
    spo2_scale    smallint NOT NULL DEFAULT 1 CHECK (spo2_scale IN (1, 2)),
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE emergency_contact (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    resident_id   bigint NOT NULL REFERENCES resident(id) ON DELETE CASCADE,
    name          text NOT NULL,
    phone         text NOT NULL,
    relation      text,
    priority      smallint NOT NULL DEFAULT 1
);
CREATE INDEX emergency_contact_resident_idx ON emergency_contact (resident_id, priority);

CREATE TABLE device (
    device_id     text PRIMARY KEY CHECK (device_id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    kind          text NOT NULL,
    model         text,
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired')),
    -- Overrides the kind's expected reporting interval (devices/models.py) for "no data" alerts.
    expected_interval_s integer CHECK (expected_interval_s > 0),
    online        boolean NOT NULL DEFAULT false,
    battery       smallint CHECK (battery BETWEEN 0 AND 100),
    firmware      text,
    last_seen_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    retired_at    timestamptz
);

-- Which resident wore a device when: readings are attributed by their measured time.
CREATE TABLE device_binding (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id     text NOT NULL REFERENCES device(device_id),
    resident_id   bigint NOT NULL REFERENCES resident(id),
    bound_at      timestamptz NOT NULL DEFAULT now(),
    unbound_at    timestamptz,
    CHECK (unbound_at IS NULL OR unbound_at >= bound_at)
);
CREATE UNIQUE INDEX device_binding_one_open_idx ON device_binding (device_id) WHERE unbound_at IS NULL;
CREATE INDEX device_binding_resident_idx ON device_binding (resident_id);

-- Broker logins. The hash is Mosquitto's own PBKDF2-SHA512 format, rendered into its password file.
CREATE TABLE broker_account (
    username      text PRIMARY KEY,
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('device', 'service')),
    device_id     text REFERENCES device(device_id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);

-- Presence history from the status topic and the Last Will.
CREATE TABLE device_presence (
    device_id     text NOT NULL REFERENCES device(device_id),
    reported_at   timestamptz NOT NULL,
    online        boolean NOT NULL,
    battery       smallint,
    firmware      text,
    PRIMARY KEY (device_id, reported_at)
);

-- Readings: one row per device, metric and measured time; the key makes redelivery harmless.
CREATE TABLE reading (
    device_id     text NOT NULL,
    metric        text NOT NULL,
    measured_at   timestamptz NOT NULL,
    resident_id   bigint NOT NULL,
    value         double precision NOT NULL,
    received_at   timestamptz NOT NULL,
    msg_id        text NOT NULL,
    PRIMARY KEY (device_id, metric, measured_at)
);
CREATE INDEX reading_resident_metric_idx ON reading (resident_id, metric, measured_at DESC);

-- Telemetry messages already stored, by the device's msg_id: a re-sent message is stored once.
CREATE TABLE telemetry_message (
    device_id     text NOT NULL,
    msg_id        text NOT NULL,
    received_at   timestamptz NOT NULL,
    PRIMARY KEY (device_id, msg_id)
);
CREATE INDEX telemetry_message_received_idx ON telemetry_message (received_at);

-- Emergency calls and device-detected events (sos, fall, sos_cancel, ...).
CREATE TABLE device_event (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id     text NOT NULL REFERENCES device(device_id),
    msg_id        text NOT NULL,
    type          text NOT NULL,
    occurred_at   timestamptz NOT NULL,
    received_at   timestamptz NOT NULL,
    resident_id   bigint REFERENCES resident(id),
    lat           double precision,
    lon           double precision,
    payload       jsonb NOT NULL,
    UNIQUE (device_id, msg_id)
);
CREATE INDEX device_event_resident_idx ON device_event (resident_id, occurred_at DESC);

-- Every message that was not accepted, with its reason and (bounded) raw bytes.
CREATE TABLE quarantine (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at   timestamptz NOT NULL DEFAULT now(),
    topic         text NOT NULL,
    device_id     text,
    reason        text NOT NULL,
    detail        text NOT NULL,
    payload       bytea NOT NULL,
    payload_size  integer NOT NULL
);
CREATE INDEX quarantine_received_idx ON quarantine (received_at DESC);
CREATE INDEX quarantine_reason_idx ON quarantine (reason);

-- Bumped by every registry change: caches (the ingestor's) compare it instead of trusting a TTL.
CREATE SEQUENCE registry_version;

CREATE FUNCTION registry_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('registry_version');
    PERFORM pg_notify('eldercare_registry', TG_TABLE_NAME);
    RETURN NULL;
END $$;

CREATE TRIGGER device_changed AFTER INSERT OR UPDATE OF status, kind, expected_interval_s OR DELETE
    ON device FOR EACH STATEMENT EXECUTE FUNCTION registry_changed();
CREATE TRIGGER device_binding_changed AFTER INSERT OR UPDATE OR DELETE
    ON device_binding FOR EACH STATEMENT EXECUTE FUNCTION registry_changed();
CREATE TRIGGER broker_account_changed AFTER INSERT OR UPDATE OR DELETE
    ON broker_account FOR EACH STATEMENT EXECUTE FUNCTION registry_changed();
