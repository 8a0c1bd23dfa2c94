-- Makes a batch's commit idempotent when its outcome is unknown: if the
-- connection drops during COMMIT (a database restart), ingest retries the
-- batch under the same id and finds it already committed, instead of storing
-- its rejected frames a second time. Rows older than a day are deleted by
-- `fleet db maintain`.
CREATE TABLE ingest_batches (
    id            uuid PRIMARY KEY,
    committed_at  timestamptz NOT NULL DEFAULT now()
);
