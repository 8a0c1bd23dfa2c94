"""``Cache-Control`` and a strong ``ETag`` on read answers, and ``304 Not Modified`` when it matches.

The body is encoded here once (msgspec), hashed (BLAKE2b, 128 bits: a
strong validator, equal only for byte-identical bodies), and the bytes go
out as they are, so the answer costs one encoding whether it is a 200 or a
304. Litestar has static ``etag=`` and ``cache_control=`` on handlers but
nothing that derives the tag from the body, hence this module.

An answer held by the micro-cache (``Services.answers``) also keeps the
``ASGIResponse`` objects that send it (one for 200, one for 304, per
``max-age``), so a hit builds neither a ``Response`` nor its headers: the
handler returns an :class:`EncodedResponse`, whose ``to_asgi_response`` hands
Litestar the response built the first time. Measured in process with direct
ASGI calls, building them per request was about a fifth of the CPU of the
trip-ETA answer.
"""

from __future__ import annotations

import hashlib
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response
from litestar.response.base import ASGIResponse
from litestar.status_codes import HTTP_304_NOT_MODIFIED

from fleet_serve.params import raw_header

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


class Encoded:
    """An answer's JSON bytes, their tag, and the responses that send them: what a hot answer is held as."""

    __slots__ = ("_sent", "body", "etag")

    def __init__(self, body: bytes, etag: str) -> None:
        self.body, self.etag = body, etag
        self._sent: dict[tuple[int, bool], ASGIResponse] = {}

    def sent(self, max_age_s: int, *, not_modified: bool) -> ASGIResponse:
        """The 200 (or the empty 304) with this ``max-age``: built on first use, then shared (an
        ``ASGIResponse`` holds no per-request state)."""
        found = self._sent.get((max_age_s, not_modified))
        if found is None:
            headers = {"ETag": self.etag, "Cache-Control": f"private, max-age={max_age_s}"}
            found = self._sent[(max_age_s, not_modified)] = (
                ASGIResponse(status_code=HTTP_304_NOT_MODIFIED, headers=headers)
                if not_modified
                else ASGIResponse(body=self.body, headers=headers, media_type="application/json")
            )
        return found


class EncodedResponse(Response[Any]):
    """A handler's answer whose ``ASGIResponse`` is already built (``Encoded.sent``).

    Litestar calls ``to_asgi_response`` on whatever ``Response`` a handler returns; this one returns the
    prebuilt response as it is. Nothing else of ``Response`` is read on that path (no cookies, background
    tasks or after-request hooks are configured), so ``Response.__init__`` is not run.
    """

    def __init__(self, sent: ASGIResponse) -> None:
        self._sent = sent

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        return self._sent


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
    held = raw_header(request.scope, b"if-none-match")
    return EncodedResponse(answer.sent(max_age_s, not_modified=matches(held, answer.etag)))
