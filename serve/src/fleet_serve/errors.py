"""Every error answer in one JSON shape, ``{"error": {"code", "message"}}``, never a stack trace.

Handlers raise :class:`ApiError` (or a subclass) with a stable ``code``; the
exception handlers here turn it, Litestar's own HTTP exceptions (404 for an
unknown route, 405, validation errors as 400) and anything unexpected (500,
logged with its traceback, answered without it) into that shape.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec

log = logging.getLogger("fleet_serve.errors")


class ErrorBody(msgspec.Struct, frozen=True):
    code: str
    message: str


class ErrorAnswer(msgspec.Struct, frozen=True):
    """What every 4xx and 5xx carries."""

    error: ErrorBody


class ApiError(Exception):
    """An answer other than success: status, a stable machine-readable code and a message for people."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


def _answer(status: int, code: str, message: str) -> Response[ErrorAnswer]:
    return Response(ErrorAnswer(ErrorBody(code, message)), status_code=status)


def api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[ErrorAnswer]:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    response = _answer(exc.status, exc.code, exc.message)
    if headers:
        response.headers.update(headers)
    return response


def validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[ErrorAnswer]:
    details = exc.extra if isinstance(exc.extra, list) else []
    names = [str(d.get("key")) for d in details if isinstance(d, dict) and d.get("key")]
    message = f"invalid {', '.join(names)}" if names else (exc.detail or "invalid request")
    return _answer(400, "invalid_request", message)


def http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorAnswer]:
    code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}
    return _answer(exc.status_code, code.get(exc.status_code, "http_error"), exc.detail or "error")


def unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorAnswer]:
    log.exception("unhandled error", extra={"path": request.url.path}, exc_info=exc)
    return _answer(500, "internal", "internal error")


EXCEPTION_HANDLERS = {
    ApiError: api_error,
    ValidationException: validation_error,
    HTTPException: http_error,
    Exception: unexpected,
}


_MEANINGS = {
    400: "bad parameters",
    401: "no valid token: missing, wrongly signed, expired or revoked",
    403: "the token's role or operators do not cover this",
    404: "no such resource",
}


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """The error answers a handler documents in OpenAPI, each in the one shape (Litestar's default 400
    schema is its own, not ours)."""
    return {
        status: ResponseSpec(ErrorAnswer, description=_MEANINGS[status], generate_examples=False)
        for status in statuses
    }
