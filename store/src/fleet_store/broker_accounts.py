"""Mosquitto's password file and dynamic-security file, written whole from the device registry, then reloaded.

A device logs in with its device id and a random password; the registry
keeps only Mosquitto 2's own hash of it (``$7$``: PBKDF2-SHA512, 101
iterations, base64 salt and hash), so the files can be rebuilt at any time
and the database never holds a broker password. What each login may do (a
device: publish its own ``fleet/v1/<operator>/<device>/frames`` and
``…/status`` with client id ``agent-<device>``, nothing else; an OwnTracks
app logs in as its own user and publishes only ``owntracks/<user>/<device>``)
is the dynamic-security plugin's job (``fleet_store.dynsec``).

Accounts that are not devices (the server's ``fleet-server``) are the
operator's own: their password lines above the generated part are kept as
they are, they may do everything, and a device may not take one's name.
Everything below the marker line is generated.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import signal
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from fleet_store import dynsec, stackfile
from fleet_store.errors import BrokerAccountsError
from fleet_store.settings import Settings

HASH_ITERATIONS = 101
SALT_BYTES = 12
HASH_BYTES = 64
PASSWORD_FILE = "passwords"  # noqa: S105 - a file name
PID_FILE = "mosquitto.pid"
MARKER = "# fleet devices: everything below is generated from the database by `fleet devices`; edits are lost"


class BrokerLogin(msgspec.Struct, frozen=True):
    """One active device's broker account."""

    device: str
    operator: str
    password_hash: str
    owntracks_user: str | None = None
    """an OwnTracks app's login (publishing to owntracks/<user>/<device>); None for an onboard unit"""

    @property
    def username(self) -> str:
        """The broker user name: the device id, or an OwnTracks app's own."""
        return self.owntracks_user or self.device


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    """Mosquitto 2's ``$7$`` password hash, as ``mosquitto_passwd`` writes it."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, HASH_ITERATIONS, HASH_BYTES)
    return f"$7${HASH_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def broker_dir(settings: Settings) -> Path | None:
    """The broker folder to write: FLEET_MOSQUITTO_DIR, else the local stack's, else None."""
    if settings.mosquitto_dir is not None:
        return settings.mosquitto_dir
    state = None if settings.external else stackfile.read_state(settings.state_dir)
    return None if state is None else Path(state.data_dir) / "mosquitto"


def _hand_written(text: str) -> list[str]:
    """Lines above the marker: what the operator wrote (or the file before fleet first wrote it)."""
    lines = text.splitlines()
    return lines[: lines.index(MARKER)] if MARKER in lines else lines


def _service_passwords(existing: str) -> list[str]:
    """``user:hash`` lines of the hand-written accounts."""
    return [line for line in _hand_written(existing) if ":" in line and not line.startswith("#")]


def render_passwords(existing: str, logins: Sequence[BrokerLogin]) -> str:
    """The password file: the service accounts kept from ``existing``, then one line per device."""
    services = _service_passwords(existing)
    taken = {line.split(":", 1)[0] for line in services} & {login.username for login in logins}
    if taken:
        raise BrokerAccountsError(
            f"device {', '.join(sorted(taken))} has the name of a broker account that is not a device;"
            " revoke the device (device ids are broker user names)"
        )
    lines = [*services, MARKER]
    lines.extend(f"{login.username}:{login.password_hash}" for login in logins)
    return "\n".join(lines) + "\n"


def access_rules(existing_passwords: str, logins: Sequence[BrokerLogin]) -> dynsec.Config:
    """The dynamic-security state for the hand-written accounts of ``existing_passwords`` and ``logins``."""
    services = [line.split(":", 1)[0] for line in _service_passwords(existing_passwords)]
    return dynsec.desired(
        services,
        [(login.device, login.operator) for login in logins if login.owntracks_user is None],
        [(login.owntracks_user, login.device) for login in logins if login.owntracks_user is not None],
    )


def write_accounts(directory: Path, logins: Sequence[BrokerLogin]) -> dynsec.Config:
    """Rewrite ``passwords`` and the dynamic-security file in ``directory`` from ``logins``, each atomically.

    Returns the access rules written, for a running broker to be given too
    (its plugin reads its file only when it starts).
    """
    passwords = directory / PASSWORD_FILE
    try:
        old_passwords = passwords.read_text() if passwords.exists() else ""
        new_passwords = render_passwords(old_passwords, logins)
        rules = access_rules(old_passwords, logins)
        _replace(directory / dynsec.CONFIG_FILE, dynsec.render(rules))
        _replace(passwords, new_passwords)
        return rules
    except OSError as exc:
        raise BrokerAccountsError(f"cannot write the broker's accounts in {directory}: {exc}") from exc


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``.

    The new file keeps the old one's owner and mode (0600 and the folder's
    owner for a new file), so the broker's user can still read it.
    """
    reference = path if path.exists() else path.parent
    info = reference.stat()
    mode = info.st_mode & 0o777 if path.exists() else 0o600
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        if (info.st_uid, info.st_gid) != (os.geteuid(), os.getegid()):
            os.chown(temporary, info.st_uid, info.st_gid)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def reload_broker(directory: Path) -> int | None:
    """Send SIGHUP to the broker whose pid is in ``directory/mosquitto.pid``; None if none runs there.

    A stale pid file may name another process by now: where /proc tells the
    process's name, only a ``mosquitto`` is signalled.
    """
    try:
        pid = int((directory / PID_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    with contextlib.suppress(FileNotFoundError):
        if Path(f"/proc/{pid}/comm").read_text().strip() != "mosquitto":
            return None
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return None
    except PermissionError as exc:
        raise BrokerAccountsError(
            f"not allowed to signal Mosquitto (pid {pid}): run `kill -HUP {pid}` as its user or root"
        ) from exc
    return pid


def sync(
    directory: Path, logins: Sequence[BrokerLogin], mqtt_url: Callable[[], str]
) -> tuple[int | None, int]:
    """Write the broker's files from ``logins`` and make the broker running there take them.

    Returns the broker's pid (None if none runs from ``directory``) and the
    number of access-rule changes applied through the plugin's API as the
    login of ``mqtt_url()`` (asked for only when a broker runs).
    """
    rules = write_accounts(directory, logins)
    pid = reload_broker(directory)
    return pid, (0 if pid is None else dynsec.apply(mqtt_url(), rules))
