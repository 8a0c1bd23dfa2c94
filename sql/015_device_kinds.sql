-- Device kinds, and the tokens a driver's phone authenticates with.
--
-- 'onboard' is a fleet-agent unit (signed frames over MQTT, its own broker
-- login); 'phone' is a driver's phone running Traccar Client, OsmAnd or an app
-- written against fleet's HTTP ingest (no broker login: it authenticates with
-- a device token); 'owntracks' is the OwnTracks app over MQTT (its own broker
-- login and topic). Every existing device is an onboard unit.
ALTER TABLE devices
    ADD COLUMN kind text NOT NULL DEFAULT 'onboard'
        CONSTRAINT devices_kind_known CHECK (kind IN ('onboard', 'phone', 'owntracks')),
    ALTER COLUMN mqtt_password_hash DROP NOT NULL,
    ADD CONSTRAINT devices_broker_login_unless_phone
        CHECK (kind = 'phone' OR mqtt_password_hash IS NOT NULL);

-- A phone's token is shown once when issued; only its argon2id hash is kept.
-- The phone sends "DEVICE:SECRET" (fleet_store.device_tokens), so the server
-- finds the device's hash without scanning. A device has at most one active
-- token; a revoked one keeps its row (and its id, which positions.key_id of
-- the frames it authenticated names).
CREATE TABLE device_tokens (
    token_id    text PRIMARY KEY,
    device      text NOT NULL REFERENCES devices (device) ON DELETE CASCADE,
    token_hash  text NOT NULL CONSTRAINT device_tokens_argon2id CHECK (token_hash LIKE '$argon2id$%'),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT device_tokens_revoked_has_time CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);
CREATE UNIQUE INDEX device_tokens_one_active_idx ON device_tokens (device) WHERE status = 'active';
CREATE INDEX device_tokens_updated_at_idx ON device_tokens (updated_at);

CREATE TRIGGER device_tokens_touch BEFORE UPDATE ON device_tokens
    FOR EACH ROW EXECUTE FUNCTION fleet_touch_updated_at();

-- Token changes are announced at commit (the device's id as payload), so the
-- HTTP ingest's cache of verified tokens forgets a revoked one at once.
CREATE FUNCTION fleet_notify_device_token_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('fleet_device_tokens', CASE WHEN TG_OP = 'DELETE' THEN OLD.device ELSE NEW.device END);
    RETURN NULL;
END
$$;

CREATE TRIGGER device_tokens_notify AFTER INSERT OR UPDATE OR DELETE ON device_tokens
    FOR EACH ROW EXECUTE FUNCTION fleet_notify_device_token_change();
