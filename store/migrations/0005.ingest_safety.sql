-- Emergencies stored despite repairable faults keep what was wrong and their raw bytes; an index for
-- the quarantine's per-device cap (ingest/maintenance.py).
-- depends: 0004.access

-- [{"code": "clock_skew", "detail": "..."}, ...] (ingest/contract.py: Repair); NULL when all was well.
ALTER TABLE device_event ADD COLUMN ingest_problems jsonb;
-- The message as it arrived, kept when something had to be repaired or left out.
ALTER TABLE device_event ADD COLUMN raw_payload bytea;

CREATE INDEX quarantine_device_idx ON quarantine (device_id, id);
