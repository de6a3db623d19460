"""The one place where Squall's errors become OpenWhisk's HTTP error shape `{"error", "code"}`."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.request_id import request_id_of
from broker import errors

log = logging.getLogger("squall.api")

# Most specific first: ConcurrentModification is a Conflict.
_STATUS: tuple[tuple[type[errors.SquallError], int], ...] = (
    (errors.BadRequest, 400),
    (errors.Unauthorized, 401),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.NotAcceptable, 406),
    (errors.Conflict, 409),
    (errors.PayloadTooLarge, 413),
    (errors.Throttled, 429),
    (errors.Unavailable, 503),
)

# Starlette's own rejections (unknown route, wrong verb) in OpenWhisk's words.
_HTTP_MESSAGES = {
    404: "The requested resource does not exist.",
    405: "Method not allowed.",
}

_WWW_AUTHENTICATE = {"WWW-Authenticate": 'Basic realm="OpenWhisk secure realm"'}


def status_of(exc: errors.SquallError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(request: Request, status: int, message: str) -> JSONResponse:
    headers = _WWW_AUTHENTICATE if status == 401 else None
    return JSONResponse({"error": message, "code": request_id_of(request)}, status, headers=headers)


async def on_squall_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.SquallError)
    status = status_of(exc)
    if status == 500:
        log.error("internal error on %s %s: %s", request.method, request.url.path, exc.message)
    return error_response(request, status, exc.message)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = _HTTP_MESSAGES.get(exc.status_code, str(exc.detail))
    return error_response(request, exc.status_code, message)


EXCEPTION_HANDLERS = {
    errors.SquallError: on_squall_error,
    HTTPException: on_http_exception,
}
# Anything else is a bug: RequestIdMiddleware logs it and answers 500 in the same shape.
