-- Access hardening: device ownership, platform scopes and OAuth2 tokens, richer audit rows, and the
-- application's database role (no UPDATE/DELETE/TRUNCATE on audit_log, owns nothing).
-- depends: 0004.access

-- The institution a device belongs to: its administrators may manage it, nobody else's may.
-- NULL: managed by system administrators only (e.g. stock not yet handed out).
ALTER TABLE device ADD COLUMN institution_id bigint REFERENCES institution(id);
UPDATE device d SET institution_id = r.institution_id
FROM device_binding b JOIN resident r ON r.id = b.resident_id
WHERE b.device_id = d.device_id AND b.unbound_at IS NULL AND r.institution_id IS NOT NULL;
CREATE INDEX device_institution_idx ON device (institution_id);

-- Platforms can be disabled (all their keys stop working at once); keys carry explicit scopes.
ALTER TABLE platform_client ADD COLUMN disabled_at timestamptz;
UPDATE api_token SET scopes = '{read:residents,read:readings,read:alerts}'
WHERE kind = 'api_key' AND scopes = '{read}';
-- Short-lived bearer tokens from the OAuth2 client-credentials grant (POST /api/v1/auth/token).
ALTER TABLE api_token DROP CONSTRAINT api_token_kind_check;
ALTER TABLE api_token ADD CONSTRAINT api_token_kind_check
    CHECK (kind IN ('session', 'api_key', 'access_token'));
CREATE INDEX api_token_client_idx ON api_token (client_id) WHERE client_id IS NOT NULL;

-- A doctor's login sees the doctor's residents, never a whole institution.
ALTER TABLE app_user ADD CONSTRAINT app_user_doctor_without_institution
    CHECK (role <> 'doctor' OR institution_id IS NULL) NOT VALID;

-- Audit: which residents a list returned (one row, not one per resident), and the institutions the
-- actor acted for, so that an institution's administrators can read their own trail.
ALTER TABLE audit_log ADD COLUMN resident_ids bigint[];
ALTER TABLE audit_log ADD COLUMN actor_institutions bigint[];
CREATE INDEX audit_log_resident_ids_idx ON audit_log USING gin (resident_ids);
CREATE INDEX audit_log_actor_institutions_idx ON audit_log USING gin (actor_institutions);
CREATE INDEX audit_log_at_idx ON audit_log USING brin (at);

-- Failed logins only matter within the rate-limit window; old rows are deleted as new ones come.
CREATE INDEX login_failure_at_idx ON login_failure (at);

-- The role the processes run as in production (docker-compose.yml logs in as a member of it):
-- read and write the data, but only INSERT and SELECT on audit_log, and no ownership, so it can
-- neither edit the trail nor disable its triggers. Created here when the migrating role may create
-- roles; otherwise create it first (docs/operations.md) and this grants it the privileges.
DO $$
DECLARE
    yoyo text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'eldercare_app') THEN
        BEGIN
            CREATE ROLE eldercare_app NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;  -- created concurrently
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'cannot create role eldercare_app: grant it the privileges by hand';
                RETURN;
        END;
    END IF;
    EXECUTE 'GRANT USAGE ON SCHEMA public TO eldercare_app';
    EXECUTE 'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO eldercare_app';
    EXECUTE 'GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO eldercare_app';
    EXECUTE 'REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM eldercare_app';
    -- yoyo's own bookkeeping is the migrating role's business.
    FOR yoyo IN SELECT tablename FROM pg_tables
                WHERE schemaname = 'public' AND (tablename LIKE '\_yoyo%' OR tablename = 'yoyo_lock')
    LOOP
        EXECUTE format('REVOKE ALL ON %I FROM eldercare_app', yoyo);
    END LOOP;
    -- Tables of later migrations (created by the same migrating role) get the same grants; a later
    -- append-only table must revoke UPDATE and DELETE itself, as above.
    EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA public
             GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO eldercare_app';
    EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA public
             GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO eldercare_app';
END $$;
