-- NEWS2 "air or oxygen": whether the resident breathes supplemental oxygen, as the doctor records it.
-- depends: 0004.access

-- NULL: not known (NEWS2 lists the parameter as missing); true: on supplemental oxygen (e.g. a home
-- concentrator worn continuously); false: breathes room air (no oxygen at home). A standing record,
-- not a measurement: NEWS2 findings name it, with who set it and when.
ALTER TABLE resident ADD COLUMN on_oxygen boolean;
ALTER TABLE resident ADD COLUMN on_oxygen_set_by text;
ALTER TABLE resident ADD COLUMN on_oxygen_set_at timestamptz;
