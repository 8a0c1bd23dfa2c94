-- OwnTracks apps (devices.kind = 'owntracks', sql/015): the broker login the
-- app publishes under, and the secret it encrypts its payloads with.
--
-- The app publishes to owntracks/<user>/<device> with <user> its broker login
-- (its default topic, owntracks/%u/%d); NULL means the device id. A broker
-- login names one account in Mosquitto's password file, so no two devices
-- may have the same one, whatever their kind (the unique index below).
--
-- The encryption secret is kept as the device keys are (sql/002): nonce ||
-- AES-256-GCM ciphertext under the key-encryption key named by kek_id, bound
-- to 'owntracks:<device>' (fleet_store.secretbox). Ingest needs the secret
-- itself to open the app's payloads, so no hash would do.
ALTER TABLE devices
    ADD COLUMN owntracks_user text,
    ADD COLUMN owntracks_sealed_key bytea,
    ADD COLUMN owntracks_kek_id text,
    ADD CONSTRAINT devices_owntracks_user_only_for_owntracks
        CHECK (kind = 'owntracks' OR owntracks_user IS NULL),
    ADD CONSTRAINT devices_owntracks_user_is_topic_safe
        CHECK (owntracks_user ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    ADD CONSTRAINT devices_owntracks_key_only_for_owntracks
        CHECK (kind = 'owntracks' OR owntracks_sealed_key IS NULL),
    ADD CONSTRAINT devices_owntracks_key_has_kek
        CHECK ((owntracks_sealed_key IS NULL) = (owntracks_kek_id IS NULL));

CREATE UNIQUE INDEX devices_broker_login_idx ON devices ((COALESCE(owntracks_user, device)));
