-- What the fleet drove, stop by stop, and the travel times the ETA model learns from.
--
-- stop_visits: one row per bus, trip instance and stop (fleet_schemas.trips.StopVisit).
-- A plain table, not a hypertable: its identity (operator, bus, trip instance,
-- stop_sequence) holds no time column, and a hypertable's unique keys must, so a
-- visit re-sent after a redelivery could not be refused there. Rows past the
-- positions' retention are deleted by `fleet db maintain` (index on arrived).
CREATE TABLE stop_visits (
    id                   bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    operator             text NOT NULL,
    bus                  text NOT NULL,
    feed_id              bigint NOT NULL,
    trip_id              text NOT NULL,
    start_date           text NOT NULL,
    start_time           text NOT NULL,
    stop_sequence        integer NOT NULL,
    stop_id              text NOT NULL,
    arrived              timestamptz NOT NULL,
    departed             timestamptz NOT NULL,
    scheduled_arrival    timestamptz NOT NULL,
    scheduled_departure  timestamptz NOT NULL,
    interpolated         boolean NOT NULL DEFAULT false,
    PRIMARY KEY (operator, bus, trip_id, start_date, start_time, stop_sequence),
    CHECK (departed >= arrived)
);
CREATE INDEX stop_visits_arrived_idx ON stop_visits (arrived);

-- Visits stored but not yet rolled up: written in the same transaction as the
-- visit, deleted by the refresh that aggregates it (see fleet_store.history).
CREATE TABLE stop_visits_pending (
    visit_id bigint PRIMARY KEY
);

-- Hours since Monday 00:00 UTC, as fleet_processing.eta.hour_of_week counts them.
CREATE FUNCTION fleet_hour_of_week(t timestamptz) RETURNS smallint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ((floor(extract(epoch FROM t) / 3600)::bigint + 72) % 168)::smallint;

-- Travel time from one stop's departure to the next stop's arrival, by hour of
-- week of the departure: count, mean and M2 (Welford), and the latest one.
CREATE TABLE segment_times (
    operator      text NOT NULL,
    from_stop_id  text NOT NULL,
    to_stop_id    text NOT NULL,
    hour_of_week  smallint NOT NULL CHECK (hour_of_week BETWEEN 0 AND 167),
    n             bigint NOT NULL CHECK (n > 0),
    mean_s        double precision NOT NULL,
    m2            double precision NOT NULL,
    last_s        double precision NOT NULL,
    last_at       timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (operator, from_stop_id, to_stop_id, hour_of_week)
);

-- Dwell (departure minus arrival) by stop and hour of week of the arrival.
CREATE TABLE dwell_times (
    operator      text NOT NULL,
    stop_id       text NOT NULL,
    hour_of_week  smallint NOT NULL CHECK (hour_of_week BETWEEN 0 AND 167),
    n             bigint NOT NULL CHECK (n > 0),
    mean_s        double precision NOT NULL,
    m2            double precision NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (operator, stop_id, hour_of_week)
);
