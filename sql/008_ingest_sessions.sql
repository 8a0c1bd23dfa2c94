-- The persistent broker sessions ingest instances hold. Mosquitto does not
-- list its sessions or what each has queued, so every `fleet ingest` records
-- its own here (client id, share group, session expiry) and refreshes
-- last_seen every 30 s; `fleet ingest --forget` deletes its row with its
-- session. A row whose last_seen is old is a session the broker still fills
-- for an instance that is gone: forget it, or bring the instance back.
CREATE TABLE ingest_sessions (
    client_id        text PRIMARY KEY,
    share_group      text NOT NULL,
    host             text NOT NULL,
    session_expiry_s integer NOT NULL,
    first_seen       timestamptz NOT NULL DEFAULT now(),
    last_seen        timestamptz NOT NULL DEFAULT now()
);
