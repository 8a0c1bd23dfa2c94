"""Key files: refused when others can read them, rotated without a restart."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleet_agent.errors import KeyFileError
from fleet_agent.keys import KeyRing, read_key_file
from fleet_schemas import DeviceKey
from fleet_schemas.keyfile import write_key_file

KEY = DeviceKey("unit-1-k1", "unit-1", os.urandom(32))


def test_key_file_round_trips(tmp_path: Path) -> None:
    write_key_file(tmp_path / "key.toml", KEY)
    assert read_key_file(tmp_path / "key.toml", "unit-1") == KEY
    assert (tmp_path / "key.toml").stat().st_mode & 0o777 == 0o600


def test_world_readable_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key.toml"
    write_key_file(path, KEY)
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        read_key_file(path, "unit-1")


def test_missing_or_malformed_key_file_says_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot be read"):
        read_key_file(tmp_path / "absent.toml", "unit-1")
    bad = tmp_path / "bad.toml"
    bad.write_text('key_id = "k"\nsecret_hex = "zz"\n')
    bad.chmod(0o600)
    with pytest.raises(KeyFileError, match="secret_hex"):
        read_key_file(bad, "unit-1")


def test_rotated_key_is_used_without_restart_and_a_broken_file_keeps_the_last_key(tmp_path: Path) -> None:
    path = tmp_path / "key.toml"
    write_key_file(path, KEY)
    ring = KeyRing(path, "unit-1")
    assert ring.current() == KEY
    rotated = DeviceKey("unit-1-k2", "unit-1", os.urandom(32))
    write_key_file(path, rotated)
    assert ring.current() == rotated
    path.write_text("garbage")
    assert ring.current() == rotated
    assert ring.reload_failures == 1
