"""Mosquitto's dynamic-security plugin: the client id each login must use and what it may touch.

Mosquitto's ``acl_file`` never checks SUBSCRIBE (``security_default.c``
returns success for it) and lets any login take any client id, so a device
could subscribe to ingest's ``$share`` group (and make the broker drop a
share of every device's frames) or connect as ``ingest-<host>`` and take over
its session. The dynamic-security plugin checks both: every subscribe is
denied unless a role grants it, and a client bound to a client id is refused
under any other one, before any session is taken over.

Passwords stay in Mosquitto's password file (``fleet_store.broker_accounts``):
the plugin defers a login it holds no password for to that file, which the
broker re-reads on SIGHUP, while the plugin reads its own file only at start
and takes changes through its ``$CONTROL/dynamic-security/v1`` API, which
accepts plain passwords only (the registry keeps hashes). So the plugin holds
no secret: its whole state is computed from the registry, written to its file
for the next start and, on a running broker, applied through the API as the
difference from what the broker reports.

Devices log in as ``<device>`` with client id ``agent-<device>`` (the agent's
default) and may publish only their frames and status topics; they may not
subscribe at all. An OwnTracks app logs in as its own user with client id
``owntracks-<device>`` and may publish only ``owntracks/<user>/<device>``
(not its ``/event`` or ``/waypoint`` subtopics, which nothing reads) and
receive only its own ``…/cmd``. The hand-written accounts
(``fleet-server``) are unbound and may do everything, including this API.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import msgspec
import paho.mqtt.client as mqtt

from fleet_schemas import frames_topic, status_topic
from fleet_schemas.owntracks import ROOT as OWNTRACKS_ROOT
from fleet_schemas.owntracks import owntracks_command_topic, owntracks_topic
from fleet_store.errors import BrokerAccountsError
from fleet_store.mqtt import connect_client

CONFIG_FILE = "dynamic-security.json"
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
SERVER_ROLE = "fleet-server"
API_TIMEOUT_S = 10.0

# Deny by default: a login the plugin does not know (a device added while the
# broker was down and not synced since) can do nothing rather than anything.
DEFAULT_ACCESS = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": True,
}


class Acl(msgspec.Struct, frozen=True):
    acltype: str
    topic: str
    allow: bool = True


class Role(msgspec.Struct, frozen=True):
    rolename: str
    acls: list[Acl] = []


class RoleRef(msgspec.Struct, frozen=True):
    rolename: str


class Client(msgspec.Struct, frozen=True, omit_defaults=True):
    username: str
    roles: list[RoleRef] = []
    clientid: str | None = None


class Config(msgspec.Struct, frozen=True):
    """The plugin's file, and the state its API reports."""

    default_access: dict[str, bool] = msgspec.field(name="defaultACLAccess", default_factory=dict)
    clients: list[Client] = []
    roles: list[Role] = []
    groups: list[dict[str, Any]] = []


def agent_client_id(device: str) -> str:
    """The client id a device must connect with: ``fleet-agent``'s default."""
    return f"agent-{device}"


def device_role(device: str) -> str:
    return f"device:{device}"


def _everything() -> list[Acl]:
    acls = [Acl(kind, "#") for kind in ("publishClientSend", "publishClientReceive", "subscribePattern")]
    for special in ("$CONTROL/dynamic-security/#", "$SYS/#"):
        acls += [Acl("publishClientReceive", special), Acl("subscribePattern", special)]
    return [
        *acls,
        Acl("publishClientSend", "$CONTROL/dynamic-security/#"),
        Acl("subscribePattern", "$share/#"),
    ]


def owntracks_client_id(device: str) -> str:
    """The client id an OwnTracks app must connect with (its Client ID setting)."""
    return f"owntracks-{device}"


def _owntracks_acls(user: str, device: str) -> list[Acl]:
    """Publish its location topic only; hear its own command topic and nothing else.

    Subscribing under ``owntracks/`` is granted, since the app subscribes to
    other phones (``owntracks/+/+``, ``…/event``, ``…/info``) on every connect
    and a refused SUBACK may make it reconnect over and over; but the broker
    delivers it nothing from there but its own ``…/cmd``. No ``$share/``
    filter matches ``owntracks/#``, so it cannot join ingest's share.
    """
    commands = owntracks_command_topic(user, device)
    return [
        Acl("publishClientSend", owntracks_topic(user, device)),
        Acl("subscribePattern", f"{OWNTRACKS_ROOT}/#"),
        Acl("publishClientReceive", commands),
    ]


def desired(
    services: Sequence[str], devices: Sequence[tuple[str, str]], trackers: Sequence[tuple[str, str]] = ()
) -> Config:
    """The plugin state for these hand-written accounts, (device, operator) and OwnTracks (user, device)."""
    roles = [Role(SERVER_ROLE, _everything())]
    clients = [Client(name, [RoleRef(SERVER_ROLE)]) for name in services]
    for device, operator in devices:
        roles.append(
            Role(
                device_role(device),
                [
                    Acl("publishClientSend", frames_topic(operator, device)),
                    Acl("publishClientSend", status_topic(operator, device)),
                ],
            )
        )
        clients.append(Client(device, [RoleRef(device_role(device))], agent_client_id(device)))
    for user, device in trackers:
        roles.append(Role(device_role(device), _owntracks_acls(user, device)))
        clients.append(Client(user, [RoleRef(device_role(device))], owntracks_client_id(device)))
    return Config(dict(DEFAULT_ACCESS), clients, roles)


def render(config: Config) -> str:
    return msgspec.json.format(msgspec.json.encode(config)).decode() + "\n"


def _role_key(role: Role) -> frozenset[tuple[str, str, bool]]:
    return frozenset((a.acltype, a.topic, a.allow) for a in role.acls)


def _client_key(client: Client) -> tuple[str | None, frozenset[str]]:
    return client.clientid or None, frozenset(r.rolename for r in client.roles)


def plan(current: Config, wanted: Config) -> list[dict[str, Any]]:
    """The API commands that turn ``current`` into ``wanted`` (empty when they agree).

    A role or client that differs is deleted and created again: the API has
    no single command that replaces either.
    """
    have_roles = {r.rolename: r for r in current.roles}
    want_roles = {r.rolename: r for r in wanted.roles}
    have_clients = {c.username: c for c in current.clients}
    want_clients = {c.username: c for c in wanted.clients}
    changed_roles = {
        name
        for name, role in want_roles.items()
        if name in have_roles and _role_key(have_roles[name]) != _role_key(role)
    }
    create_roles = [
        role for name, role in want_roles.items() if name not in have_roles or name in changed_roles
    ]
    delete_roles = sorted(set(have_roles) - set(want_roles) | changed_roles)
    create_clients = [
        client
        for name, client in want_clients.items()
        if name not in have_clients
        or _client_key(have_clients[name]) != _client_key(client)
        or any(r.rolename in changed_roles for r in client.roles)
    ]
    delete_clients = sorted(
        set(have_clients) - set(want_clients) | {c.username for c in create_clients} & set(have_clients)
    )
    commands: list[dict[str, Any]] = []
    if current.default_access != wanted.default_access:
        acls = [{"acltype": kind, "allow": allow} for kind, allow in wanted.default_access.items()]
        commands.append({"command": "setDefaultACLAccess", "acls": acls})
    commands += [{"command": "deleteClient", "username": name} for name in delete_clients]
    commands += [{"command": "deleteRole", "rolename": name} for name in delete_roles]
    commands += [{"command": "createRole", **msgspec.to_builtins(role)} for role in create_roles]
    commands += [{"command": "createClient", **msgspec.to_builtins(client)} for client in create_clients]
    return commands


class _Api:
    """Request/response over the plugin's control topic, one request at a time."""

    def __init__(self, mqtt_url: str) -> None:
        self._answer: dict[str, Any] | None = None
        self._arrived = threading.Event()
        try:
            self._client = connect_client(mqtt_url)
        except OSError as exc:
            raise BrokerAccountsError(f"cannot reach the broker to update its access rules: {exc}") from exc
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.subscribe(RESPONSE_TOPIC, qos=1)
        if not subscribed.wait(API_TIMEOUT_S):
            self.close()
            raise BrokerAccountsError("the broker did not answer a SUBSCRIBE to the dynamic-security API")

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        self._answer = json.loads(message.payload)
        self._arrived.set()

    def call(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run ``commands``; their responses, or BrokerAccountsError naming the first that failed."""
        self._arrived.clear()
        self._client.publish(CONTROL_TOPIC, json.dumps({"commands": commands}), qos=1)
        if not self._arrived.wait(API_TIMEOUT_S):
            raise BrokerAccountsError(
                "the broker did not answer on the dynamic-security API: is the plugin loaded"
                " and may this login use $CONTROL/dynamic-security/#?"
            )
        assert self._answer is not None
        responses: list[dict[str, Any]] = self._answer.get("responses", [])
        for response in responses:
            if response.get("error"):
                raise BrokerAccountsError(f"dynamic-security {response.get('command')}: {response['error']}")
        return responses

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def current(api: _Api) -> Config:
    """What the running broker's plugin holds."""
    answers = api.call(
        [
            {"command": "getDefaultACLAccess"},
            {"command": "listClients", "verbose": True},
            {"command": "listRoles", "verbose": True},
        ]
    )
    data = {a["command"]: a.get("data", {}) for a in answers}
    default = {a["acltype"]: bool(a["allow"]) for a in data["getDefaultACLAccess"].get("acls", [])}
    clients = msgspec.convert(data["listClients"].get("clients", []), list[Client])
    roles = msgspec.convert(data["listRoles"].get("roles", []), list[Role])
    return Config(default, clients, roles)


def apply(mqtt_url: str, wanted: Config) -> int:
    """Make the running broker's plugin hold ``wanted``; return how many commands that took."""
    api = _Api(mqtt_url)
    try:
        commands = plan(current(api), wanted)
        if commands:
            api.call(commands)
        return len(commands)
    finally:
        api.close()
