"""``POST /v1/passenger-tokens``: the booking platform gets a short-lived token for one traveller.

The traveller's app then follows that one trip or bus (websocket, ETAs)
without the booking platform's own token ever leaving its servers. The
passenger token's ``sub`` names the booking token that asked for it, so a
misuse traces back; revoking the booking token does not revoke the passenger
tokens it issued (revoke those by their jti). The trip or bus is not checked
against the feed: a token for a trip that never runs reads nothing.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import post
from litestar.params import JSONBody

from fleet_serve.auth import MAX_TTL_S, SECURITY, ClaimsDep, issue_token, require
from fleet_serve.errors import ApiError, error_responses
from fleet_serve.services import ServicesDep
from fleet_store.errors import ConfigError

Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")]


class PassengerTokenRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One of ``trip_id`` and ``bus``; ``ttl_s`` up to a day."""

    operator: Identifier
    ttl_s: Annotated[int, msgspec.Meta(ge=1, le=MAX_TTL_S["passenger"])]
    trip_id: Identifier | None = None
    bus: Identifier | None = None


class PassengerToken(msgspec.Struct, frozen=True):
    token: str
    jti: str
    operator: str
    trip_id: str | None
    bus: str | None
    expires_at_ms: int


@post(
    "/v1/passenger-tokens",
    tags=["tokens"],
    security=SECURITY,
    status_code=201,
    responses=error_responses(400, 401, 403),
)
async def passenger_token(
    data: JSONBody[PassengerTokenRequest], claims: ClaimsDep, services: ServicesDep
) -> PassengerToken:
    """A passenger token for one trip or one bus of an operator of the booking token."""
    require(claims, "booking", operator=data.operator)
    if (data.trip_id is None) == (data.bus is None):
        raise ApiError("give one of trip_id and bus", code="invalid_request")
    try:
        token, issued = issue_token(
            services.settings,
            role="passenger",
            operators=(data.operator,),
            ttl_s=data.ttl_s,
            sub=f"{claims.sub} via {claims.jti}",
            trip_id=data.trip_id,
            bus=data.bus,
        )
    except ConfigError as exc:  # this node holds only public keys
        raise ApiError(exc.message, code="cannot_sign", status=503) from None
    return PassengerToken(token, issued.jti, data.operator, issued.trip_id, issued.bus, issued.exp * 1000)


ROUTES = [passenger_token]
