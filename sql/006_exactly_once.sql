-- Exactly once per (device, seq), rejections once per delivered message, and
-- rollup marks that a refresh cannot lose.

-- A frame is identified by (device, seq) whatever its fix time. positions is a
-- hypertable on time, and a hypertable's unique keys must hold its time column,
-- so (device, seq, time) is all it can enforce: the same sequence re-sent with
-- another fix time would be a second row there. This plain table holds each
-- identity once; ingest inserts into it first and stores in positions only the
-- frames whose identity was new. Rows leave it with the positions they stand
-- for (`fleet db maintain`, by the BRIN-indexed time).
CREATE TABLE frame_ids (
    device  text NOT NULL,
    seq     bigint NOT NULL,
    time    timestamptz NOT NULL,
    PRIMARY KEY (device, seq)
);
CREATE INDEX frame_ids_time_idx ON frame_ids USING brin (time);
INSERT INTO frame_ids (device, seq, time)
SELECT DISTINCT ON (device, seq) device, seq, time FROM positions ORDER BY device, seq, time;

-- Rejections: a fingerprint per delivered message or frame (SHA-256 of topic,
-- reason, sequence and raw bytes) makes a redelivery recognisable; raw bytes
-- are kept up to a bounded prefix, with the full length and hash.
ALTER TABLE rejected_frames
    ADD COLUMN raw_length integer,
    ADD COLUMN raw_sha256 bytea,
    ADD COLUMN fingerprint bytea;
UPDATE rejected_frames SET raw_length = length(raw), raw_sha256 = sha256(raw);
ALTER TABLE rejected_frames
    ALTER COLUMN raw_length SET NOT NULL,
    ALTER COLUMN raw_sha256 SET NOT NULL;
CREATE INDEX rejected_frames_fingerprint_idx ON rejected_frames (fingerprint, received_at DESC);

-- Rollup marks: one row per batch and minute, inserted and never updated. A
-- refresh deletes exactly the marks its snapshot sees and aggregates from that
-- same snapshot; a batch committing meanwhile leaves a mark the refresh did not
-- see, so its minute is refreshed again. (With one row per minute and
-- ON CONFLICT DO NOTHING, such a batch found the old mark, added none, and the
-- refresh then deleted that mark: the minute stayed stale for good.)
ALTER TABLE rollup_pending DROP CONSTRAINT rollup_pending_pkey;
ALTER TABLE rollup_pending ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY;
CREATE INDEX rollup_pending_bucket_idx ON rollup_pending (bucket);
