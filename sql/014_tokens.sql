-- Revoked API tokens (fleet_serve.auth), by their jti.
--
-- This table is the record; Redis keeps a copy (fleet:tokens:revoked:{jti},
-- expiring with the token) that every `fleet serve` node reads on each
-- request, so a revocation takes effect on all nodes at once without a
-- PostgreSQL query per request. When Redis loses its copy (flushed,
-- restarted without persistence) the marker key fleet:tokens:revocations-loaded
-- is gone too, and the next node that checks a token reloads the copy from
-- here before answering (fleet_store.tokens). A row is useless once the token
-- has expired (expired tokens are refused anyway); `fleet db maintain`
-- deletes those rows.
CREATE TABLE revoked_tokens (
    jti         text PRIMARY KEY,
    revoked_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    CONSTRAINT revoked_tokens_jti_not_empty CHECK (jti <> '')
);

CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at);
