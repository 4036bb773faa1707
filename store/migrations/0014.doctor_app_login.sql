-- Doctors' (and duty desks') app logins on the broker: each reads only its own alerts topic and
-- publishes only to its own acks topic (devices/broker_auth.py renders the ACL). Stored as the
-- device logins are: Mosquitto's PBKDF2-SHA512 hash, never the password.
-- depends: 0013.registry_version

ALTER TABLE broker_account DROP CONSTRAINT broker_account_role_check;
ALTER TABLE broker_account ADD CONSTRAINT broker_account_role_check
    CHECK (role IN ('device', 'service', 'doctor'));
ALTER TABLE broker_account ADD COLUMN doctor_id bigint REFERENCES doctor(id);
ALTER TABLE broker_account ADD CONSTRAINT broker_account_doctor_check
    CHECK ((role = 'doctor') = (doctor_id IS NOT NULL));
CREATE UNIQUE INDEX broker_account_doctor_idx ON broker_account (doctor_id)
    WHERE doctor_id IS NOT NULL;

-- A doctor who leaves (active = false) loses the app login at the next broker sync: the change is
-- a registry change, which `broker sync --watch` follows.
CREATE TRIGGER doctor_active_changed AFTER UPDATE OF active ON doctor
    FOR EACH STATEMENT EXECUTE FUNCTION registry_changed();
