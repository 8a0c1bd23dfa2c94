-- Each operator's geofences (fleet_processing.geofences.Fence), as imported
-- from GeoJSON by `fleet geofences import`.
--
-- The drawing is kept as given (geometry and properties, JSONB) and ingest
-- rebuilds the fence from it with the same parser that validated it, so a
-- circle's radius or a corridor's buffer is stored once, in its properties.
-- The columns beside it are what a listing or a report reads without parsing.
-- An operator's fence version is the count and a digest of (fence_id,
-- updated_at) over its rows: a write that changes nothing keeps updated_at
-- (fleet_store.geofences), so ingest rebuilds an operator's index only when a
-- fence was added, changed or deleted.
CREATE TABLE geofences (
    operator         text NOT NULL,
    fence_id         text NOT NULL,
    name             text NOT NULL,
    kind             text NOT NULL,
    geometry         jsonb NOT NULL,
    properties       jsonb NOT NULL DEFAULT '{}'::jsonb,
    dwell_s          double precision,
    speed_limit_mps  double precision,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (operator, fence_id),
    CONSTRAINT geofences_kind CHECK (kind IN ('station', 'depot', 'restricted', 'speed_zone', 'border')),
    CONSTRAINT geofences_geometry_is_an_object CHECK (jsonb_typeof(geometry) = 'object'),
    CONSTRAINT geofences_properties_is_an_object CHECK (jsonb_typeof(properties) = 'object'),
    CONSTRAINT geofences_dwell_positive CHECK (dwell_s > 0),
    CONSTRAINT geofences_speed_limit_positive CHECK (speed_limit_mps > 0)
);
