"""``fleet ingest http``: drivers' phones over HTTP, into the same pipeline as the broker's frames.

Two kinds of request, both authenticated by the phone's device token
(``DEVICE:SECRET``, ``fleet devices add --kind phone``), sent as
``Authorization: Bearer`` or, since the apps have no header setting, as the
device identifier (``id=``/``deviceid=`` or the JSON ``device_id``):

* ``GET`` or ``POST /``: the OsmAnd protocol of Traccar Client and OsmAnd
  (``fleet_schemas.osmand``): query or form parameters, or Traccar Client's
  JSON body;
* ``POST /v1/ingest/frames``: a batch in the wire format's JSON variant
  (``["DEVICE", [frame, ...]]``) for apps written against fleet, or a signed
  JSON envelope (``[1, key_id, payload, signature]``) under the device's key.

Each request becomes one message for the ingest pipeline (``fleet_ingest.intake``
batches them), with the same checks, reason codes and metrics as MQTT
messages, and ``source = phone`` on its frames. The answer waits for the
commit:

* 200 with what was stored and each rejected frame's reason (a frame the
  checks reject, too old or inaccurate, is recorded in ``rejected_frames``:
  sending it again would not change that, so the app may drop it);
* 400 with the code and the field when the request cannot be decoded (kept in
  ``rejected_frames`` too, its token blanked), 401 without a valid token,
  413 past the body limit, 429 with ``Retry-After`` past the device's rate,
  503 with ``Retry-After`` when PostgreSQL (or Redis) is down: nothing is
  kept then, and the app's own queue sends it again; its fixes keep their
  sequence (the fix time), so what is sent twice is stored once.

Token secrets never reach a log or a stored byte: access logs are off and raw
requests are stored with the secret replaced.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import msgspec
from litestar import Litestar, Request, Response, route
from litestar.exceptions import HTTPException

from fleet_ingest import metrics
from fleet_ingest.assess import Authenticated, Incoming
from fleet_ingest.intake import Busy, Intake, Verdict
from fleet_ingest.ratelimit import RateLimiter
from fleet_ingest.service import StoreUnavailable
from fleet_ingest.tokencache import TokenCache, TooManyChecks, Verified
from fleet_schemas import FleetSchemaError, Frame, decode_batch, frames_topic
from fleet_schemas.osmand import PhoneReport, decode_json, decode_query, to_frames
from fleet_store.device_tokens import Credential, parse_credential
from fleet_store.outages import POSTGRES_UNAVAILABLE

log = logging.getLogger("fleet_ingest.http_front")

OSMAND_PATH = "/"
FRAMES_PATH = "/v1/ingest/frames"
RETRY_AFTER_S = 5
_BLANKED = b"[token]"


class _DeviceId(msgspec.Struct):
    device_id: str | None = None


_DEVICE_ID = msgspec.json.Decoder(_DeviceId)


class Refused(Exception):
    """An answer other than 200, in fleet's error shape."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


class Answer(msgspec.Struct, frozen=True):
    accepted: int
    stored: int
    rejected: list[dict[str, Any]]


def _error(status: int, code: str, message: str, retry_after_s: float | None = None) -> Response[Any]:
    headers = {}
    if retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return Response({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _refused(request: Request[Any, Any, Any], exc: Refused) -> Response[Any]:
    _count(request, exc.status)
    return _error(exc.status, exc.code, exc.message, exc.retry_after_s)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    _count(request, exc.status_code)
    code = (
        "too_large" if exc.status_code == 413 else "bad_request" if exc.status_code < 500 else "unavailable"
    )
    return _error(exc.status_code, code, str(exc.detail))


def _internal(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("request failed", extra={"route": _route(request)})
    _count(request, 500)
    return _error(500, "internal_error", "the server failed on this request; it is logged")


def _route(request: Request[Any, Any, Any]) -> str:
    return (
        "frames"
        if request.url.path == FRAMES_PATH
        else "osmand"
        if request.url.path == OSMAND_PATH
        else "other"
    )


def _count(request: Request[Any, Any, Any], status: int) -> None:
    metrics.HTTP_REQUESTS.labels(_route(request), str(status)).inc()


def _bearer(request: Request[Any, Any, Any]) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _blanked(raw: bytes, credential: Credential) -> bytes:
    """The raw request without the token's secret, for ``rejected_frames``."""
    return raw.replace(credential.secret.encode(), _BLANKED)


class HttpFront:
    """The web application of ``fleet ingest http``; the intake, token cache and limiter are handed in."""

    def __init__(
        self,
        intake: Intake,
        tokens: TokenCache,
        limiter: RateLimiter,
        max_body_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._intake = intake
        self._tokens = tokens
        self._limiter = limiter
        self._max_body_bytes = max_body_bytes
        self._clock = clock

    def app(self) -> Litestar:
        front = self

        @route(OSMAND_PATH, http_method=["GET", "POST"])
        async def osmand(request: Request[Any, Any, Any]) -> Response[Any]:
            """The OsmAnd protocol (Traccar Client, OsmAnd): query, form or JSON."""
            return await front.osmand(request)

        @route(FRAMES_PATH, http_method=["POST"])
        async def frames(request: Request[Any, Any, Any]) -> Response[Any]:
            """A batch of wire-format frames (JSON), or a signed JSON envelope."""
            return await front.frames(request)

        return Litestar(
            route_handlers=[osmand, frames],
            exception_handlers={Refused: _refused, HTTPException: _http_error, Exception: _internal},
            request_max_body_size=self._max_body_bytes,
            openapi_config=None,
            logging_config=None,
        )

    # ------------------------------------------------------------ the two routes

    async def osmand(self, request: Request[Any, Any, Any]) -> Response[Any]:
        started = self._clock()
        body = await request.body()
        params = parse_qsl(request.url.query, keep_blank_values=True)  # in the order sent: the last wins
        is_json = request.headers.get("content-type", "").lower().startswith("application/json")
        if not params and body and not is_json:  # a form body (POST without a query)
            params = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        report: PhoneReport | None = None
        failure: FleetSchemaError | None = None
        try:
            report = decode_json(body) if is_json else decode_query(params)
        except FleetSchemaError as exc:
            failure = exc
        if is_json:
            device_id = report.device_id if report is not None else _json_device_id(body)
        else:
            device_id = next((v for k, v in reversed(params) if k in ("id", "deviceid")), None)
        credential, verified = await self._authenticate(_bearer(request) or device_id, failure)
        # The parameters as decoded, re-encoded with the id blanked: however the app escaped its token.
        raw = body if is_json else _without_ids(params, verified.device).encode()
        if report is not None:
            frames = to_frames(report.fixes, verified.device, verified.bus)
            auth = Authenticated(verified.device, verified.token_id, frames)
        else:
            assert failure is not None
            auth = Authenticated(verified.device, verified.token_id, [], failure.code, failure.message)
        message = Incoming(f"http/osmand/{verified.device}", _blanked(raw, credential), auth)
        return await self._answer(request, message, started)

    async def frames(self, request: Request[Any, Any, Any]) -> Response[Any]:
        started = self._clock()
        body = await request.body()
        device_id = request.query_params.get("id")
        credential, verified = await self._authenticate(_bearer(request) or device_id, None)
        raw = _blanked(body, credential)
        if _signed(body):  # the envelope path: its signature and key are checked as over MQTT
            message = Incoming(frames_topic(verified.operator, verified.device), raw)
        else:
            message = Incoming(f"http/frames/{verified.device}", raw, _unsigned(body, verified))
        return await self._answer(request, message, started)

    # ------------------------------------------------------------ steps

    async def _authenticate(
        self, text: str | None, failure: FleetSchemaError | None
    ) -> tuple[Credential, Verified]:
        if not text:
            if failure is not None:  # cannot tell whose it is: refuse without keeping it
                raise Refused(400, failure.code, failure.message)
            raise Refused(401, "token_missing", "no device token: send it as the device id or Bearer")
        credential = parse_credential(text)
        if credential is None:
            raise Refused(401, "token_invalid", "the device token is not of the form DEVICE:SECRET")
        try:
            verified = await self._tokens.verify(credential)
        except TooManyChecks as exc:
            raise Refused(429, "rate_limited", str(exc), exc.wait_s) from None
        except POSTGRES_UNAVAILABLE:
            raise Refused(503, "unavailable", "the device registry cannot be read", RETRY_AFTER_S) from None
        if verified is None:
            raise Refused(401, "token_invalid", "the device token is wrong or revoked")
        wait = self._limiter.wait_s(verified.device, self._clock())
        if wait > 0:
            metrics.RATE_LIMITED.inc()
            raise Refused(429, "rate_limited", f"device {verified.device!r} is over its request rate", wait)
        return credential, verified

    async def _answer(
        self, request: Request[Any, Any, Any], message: Incoming, started: float
    ) -> Response[Any]:
        try:
            verdict = await self._intake.submit(message)
        except StoreUnavailable as exc:
            raise Refused(
                503, "unavailable", f"{exc.store} is unavailable; send it again", RETRY_AFTER_S
            ) from None
        except Busy as exc:
            raise Refused(503, "busy", str(exc), RETRY_AFTER_S) from None
        except Exception:  # logged by the intake; nothing is acknowledged, so the app sends it again
            raise Refused(
                503, "unavailable", "the request could not be taken in; send it again", RETRY_AFTER_S
            ) from None
        metrics.HTTP_SECONDS.labels(_route(request)).observe(self._clock() - started)
        if verdict.refused_whole:
            first = verdict.rejected[0]
            raise Refused(400, first.reason, first.detail)
        _count(request, 200)
        return Response(_body(verdict), status_code=200)


def _without_ids(params: list[tuple[str, str]], device: str) -> str:
    blank = f"{device}:{_BLANKED.decode()}"
    return urlencode([(k, blank if k in ("id", "deviceid") else v) for k, v in params], safe=":[]")


def _json_device_id(body: bytes) -> str | None:
    """The ``device_id`` of a JSON body that did not decode as a whole, if it can be read at all."""
    try:
        return _DEVICE_ID.decode(body).device_id
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
        return None


def _signed(body: bytes) -> bool:
    """A JSON envelope starts with its version number; a batch with its device id."""
    head = body.lstrip()
    return head[:1] == b"[" and head[1:].lstrip()[:1].isdigit()


def _unsigned(body: bytes, verified: Verified) -> Authenticated:
    """A JSON batch of the verified device, its frames marked as from a phone."""
    try:
        batch = decode_batch(body, "json")
    except FleetSchemaError as exc:
        return Authenticated(verified.device, verified.token_id, [], exc.code, exc.message)
    if batch.device != verified.device:
        detail = f"batch device {batch.device!r} != the token's device {verified.device!r}"
        return Authenticated(verified.device, verified.token_id, [], "device_mismatch", detail)
    frames: list[Frame] = [msgspec.structs.replace(f, source="phone") for f in batch.frames]
    return Authenticated(verified.device, verified.token_id, frames)


def _body(verdict: Verdict) -> Answer:
    return Answer(
        accepted=verdict.accepted,
        stored=verdict.stored,
        rejected=[{"reason": r.reason, "detail": r.detail, "seq": r.seq} for r in verdict.rejected],
    )
