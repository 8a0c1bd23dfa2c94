"""``fleet tokens``: issue the API tokens of ``fleet serve`` and revoke them.

Signing uses the first key of ``FLEET_TOKEN_KEYS`` (the same variable every
serve node verifies with). A token is printed once, on stdout, so a script
captures it; nothing else (logs, errors) ever shows it.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import get_args

import asyncpg
import click
import msgspec
import redis.asyncio as aioredis

from fleet_cli.database import run_on_database
from fleet_cli.events_cli import check_operator, utc
from fleet_cli.params import Duration
from fleet_serve.auth import MAX_TTL_S, Role, decode_token, issue_token
from fleet_serve.errors import Unauthorized
from fleet_serve.settings import load_serve_settings
from fleet_store import stackfile, tokens
from fleet_store.settings import Settings

LONGEST_TTL_S = max(MAX_TTL_S.values())
"""how long a revocation by jti alone is kept: no token of any role lives longer"""


class Issued(msgspec.Struct, frozen=True):
    token: str
    jti: str
    role: str
    operators: tuple[str, ...]
    sub: str
    trip_id: str | None
    bus: str | None
    issued_at_ms: int
    expires_at_ms: int


@click.group(name="tokens")
def tokens_group() -> None:
    """API tokens of fleet serve: roles manager, booking, passenger, analyst.

    \b
    Example:
      fleet tokens issue --role booking --operator sogral --ttl 30d --sub booking-platform
      fleet tokens revoke 9f2c41d07be85a3361c0e4f5a2b8d917
    """


@tokens_group.command(name="issue")
@click.option("--role", type=click.Choice(get_args(Role)), required=True, help="what the token may read")
@click.option("--operator", "operators", multiple=True, required=True, help="operator covered (repeatable)")
@click.option("--trip", "trip_id", default=None, help="the one trip a passenger token follows")
@click.option("--bus", default=None, help="the one bus a passenger token follows")
@click.option(
    "--ttl",
    type=Duration(),
    required=True,
    help="lifetime (90s, 30m, 12h, 30d); at most "
    + ", ".join(f"{role} {ttl // 86_400} d" for role, ttl in MAX_TTL_S.items()),
)
@click.option("--sub", default=None, help="who holds it (default: ROLE@OPERATOR)")
@click.option("--json", "as_json", is_flag=True, help="print token, jti and expiry as one JSON object")
def issue(
    role: Role,
    operators: tuple[str, ...],
    trip_id: str | None,
    bus: str | None,
    ttl: timedelta,
    sub: str | None,
    as_json: bool,
) -> None:
    """Sign a token and print it once (stdout); its jti and expiry go to stderr.

    A passenger token names one operator and one --trip or one --bus.

    \b
    Example:
      fleet tokens issue --role manager --operator sogral --ttl 12h --sub amina
      fleet tokens issue --role passenger --operator sogral --trip T42 --ttl 6h --json
      TOKEN=$(fleet tokens issue --role analyst --operator sogral --operator tahkout --ttl 7d)
    """
    if trip_id is not None and bus is not None:
        raise click.UsageError("give --trip or --bus, not both")
    if role != "passenger" and (trip_id is not None or bus is not None):
        raise click.UsageError("--trip and --bus are for passenger tokens")
    for operator in operators:
        check_operator(operator)
    try:
        token, claims = issue_token(
            load_serve_settings(),
            role=role,
            operators=operators,
            ttl_s=int(ttl.total_seconds()),
            sub=sub or f"{role}@{operators[0]}",
            trip_id=trip_id,
            bus=bus,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        issued = Issued(
            token,
            claims.jti,
            claims.role,
            claims.operators,
            claims.sub,
            claims.trip_id,
            claims.bus,
            claims.iat * 1000,
            claims.exp * 1000,
        )
        click.echo(msgspec.json.encode(issued).decode())
        return
    click.echo(token)
    click.echo(f"jti {claims.jti}, key {claims.kid}, expires {utc(claims.exp * 1000)}", err=True)


@tokens_group.command(name="revoke")
@click.argument("jti", required=False)
@click.option("--token", default=None, help="the token itself (its jti and expiry are read from it)")
@click.pass_obj
def revoke(settings: Settings, jti: str | None, token: str | None) -> None:
    """Refuse a token from now on, on every serve node (by its jti, or the token).

    Revoked tokens are kept in PostgreSQL (revoked_tokens) and in Redis until
    they expire. By jti alone the expiry is unknown, so the revocation is kept
    for the longest lifetime any token may have. A jti that starts with '-'
    (issued before jtis were hex) goes after '--': fleet tokens revoke -- -JTI.

    \b
    Example:
      fleet tokens revoke 9f2c41d07be85a3361c0e4f5a2b8d917
      fleet tokens revoke --token "$TOKEN"
    """
    if (jti is None) == (token is None):
        raise click.UsageError("give a JTI or --token, one of them")
    if token is not None:
        try:
            claims = decode_token(load_serve_settings(), token)
        except Unauthorized as exc:
            if exc.code == "token_expired":
                click.echo("the token has expired already: nothing to revoke")
                return
            raise click.UsageError(f"not a token of this installation: {exc.message}") from None
        jti, expires_at_ms = claims.jti, claims.exp * 1000
    else:
        assert jti is not None
        expires_at_ms = int((time.time() + LONGEST_TTL_S) * 1000)
    redis_url = stackfile.resolve_urls(settings).redis_url

    async def work(conn: asyncpg.Connection) -> bool:
        async with aioredis.Redis.from_url(redis_url) as client:
            return await tokens.revoke(conn, client, jti, expires_at_ms)

    new = run_on_database(settings, work)
    state = "revoked" if new else "was revoked already"
    click.echo(f"token {jti} {state}; every serve node refuses it (kept until {utc(expires_at_ms)})")
