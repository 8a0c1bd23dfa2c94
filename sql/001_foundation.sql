-- fleet foundation: devices and keys, position history, rejected frames.
-- Units are SI; times are timestamptz (UTC on the wire as ms since epoch).

CREATE EXTENSION IF NOT EXISTS timescaledb;

-- PostGIS where the server has it (fleet's queries work without it).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'postgis') THEN
        CREATE EXTENSION IF NOT EXISTS postgis;
    END IF;
END
$$;

CREATE TABLE devices (
    device      text PRIMARY KEY,
    operator    text NOT NULL,
    bus         text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT devices_ids_are_topic_safe
        CHECK (device ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' AND operator ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$')
);
CREATE INDEX devices_operator_idx ON devices (operator);

-- A device has one active key; a rotated key stays usable as 'retired' until
-- grace_until; a revoked key is refused at once.
CREATE TABLE device_keys (
    key_id       text PRIMARY KEY,
    device       text NOT NULL REFERENCES devices (device) ON DELETE CASCADE,
    secret       bytea NOT NULL,
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired', 'revoked')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    grace_until  timestamptz,
    revoked_at   timestamptz
);
CREATE UNIQUE INDEX device_keys_one_active_idx ON device_keys (device) WHERE status = 'active';

CREATE TABLE positions (
    time         timestamptz NOT NULL,
    device       text NOT NULL,
    seq          bigint NOT NULL,
    operator     text NOT NULL,
    bus          text NOT NULL,
    lat          double precision NOT NULL,
    lon          double precision NOT NULL,
    accuracy_m   real,
    speed_mps    real,
    heading_deg  real,
    altitude_m   real,
    satellites   smallint,
    hdop         real,
    ignition     boolean,
    door_open    boolean,
    passengers   smallint,
    fuel_pct     real,
    trip_id      text,
    source       text NOT NULL,
    key_id       text NOT NULL,
    received_at  timestamptz NOT NULL,
    -- (device, seq) makes a frame a duplicate; time is in the key because a
    -- hypertable's unique constraints must hold its partitioning column.
    CONSTRAINT positions_frame_key UNIQUE (device, seq, time)
);
SELECT create_hypertable('positions', 'time', chunk_time_interval => INTERVAL '1 day');
CREATE INDEX positions_bus_time_idx ON positions (bus, time DESC);

-- Nothing bad is dropped silently: every rejected message or frame is kept
-- with its raw bytes and a reason code (a fleet_schemas error code or an
-- ingest check name).
CREATE TABLE rejected_frames (
    id           bigint GENERATED ALWAYS AS IDENTITY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    topic        text NOT NULL,
    reason       text NOT NULL,
    detail       text NOT NULL,
    device       text,
    seq          bigint,
    raw          bytea NOT NULL,
    PRIMARY KEY (received_at, id)
);
SELECT create_hypertable('rejected_frames', 'received_at', chunk_time_interval => INTERVAL '1 day');
CREATE INDEX rejected_frames_reason_idx ON rejected_frames (reason, received_at DESC);
