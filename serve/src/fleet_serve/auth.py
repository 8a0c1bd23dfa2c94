"""Signed API tokens (JWT) and what each role may read.

A token is a JWT signed by the first key of ``FLEET_TOKEN_KEYS``, HS256 or
EdDSA (Ed25519) by the key's kind; its ``kid`` header names the key, and every
configured key verifies, so keys rotate (README, "Tokens and roles"). The key
decides the algorithm, never the token's header (no ``alg`` confusion, no
``none``, no HS256 token "signed" with an Ed25519 public key). Verification
(PyJWT) requires ``exp``, ``iat``, ``iss`` (the configured issuer), ``jti``,
``role`` and ``operators``, with a few seconds of leeway for clocks apart;
then the claims are decoded into :class:`Claims` (msgspec: a bad role or a
passenger without trip or bus is refused), and the ``jti`` is checked
against the revocations (:mod:`fleet_store.tokens`: in memory, kept current
from Redis; a Redis round trip only while that copy is not live).

Roles, and what :func:`require` lets through:

* ``manager``: everything of its operators (admitted wherever another role is);
* ``booking``: ETAs and positions of its operators' trips, and issues
  passenger tokens;
* ``passenger``: one trip or one bus of one operator, short-lived;
* ``analyst``: the history of its operators.

Tokens never appear in logs or error messages: errors say what is wrong, not
with which token.
"""

from __future__ import annotations

import secrets
import time
from functools import cache, lru_cache
from typing import Literal, TypeAlias, get_args

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.enums import ScopeType
from litestar.exceptions import WebSocketException
from litestar.openapi.spec import SecurityScheme
from litestar.types import Scope
from redis.exceptions import RedisError

from fleet_serve.errors import ApiError, Forbidden, Unauthorized
from fleet_serve.params import raw_header
from fleet_serve.services import Services, ServicesDep
from fleet_serve.settings import KeyKind, ServeSettings, TokenKey
from fleet_store.errors import ConfigError
from fleet_store.outages import POSTGRES_UNAVAILABLE

_REVOCATIONS_UNREADABLE: tuple[type[Exception], ...] = (*POSTGRES_UNAVAILABLE, RedisError)

Role = Literal["manager", "booking", "passenger", "analyst"]
ROLES: tuple[Role, ...] = get_args(Role)

ALGORITHMS: dict[KeyKind, str] = {"hs256": "HS256", "ed25519": "EdDSA", "ed25519-public": "EdDSA"}
LEEWAY_S = 5
"""clock difference tolerated between the issuer and a serve node"""

MAX_TTL_S: dict[Role, int] = {
    "manager": 30 * 86_400,
    "booking": 90 * 86_400,
    "passenger": 86_400,
    "analyst": 30 * 86_400,
}
"""the longest lifetime a token of each role may be issued with (rotation waits this long)"""

REQUIRED = ["exp", "iat", "iss", "jti", "role", "operators"]


class Claims(msgspec.Struct, frozen=True, kw_only=True):
    """What a verified token says: who, which role, which operators (a passenger: which trip or bus)."""

    sub: str
    role: Role
    operators: tuple[str, ...]
    trip_id: str | None = None
    bus: str | None = None
    exp: int
    iat: int
    jti: str
    kid: str

    def __post_init__(self) -> None:
        if not self.operators or any(not op for op in self.operators):
            raise ValueError("operators must name at least one operator")
        if self.role == "passenger":
            if (self.trip_id is None) == (self.bus is None):
                raise ValueError("a passenger token names one trip_id or one bus")
            if len(self.operators) != 1:
                raise ValueError("a passenger token names one operator")


class _Payload(msgspec.Struct, frozen=True, kw_only=True):
    """The JWT body as signed (Claims without ``kid``, which travels in the header)."""

    iss: str
    sub: str
    role: Role
    operators: tuple[str, ...]
    exp: int
    iat: int
    jti: str
    trip_id: str | None = None
    bus: str | None = None


@cache
def _verifying_key(key: TokenKey) -> bytes | Ed25519PublicKey:
    if key.kind == "hs256":
        return key.secret
    if key.kind == "ed25519":
        return Ed25519PrivateKey.from_private_bytes(key.secret).public_key()
    return Ed25519PublicKey.from_public_bytes(key.secret)


def _signing_key(key: TokenKey) -> bytes | Ed25519PrivateKey:
    if key.kind == "hs256":
        return key.secret
    if key.kind == "ed25519":
        return Ed25519PrivateKey.from_private_bytes(key.secret)
    raise ConfigError(
        f"token key {key.kid!r} is a public key: it verifies only; make a secret or private key first"
        " in FLEET_TOKEN_KEYS to sign"
    )


def issue_token(
    settings: ServeSettings,
    *,
    role: Role,
    operators: tuple[str, ...],
    ttl_s: int,
    sub: str,
    trip_id: str | None = None,
    bus: str | None = None,
    now_s: int | None = None,
) -> tuple[str, Claims]:
    """Sign a token with the first key; returns it and its claims. Raises ConfigError or ValueError."""
    if not settings.token_keys:
        raise ConfigError("FLEET_TOKEN_KEYS is empty: set kid=base64secret (32 bytes or more) to sign tokens")
    if not 0 < ttl_s <= MAX_TTL_S[role]:
        raise ValueError(f"a {role} token lives 1 s to {MAX_TTL_S[role]} s, not {ttl_s} s")
    key = settings.token_keys[0]
    signing_key = _signing_key(key)
    iat = int(time.time()) if now_s is None else now_s
    claims = Claims(
        sub=sub,
        role=role,
        operators=operators,
        trip_id=trip_id,
        bus=bus,
        iat=iat,
        exp=iat + ttl_s,
        jti=secrets.token_hex(16),  # hex: never starts with '-', which a command line reads as an option
        kid=key.kid,
    )
    payload = _Payload(
        iss=settings.issuer,
        sub=sub,
        role=role,
        operators=operators,
        exp=claims.exp,
        iat=iat,
        jti=claims.jti,
        trip_id=trip_id,
        bus=bus,
    )
    body = {k: v for k, v in msgspec.to_builtins(payload).items() if v is not None}
    token = jwt.encode(body, signing_key, algorithm=ALGORITHMS[key.kind], headers={"kid": key.kid})
    return token, claims


VERIFIED_CACHE = 8_192
"""tokens whose signature and claims were checked, kept so a repeated token costs a lookup, not ~60 µs"""


def decode_token(settings: ServeSettings, token: str, now_s: float | None = None) -> Claims:
    """Check signature, key, times, issuer and claims (not revocation); raises Unauthorized.

    A token verified before is not checked again but for its expiry (at
    ``now_s``, default now): its bytes, hence its signature and claims, are
    the same, and the keys of a process do not change.
    """
    claims = _verified(settings, token)
    now = time.time() if now_s is None else now_s
    if now >= claims.exp + LEEWAY_S:
        raise Unauthorized("the token has expired", code="token_expired")
    return claims


@lru_cache(maxsize=VERIFIED_CACHE)
def _verified(settings: ServeSettings, token: str) -> Claims:
    """What PyJWT and the claims' types accept; only successes are cached (lru_cache keeps no exception)."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.DecodeError:
        raise Unauthorized("the token is not a JWT", code="token_malformed") from None
    key = next((k for k in settings.token_keys if k.kid == kid), None)
    if key is None:
        raise Unauthorized("the token's key id is not known here", code="token_unknown_key")
    try:
        body = jwt.decode(
            token,
            _verifying_key(key),
            algorithms=[ALGORITHMS[key.kind]],
            issuer=settings.issuer,
            leeway=LEEWAY_S,
            options={"require": REQUIRED, "verify_aud": False},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the token has expired", code="token_expired") from None
    except jwt.ImmatureSignatureError:
        raise Unauthorized("the token is not valid yet", code="token_not_yet_valid") from None
    except jwt.InvalidIssuerError:
        raise Unauthorized("the token was issued by someone else", code="token_wrong_issuer") from None
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthorized(f"the token lacks the {exc.claim!r} claim", code="token_missing_claim") from None
    except jwt.InvalidSignatureError:
        raise Unauthorized("the token's signature does not verify", code="token_bad_signature") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("the token is malformed", code="token_malformed") from None
    try:
        payload = msgspec.convert(body, _Payload)
        return Claims(
            sub=payload.sub,
            role=payload.role,
            operators=payload.operators,
            trip_id=payload.trip_id,
            bus=payload.bus,
            exp=payload.exp,
            iat=payload.iat,
            jti=payload.jti,
            kid=key.kid,
        )
    except (msgspec.ValidationError, ValueError) as exc:
        raise Unauthorized(f"the token's claims are invalid: {exc}", code="token_invalid_claims") from None


async def verify_token(services: Services, token: str) -> Claims:
    """:func:`decode_token`, then refuse a revoked jti (401); 503 when Redis or PostgreSQL cannot say."""
    claims = decode_token(services.settings, token)
    try:
        revoked = await services.revocations.is_revoked(claims.jti)
    except _REVOCATIONS_UNREADABLE as exc:
        raise ApiError(
            "token revocations cannot be checked now", code="auth_unavailable", status=503
        ) from exc
    if revoked:
        raise Unauthorized("the token has been revoked", code="token_revoked")
    return claims


def bearer_token(scope: Scope) -> str:
    """The token of ``Authorization: Bearer …``, else of ``?token=`` (browsers' websockets); 401 if none."""
    header = raw_header(scope, b"authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'", code="token_missing")
        return value.strip()
    query = ASGIConnection(scope).query_params.get("token")
    if not query:
        raise Unauthorized("a token is required (Authorization: Bearer, or ?token=)", code="token_missing")
    return str(query)


async def request_claims(scope: Scope, services: ServicesDep) -> Claims:
    """The dependency behind :data:`ClaimsDep`; read from the scope, so websocket handlers take it too.

    On a websocket a refusal closes with 4000 + its HTTP status (4401, 4503)
    and ``code: message`` as the reason (Litestar would say 4500 otherwise).
    """
    try:
        return await verify_token(services, bearer_token(scope))
    except ApiError as exc:
        if scope["type"] != ScopeType.WEBSOCKET:
            raise
        raise WebSocketException(detail=close_reason(exc), code=4000 + exc.status) from None


def close_reason(exc: ApiError) -> str:
    """A websocket close reason for a refusal: ``code: message``, cut to the 123 bytes a close frame holds."""
    return f"{exc.code}: {exc.message}".encode()[:123].decode(errors="ignore")


ClaimsDep: TypeAlias = NamedDependency[Claims]
"""How a handler asks for the verified claims: ``claims: ClaimsDep``."""

SECURITY_SCHEME = SecurityScheme(
    type="http",
    scheme="bearer",
    bearer_format="JWT",
    description="a token from `fleet tokens issue` or POST /v1/passenger-tokens (or ?token=)",
)
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]
"""what a handler taking ClaimsDep declares (``security=SECURITY``) so the OpenAPI says it"""


def require(
    claims: Claims,
    *roles: Role,
    operator: str | None = None,
    trip_id: str | None = None,
    bus: str | None = None,
) -> None:
    """Raise Forbidden unless the role is among ``roles`` (or manager) and the claims cover the rest.

    A passenger passes only when ``trip_id`` or ``bus`` is given and one of
    them is the token's own (an answer that names neither is not for them).
    """
    if claims.role not in roles and claims.role != "manager":
        wanted = ", ".join(sorted({*roles, "manager"}))
        raise Forbidden(f"a {claims.role} token cannot read this (needs {wanted})", code="wrong_role")
    if operator is not None and operator not in claims.operators:
        raise Forbidden(f"the token does not cover operator {operator!r}", code="other_operator")
    if claims.role == "passenger":
        own_trip = trip_id is not None and trip_id == claims.trip_id
        own_bus = bus is not None and bus == claims.bus
        if not (own_trip or own_bus):
            raise Forbidden("a passenger token reads only its own trip or bus", code="other_trip")
