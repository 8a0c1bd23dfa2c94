-- GTFS feeds, one version per import. Every row of a version carries its
-- feed_id, so a new import is written beside the active one (COPY, no
-- locks on it) and switched to by updating two gtfs_feeds rows in one
-- transaction; the previous version stays queryable until it is dropped
-- (DELETE of its gtfs_feeds row, which cascades).
CREATE TABLE gtfs_feeds (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    operator     text NOT NULL,
    imported_at  timestamptz NOT NULL DEFAULT now(),
    source       text NOT NULL,
    sha256       text NOT NULL,
    counts       jsonb NOT NULL,
    report       jsonb NOT NULL,
    state        text NOT NULL DEFAULT 'loaded' CHECK (state IN ('loaded', 'active', 'inactive'))
);
CREATE UNIQUE INDEX gtfs_feeds_one_active ON gtfs_feeds (operator) WHERE state = 'active';
CREATE INDEX gtfs_feeds_operator_idx ON gtfs_feeds (operator, id);

CREATE TABLE gtfs_agencies (
    feed_id    bigint NOT NULL REFERENCES gtfs_feeds (id) ON DELETE CASCADE,
    agency_id  text NOT NULL,
    name       text NOT NULL,
    url        text NOT NULL,
    timezone   text NOT NULL,
    lang       text,
    phone      text,
    PRIMARY KEY (feed_id, agency_id)
);

CREATE TABLE gtfs_routes (
    feed_id     bigint NOT NULL REFERENCES gtfs_feeds (id) ON DELETE CASCADE,
    route_id    text NOT NULL,
    agency_id   text NOT NULL,
    route_type  integer NOT NULL,
    short_name  text,
    long_name   text,
    color       text,
    text_color  text,
    PRIMARY KEY (feed_id, route_id)
);

CREATE TABLE gtfs_stops (
    feed_id         bigint NOT NULL REFERENCES gtfs_feeds (id) ON DELETE CASCADE,
    stop_id         text NOT NULL,
    lat             double precision NOT NULL,
    lon             double precision NOT NULL,
    name            text,
    code            text,
    location_type   smallint NOT NULL,
    parent_station  text,
    timezone        text,
    PRIMARY KEY (feed_id, stop_id)
);

-- One row per shape, its points as arrays: shapes are read whole, never by point.
CREATE TABLE gtfs_shapes (
    feed_id    bigint NOT NULL REFERENCES gtfs_feeds (id) ON DELETE CASCADE,
    shape_id   text NOT NULL,
    lats       double precision[] NOT NULL,
    lons       double precision[] NOT NULL,
    dist_m     double precision[] NOT NULL,
    generated  boolean NOT NULL,
    PRIMARY KEY (feed_id, shape_id)
);

CREATE TABLE gtfs_trips (
    feed_id       bigint NOT NULL REFERENCES gtfs_feeds (id) ON DELETE CASCADE,
    trip_id       text NOT NULL,
    route_id      text NOT NULL,
    service_id    text NOT NULL,
    shape_id      text NOT NULL,
    direction_id  smallint,
    block_id      text,
    headsign      text,
    PRIMARY KEY (feed_id, trip_id)
);

-- Times in seconds from the service day's origin (noon minus 12 h, agency time zone).
CREATE TABLE gtfs_stop_times (
    feed_id        bigint NOT NULL REFERENCES gtfs_feeds (id) ON DELETE CASCADE,
    trip_id        text NOT NULL,
    stop_sequence  integer NOT NULL,
    stop_id        text NOT NULL,
    arrival_s      integer NOT NULL,
    departure_s    integer NOT NULL,
    dist_m         double precision NOT NULL,
    timepoint      boolean NOT NULL,
    interpolated   boolean NOT NULL,
    pickup_type    smallint NOT NULL,
    drop_off_type  smallint NOT NULL,
    PRIMARY KEY (feed_id, trip_id, stop_sequence)
);

CREATE TABLE gtfs_calendars (
    feed_id     bigint NOT NULL REFERENCES gtfs_feeds (id) ON DELETE CASCADE,
    service_id  text NOT NULL,
    days        boolean[] NOT NULL CHECK (cardinality(days) = 7),  -- Monday first
    start_date  date NOT NULL,
    end_date    date NOT NULL,
    PRIMARY KEY (feed_id, service_id)
);

CREATE TABLE gtfs_calendar_dates (
    feed_id         bigint NOT NULL REFERENCES gtfs_feeds (id) ON DELETE CASCADE,
    service_id      text NOT NULL,
    date            date NOT NULL,
    exception_type  smallint NOT NULL CHECK (exception_type IN (1, 2)),
    PRIMARY KEY (feed_id, service_id, date)
);

CREATE TABLE gtfs_frequencies (
    feed_id      bigint NOT NULL REFERENCES gtfs_feeds (id) ON DELETE CASCADE,
    trip_id      text NOT NULL,
    start_s      integer NOT NULL,
    end_s        integer NOT NULL,
    headway_s    integer NOT NULL,
    exact_times  boolean NOT NULL,
    PRIMARY KEY (feed_id, trip_id, start_s)
);
