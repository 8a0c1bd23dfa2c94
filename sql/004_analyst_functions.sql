-- Helpers for analysts' queries (see README, "Querying history").

-- Great-circle distance in metres between two WGS84 points (haversine on the
-- mean Earth radius; within 0.5 % of the ellipsoid, enough for fleet
-- distances, and needs no PostGIS).
CREATE FUNCTION fleet_distance_m(lat1 double precision, lon1 double precision,
                                 lat2 double precision, lon2 double precision)
    RETURNS double precision
    -- STRICT: a NULL point (the first row of a lag() window) gives NULL, not a distance.
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN 2 * 6371008.8 * asin(least(1.0, sqrt(
        sin(radians(lat2 - lat1) / 2) ^ 2
        + cos(radians(lat1)) * cos(radians(lat2)) * sin(radians(lon2 - lon1) / 2) ^ 2)));
