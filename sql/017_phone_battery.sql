-- A phone's battery with each of its fixes (Traccar Client's and OsmAnd's
-- batt and charge, the JSON apps' battery.level and is_charging, OwnTracks'
-- batt and bs): a manager sees a driver's phone running down before it goes
-- silent. NULL for onboard units and for apps that do not say. Nullable, with
-- no default and no constraint (the frame's type holds the range, 0-100, as
-- for fuel_pct), so TimescaleDB adds them to a compressed hypertable as is.
ALTER TABLE positions
    ADD COLUMN battery_pct real,
    ADD COLUMN charging boolean;
