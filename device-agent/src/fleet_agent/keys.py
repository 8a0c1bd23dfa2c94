"""The device's signing key, read from a file only its owner can read, reloaded when it changes.

The key file is TOML::

    key_id = "unit-0042-k2"
    secret_hex = "64 hex digits"

A key rotation replaces the file (write a new file and rename it over the old
one, as ``fleet_schemas.keyfile.write_key_file`` does); the next batch is
signed with the new key without a restart. A file that group or others may
read is refused, as ssh refuses a private key.
"""

from __future__ import annotations

import logging
import stat
import tomllib
from pathlib import Path

from fleet_agent.errors import KeyFileError
from fleet_schemas import DeviceKey

log = logging.getLogger("fleet_agent.keys")


def read_key_file(path: Path, device: str) -> DeviceKey:
    """The key in ``path`` for ``device``, or KeyFileError saying what to fix."""
    try:
        info = path.stat()
    except OSError as exc:
        raise KeyFileError(f"key file {path} cannot be read: {exc.strerror}") from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"key file {path} is readable by others (mode {stat.filemode(info.st_mode)}):"
            f" run chmod 600 {path}"
        )
    try:
        data = tomllib.loads(path.read_text())
        key_id = data["key_id"]
        secret = bytes.fromhex(data["secret_hex"])
        return DeviceKey(key_id=str(key_id), device=device, secret=secret)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise KeyFileError(
            f"key file {path} is not 'key_id = \"…\"' and 'secret_hex = \"…\"': {exc}"
        ) from exc


class KeyRing:
    """The current key, re-read when the file changes; a bad new file keeps the last good key."""

    def __init__(self, path: Path, device: str) -> None:
        self._path = path
        self._device = device
        self._key = read_key_file(path, device)
        self._stamp = self._file_stamp()
        self.reload_failures = 0

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            info = self._path.stat()
        except OSError:
            return None
        return info.st_mtime_ns, info.st_ino, info.st_size

    def current(self) -> DeviceKey:
        """The key to sign with now; picks up a rotated file on the next call after it changed."""
        stamp = self._file_stamp()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                key = read_key_file(self._path, self._device)
            except KeyFileError as exc:
                self.reload_failures += 1
                log.error(
                    "key file changed but cannot be used; still signing with %s: %s",
                    self._key.key_id,
                    exc.message,
                )
            else:
                if key.key_id != self._key.key_id:
                    log.info("signing key rotated from %s to %s", self._key.key_id, key.key_id)
                self._key = key
        return self._key
