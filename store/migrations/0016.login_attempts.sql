-- Login attempts are reserved before the password is checked (api/access.py): a row of
-- login_failure is inserted under advisory locks when the limits allow one more try, and deleted
-- again when the password was right. It needs an id to be deleted by, and an index for the
-- per-address count (the per-account and per-account-and-address counts use (username, at)).
-- depends: 0013.registry_version

ALTER TABLE login_failure ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY;
CREATE INDEX login_failure_address_idx ON login_failure (address, at DESC);
