-- Access to health data: people and platforms who log in, their tokens, and the audit trail.
-- depends: 0003.care

CREATE TABLE app_user (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      text NOT NULL UNIQUE,
    password_hash text NOT NULL,          -- argon2id
    role          text NOT NULL CHECK (role IN ('doctor', 'duty_desk', 'institution_admin', 'system_admin')),
    doctor_id     bigint REFERENCES doctor(id),
    institution_id bigint REFERENCES institution(id),
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (role <> 'doctor' OR doctor_id IS NOT NULL),
    CHECK (role NOT IN ('duty_desk', 'institution_admin') OR institution_id IS NOT NULL)
);

-- Platforms (regional health platforms, a 12349 service platform): read-only sync of the residents
-- of the institutions they are authorised for.
CREATE TABLE platform_client (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    institution_ids bigint[] NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Session tokens (people) and API keys (platforms); only a SHA-256 of the secret is kept.
CREATE TABLE api_token (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash    bytea NOT NULL UNIQUE,
    kind          text NOT NULL CHECK (kind IN ('session', 'api_key')),
    user_id       bigint REFERENCES app_user(id),
    client_id     bigint REFERENCES platform_client(id),
    scopes        text[] NOT NULL DEFAULT '{read}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz,
    CHECK ((user_id IS NULL) <> (client_id IS NULL))
);

CREATE TABLE login_failure (
    username      text NOT NULL,
    address       text NOT NULL,
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failure_recent_idx ON login_failure (username, at DESC);

-- Every read or change of a resident's health data. Append-only: the database refuses edits.
CREATE TABLE audit_log (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    actor         text NOT NULL,          -- user:<id>:<username> or platform:<id>:<name>
    action        text NOT NULL,          -- e.g. read.resident, read.readings, alert.acknowledge
    resident_id   bigint,
    resource      text NOT NULL,          -- the path or object
    address       text,                   -- where the request came from
    outcome       text NOT NULL DEFAULT 'ok',
    detail        jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_resident_idx ON audit_log (resident_id, at DESC);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, at DESC);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Who may see a resident (one definition, used by every query of the API):
-- a doctor: residents with an active contract, or living in a care home whose cooperation agreement
-- is with the doctor's institution; a duty desk / institution admin / platform: residents of their
-- institutions, or contracted to a doctor of them; a system admin: everyone.
CREATE FUNCTION may_see_resident(
    p_resident bigint, p_doctor bigint, p_doctor_institution bigint, p_institutions bigint[],
    p_everyone boolean
) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT p_everyone
        OR EXISTS (
            SELECT 1 FROM contract c
            WHERE c.resident_id = p_resident AND c.doctor_id = p_doctor
              AND c.valid_from <= now() AND (c.valid_to IS NULL OR c.valid_to > now()))
        OR EXISTS (
            SELECT 1 FROM resident r JOIN cooperation_agreement a ON a.care_home_id = r.institution_id
            WHERE r.id = p_resident AND a.medical_institution_id = p_doctor_institution
              AND a.valid_from <= now() AND (a.valid_to IS NULL OR a.valid_to > now()))
        OR EXISTS (
            SELECT 1 FROM resident r WHERE r.id = p_resident AND r.institution_id = ANY(p_institutions))
        OR EXISTS (
            SELECT 1 FROM contract c JOIN doctor d ON d.id = c.doctor_id
            WHERE c.resident_id = p_resident AND d.institution_id = ANY(p_institutions)
              AND c.valid_from <= now() AND (c.valid_to IS NULL OR c.valid_to > now()))
$$;
