"""Device key secrets sealed at rest with AES-256-GCM under a key-encryption key (KEK).

HMAC verification needs the secret itself, so the server cannot keep only a
hash of it as it does for passwords. It keeps ``nonce || ciphertext`` and the
id of the KEK that sealed it; the KEK itself stays out of the database
(``FLEET_KEY_ENCRYPTION_KEY``), so a copy of the database or of its backups
holds no usable key. Each secret is bound to its key id (associated data), so
a sealed secret copied onto another key's row does not open.

On a laptop with the local stack and no ``FLEET_KEY_ENCRYPTION_KEY``, a KEK is
generated once into ``$FLEET_STATE_DIR/key-encryption-key`` (0600). With
existing servers the KEK must be given.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import secrets
import stat
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fleet_store.errors import ConfigError, KeyEncryptionError
from fleet_store.settings import Settings

log = logging.getLogger("fleet_store.secretbox")

KEK_BYTES = 32
NONCE_BYTES = 12
KEK_FILE = "key-encryption-key"
_ID_CONTEXT = b"fleet key-encryption-key id\x00"


class Sealed(msgspec.Struct, frozen=True):
    """A sealed secret as stored: which KEK sealed it, and nonce || ciphertext."""

    kek_id: str
    box: bytes


class KeyEncryptionKey:
    """The 32-byte AES key that seals device key secrets; its repr shows only its id."""

    __slots__ = ("_aead", "kek_id")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEK_BYTES:
            raise ConfigError(f"a key-encryption key is {KEK_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        self.kek_id = hashlib.sha256(_ID_CONTEXT + key).hexdigest()[:16]

    @classmethod
    def from_base64(cls, text: str, source: str) -> KeyEncryptionKey:
        """Decode a KEK written as base64; ``source`` names where it came from in errors."""
        try:
            key = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigError(f"{source} is not base64: {exc}") from exc
        if len(key) != KEK_BYTES:
            raise ConfigError(
                f"{source} decodes to {len(key)} bytes; it must be base64 of {KEK_BYTES} random bytes"
                " (`openssl rand -base64 32`)"
            )
        return cls(key)

    def __repr__(self) -> str:
        return f"KeyEncryptionKey(kek_id={self.kek_id!r})"

    def seal(self, secret: bytes, context: str) -> Sealed:
        """Encrypt ``secret`` bound to ``context`` (the key id)."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return Sealed(self.kek_id, nonce + self._aead.encrypt(nonce, secret, context.encode()))

    def open(self, sealed: Sealed, context: str) -> bytes:
        """The secret sealed by :meth:`seal` with the same context, or KeyEncryptionError."""
        if sealed.kek_id != self.kek_id:
            raise KeyEncryptionError(
                f"the secret of {context!r} was sealed under key-encryption key {sealed.kek_id},"
                f" but FLEET_KEY_ENCRYPTION_KEY is {self.kek_id}: set the key that was in use"
                " when the key was issued"
            )
        nonce, ciphertext = sealed.box[:NONCE_BYTES], sealed.box[NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, ciphertext, context.encode())
        except InvalidTag as exc:
            raise KeyEncryptionError(
                f"the sealed secret of {context!r} does not open: it was altered or moved from another key"
            ) from exc


def load_key_encryption_key(settings: Settings) -> KeyEncryptionKey:
    """The KEK from FLEET_KEY_ENCRYPTION_KEY, else (local stack only) the one kept in the state folder."""
    if settings.key_encryption_key:
        return KeyEncryptionKey.from_base64(settings.key_encryption_key, "FLEET_KEY_ENCRYPTION_KEY")
    if settings.external:
        raise ConfigError(
            "FLEET_KEY_ENCRYPTION_KEY is not set: with existing servers, give the key that seals"
            " device key secrets (base64 of 32 random bytes, `openssl rand -base64 32`),"
            " the same on every server process, and keep it out of the database's backups"
        )
    return _local_key(settings.state_dir / KEK_FILE)


def _local_key(path: Path) -> KeyEncryptionKey:
    """Read the laptop's KEK file, creating it (0600) on first use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{path} is readable by others (mode {stat.filemode(mode)}): run chmod 600 {path}"
            ) from None
        return KeyEncryptionKey.from_base64(path.read_text(), str(path))
    key = secrets.token_bytes(KEK_BYTES)
    with os.fdopen(fd, "w") as out:
        out.write(base64.b64encode(key).decode() + "\n")
    kek = KeyEncryptionKey(key)
    log.warning(
        "generated a key-encryption key %s in %s for the local stack; device keys sealed under it"
        " cannot be read without that file (set FLEET_KEY_ENCRYPTION_KEY to use another)",
        kek.kek_id,
        path,
    )
    return kek
