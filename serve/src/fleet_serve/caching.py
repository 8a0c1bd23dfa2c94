"""``Cache-Control`` and a strong ``ETag`` on read answers, and ``304 Not Modified`` when it matches.

The body is encoded here once (msgspec), hashed (BLAKE2b, 128 bits: a
strong validator, equal only for byte-identical bodies), and the bytes go
out as they are, so the answer costs one encoding whether it is a 200 or a
304. Litestar has static ``etag=`` and ``cache_control=`` on handlers but
nothing that derives the tag from the body, hence this module.
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple, TypeVar

import msgspec
from litestar import Request, Response
from litestar.status_codes import HTTP_304_NOT_MODIFIED

T = TypeVar("T")

LIVE_MAX_AGE_S = 2
"""live positions and ETAs move about once a second: a client may reuse an answer this long"""
HISTORY_MAX_AGE_S = 60
"""history answers change only as new fixes are stored"""

_ENCODER = msgspec.json.Encoder()


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 section 13.1.2: a list of tags or ``*``, compared weakly (a ``W/`` prefix is ignored)."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip().removeprefix("W/")
        if tag in ("*", etag):
            return True
    return False


class Encoded(NamedTuple):
    """An answer's JSON bytes and their tag: what a hot answer is held as, so a hit costs no encoding."""

    body: bytes
    etag: str


def encode(body: object) -> Encoded:
    encoded = _ENCODER.encode(body)
    return Encoded(encoded, etag_of(encoded))


def cached(request: Request[Any, Any, Any], body: T, max_age_s: int = LIVE_MAX_AGE_S) -> Response[T]:
    """``body`` as JSON with its validators; an empty 304 when the client already holds it."""
    return respond(request, encode(body), max_age_s)


def respond(
    request: Request[Any, Any, Any], answer: Encoded, max_age_s: int = LIVE_MAX_AGE_S
) -> Response[Any]:
    """An answer already encoded, with its validators; an empty 304 when the client already holds it."""
    headers = {"ETag": answer.etag, "Cache-Control": f"private, max-age={max_age_s}"}
    if matches(request.headers.get("if-none-match"), answer.etag):
        return Response(content=None, status_code=HTTP_304_NOT_MODIFIED, headers=headers)
    # the bytes go out unchanged (Litestar passes bytes through)
    return Response(content=answer.body, headers=headers, media_type="application/json")
