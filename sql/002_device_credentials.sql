-- Device credentials: key secrets sealed at rest, broker password hashes,
-- revocable devices, and change notifications for the ingest key caches.
--
-- A key secret is stored as nonce || AES-256-GCM ciphertext under a
-- key-encryption key (KEK) that never enters the database
-- (FLEET_KEY_ENCRYPTION_KEY); kek_id names that KEK so a wrong one fails
-- with a clear error. A device's broker login is its device id; only
-- Mosquitto's own PBKDF2-SHA512 hash of its password is kept.

-- 001 stored secrets in clear and no broker hash; nothing could add devices
-- then, so there is nothing to convert. Refuse rather than guess.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM device_keys) OR EXISTS (SELECT 1 FROM devices) THEN
        RAISE EXCEPTION 'devices or device_keys hold rows from before sealed secrets; '
            'delete them and add the devices again with `fleet devices add`';
    END IF;
END
$$;

ALTER TABLE devices
    ADD COLUMN status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    ADD COLUMN revoked_at timestamptz,
    ADD COLUMN mqtt_password_hash text NOT NULL,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now(),
    ADD CONSTRAINT devices_bus_is_topic_safe CHECK (bus ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    ADD CONSTRAINT devices_revoked_has_time CHECK ((status = 'revoked') = (revoked_at IS NOT NULL)),
    ADD CONSTRAINT devices_mosquitto_hash CHECK (mqtt_password_hash LIKE '$7$%');

ALTER TABLE device_keys
    DROP COLUMN secret,
    ADD COLUMN sealed_secret bytea NOT NULL,
    ADD COLUMN kek_id text NOT NULL,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now(),
    ADD CONSTRAINT device_keys_retired_has_grace CHECK (status <> 'retired' OR grace_until IS NOT NULL),
    ADD CONSTRAINT device_keys_revoked_has_time CHECK ((status = 'revoked') = (revoked_at IS NOT NULL));

CREATE INDEX device_keys_device_idx ON device_keys (device);
-- The caches poll for rows changed since their last look.
CREATE INDEX device_keys_updated_at_idx ON device_keys (updated_at);
CREATE INDEX devices_updated_at_idx ON devices (updated_at);

CREATE FUNCTION fleet_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER devices_touch BEFORE UPDATE ON devices
    FOR EACH ROW EXECUTE FUNCTION fleet_touch_updated_at();
CREATE TRIGGER device_keys_touch BEFORE UPDATE ON device_keys
    FOR EACH ROW EXECUTE FUNCTION fleet_touch_updated_at();

-- Every key or device change is announced at commit, so the caches of all
-- ingest processes refresh that row at once instead of at their next poll.
CREATE FUNCTION fleet_notify_key_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('fleet_keys', CASE WHEN TG_OP = 'DELETE' THEN OLD.key_id ELSE NEW.key_id END);
    RETURN NULL;
END
$$;

CREATE FUNCTION fleet_notify_device_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('fleet_devices', CASE WHEN TG_OP = 'DELETE' THEN OLD.device ELSE NEW.device END);
    RETURN NULL;
END
$$;

CREATE TRIGGER device_keys_notify AFTER INSERT OR UPDATE OR DELETE ON device_keys
    FOR EACH ROW EXECUTE FUNCTION fleet_notify_key_change();
CREATE TRIGGER devices_notify AFTER INSERT OR UPDATE OR DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION fleet_notify_device_change();
