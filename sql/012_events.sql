-- What the detectors found (fleet_schemas.events.Event), and the per-route corridor thresholds.
--
-- events: a hypertable on the event's time, one row per Event.key (operator,
-- bus, kind, subject, time, cause_time, cause_seq): the same frames give the
-- same keys, so an event re-sent after a redelivery or a retried batch is
-- refused by the unique key (fleet_store.events writes with ON CONFLICT DO
-- NOTHING). The key holds time, as a hypertable's unique keys must. Chunks of
-- a week (events are far sparser than positions); `fleet db maintain` drops
-- chunks past FLEET_RETENTION_EVENTS_DAYS. They are not compressed: with a
-- unique key TimescaleDB compresses only when every key column is in
-- segmentby/orderby, and reprocess writes into old ranges.
CREATE TABLE events (
    operator     text NOT NULL,
    bus          text NOT NULL,
    kind         text NOT NULL,
    time         timestamptz NOT NULL,
    cause_time   timestamptz NOT NULL,
    cause_seq    bigint NOT NULL,
    subject      text NOT NULL DEFAULT '',
    trip_id      text,
    start_date   text,
    start_time   text,
    route_id     text,
    lat          double precision,
    lon          double precision,
    details      jsonb NOT NULL DEFAULT '{}'::jsonb,
    stored_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_key UNIQUE (operator, bus, kind, subject, time, cause_time, cause_seq),
    CONSTRAINT events_details_is_an_object CHECK (jsonb_typeof(details) = 'object')
);
SELECT create_hypertable('events', 'time', chunk_time_interval => INTERVAL '7 days');
-- newest first per operator (the event log), and per bus
CREATE INDEX events_operator_time_idx ON events (operator, time DESC);
CREATE INDEX events_bus_time_idx ON events (operator, bus, time DESC);

-- Corridor deviation thresholds of one route, overriding the detector's
-- defaults (fleet_processing.detection.DetectorPolicy.deviation_by_route):
-- a bus further than deviation_leave_m from its trip's line is leaving its
-- corridor, and back under deviation_return_m (hysteresis, so below it).
CREATE TABLE route_policies (
    operator            text NOT NULL,
    route_id            text NOT NULL,
    deviation_leave_m   double precision NOT NULL,
    deviation_return_m  double precision NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (operator, route_id),
    CONSTRAINT route_policies_hysteresis
        CHECK (deviation_return_m > 0 AND deviation_return_m < deviation_leave_m)
);
