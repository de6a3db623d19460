"""The outer ASGI middleware: request ids on every response, odd paths refused, crashes in OpenWhisk's shape."""

from __future__ import annotations

import logging
import re

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import status_of
from api.request_id import HEADER, assign_request_id
from api.web_request import WEB_PREFIX
from broker import codec
from broker.errors import BadRequest, InternalError, SquallError

log = logging.getLogger("squall.api")


# OpenWhisk's controller answers every origin, and any OPTIONS request with 200 (RestApi's CORS defaults).
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, DELETE, POST, PUT, HEAD",
    "Access-Control-Allow-Headers": "Authorization, Origin, X-Requested-With, Content-Type, Accept, User-Agent",
}


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def _has_control_characters(path: str) -> bool:
    return _CONTROL_CHARACTERS.search(path) is not None


class RequestIdMiddleware:
    """Pure ASGI middleware: stamps `X-Request-ID` and the CORS headers, answers OPTIONS, and turns a crash
    into OpenWhisk's 500 shape.

    It catches crashes before Starlette's ServerErrorMiddleware would answer them in plain text.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = assign_request_id(scope)
        started = False
        # Web actions answer their own OPTIONS and set their own CORS headers (api/routes/web.py), or leave
        # both to the action (`web-custom-options`).
        web = scope.get("path", "").startswith(WEB_PREFIX)

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers[HEADER] = rid
                if not web:
                    for name, value in CORS_HEADERS.items():
                        headers.setdefault(name, value)
            await send(message)

        if scope["method"] == "OPTIONS" and not web:
            await send_with_id(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]}
            )
            await send_with_id({"type": "http.response.body", "body": b""})
            return

        try:
            if _has_control_characters(scope.get("path", "")):
                # Starlette's `$` also matches before a trailing newline: `a%0A` would reach handlers as `a`.
                raise BadRequest("The request content was malformed:\nthe path contains control characters.")
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if started:
                raise
            if isinstance(exc, SquallError):
                status, message = status_of(exc), exc.message
            else:
                log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
                status, message = 500, InternalError.default_message
            body = codec.encode({"error": message, "code": rid})
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"%d" % len(body)),
                    ],
                }
            )
            await send_with_id({"type": "http.response.body", "body": body})
