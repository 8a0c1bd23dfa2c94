-- Each rejection's fingerprint, once: ingest claims it here in the same
-- transaction as the rejected_frames row, so a rejection seen again (a
-- redelivery after a crash between commit and ack, a device sending the same
-- bad bytes twice) is not stored twice, even while the first one's transaction
-- is still committing (the unique index makes the second claim wait for it,
-- which a NOT EXISTS probe of the hypertable did not). Rows older than the
-- window are deleted by `fleet db maintain`.
CREATE TABLE rejection_fingerprints (
    fingerprint  bytea PRIMARY KEY,
    seen_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rejection_fingerprints_seen_at_idx ON rejection_fingerprints (seen_at);
INSERT INTO rejection_fingerprints (fingerprint, seen_at)
SELECT fingerprint, max(received_at) FROM rejected_frames
WHERE fingerprint IS NOT NULL AND received_at > now() - INTERVAL '8 days'
GROUP BY fingerprint;
