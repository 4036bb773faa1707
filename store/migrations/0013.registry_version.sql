-- The registry's version, bumped in the changing transaction itself (the sequence of 0001 was not:
-- nextval is visible before the commit, so an ingestor could load the registry between the two,
-- miss a device registered a moment ago, cache that as the new version and quarantine the device's
-- first messages — an SOS among them — as "unknown device"). An UPDATE becomes visible exactly
-- with the rows it describes; registry changes are rare, so the one row it locks costs nothing.
-- depends: 0012.reading_time_index

CREATE TABLE registry_change (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version       bigint NOT NULL
);
INSERT INTO registry_change (version)
SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM registry_version;

CREATE OR REPLACE FUNCTION registry_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE registry_change SET version = version + 1;
    PERFORM pg_notify('eldercare_registry', TG_TABLE_NAME);
    RETURN NULL;
END $$;

DROP SEQUENCE registry_version;
