-- 1-minute rollups of positions, kept a year, refreshed incrementally by the
-- application (`fleet db maintain`): continuous aggregates exist only under
-- the Timescale license, and this works under both.

-- Milliseconds since the epoch, as on the wire, to timestamptz (for analysts' queries).
CREATE FUNCTION fleet_ms(ms bigint) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN to_timestamp(ms / 1000.0);

CREATE TABLE positions_1m (
    bucket       timestamptz NOT NULL,
    device       text NOT NULL,
    operator     text NOT NULL,
    bus          text NOT NULL,
    frames       integer NOT NULL,
    first_time   timestamptz NOT NULL,
    last_time    timestamptz NOT NULL,
    lat_avg      double precision NOT NULL,
    lon_avg      double precision NOT NULL,
    last_lat     double precision NOT NULL,
    last_lon     double precision NOT NULL,
    speed_avg    real,
    speed_max    real,
    PRIMARY KEY (device, bucket)
);
SELECT create_hypertable('positions_1m', 'bucket', chunk_time_interval => INTERVAL '30 days');
CREATE INDEX positions_1m_bus_idx ON positions_1m (operator, bus, bucket DESC);

-- Minutes that received frames since their rollup was last computed. Ingest
-- adds them in the same transaction as the frames, so a late frame (an
-- outbox drained after an outage) still reaches its rollup.
CREATE TABLE rollup_pending (
    bucket timestamptz PRIMARY KEY
);
