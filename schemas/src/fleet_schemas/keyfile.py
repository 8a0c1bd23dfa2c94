"""Writing a device's key file, the one file the server side hands to the agent.

The server (``fleet devices add --key-file``), the simulator and the tests
write it; the agent reads it (``fleet_agent.keys``). Kept here, with the other
contracts, so a server install needs no agent code to provision a device.
"""

from __future__ import annotations

import os
from pathlib import Path

from fleet_schemas.envelope import DeviceKey


def write_key_file(path: Path, key: DeviceKey) -> None:
    """Write ``key`` as a 0600 key file atomically (for provisioning and rotation)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f'key_id = "{key.key_id}"\nsecret_hex = "{key.secret.hex()}"\n')
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
