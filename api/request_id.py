"""Transaction ids: every request gets one and every response carries it, errors included."""

from __future__ import annotations

import logging
import re
import secrets

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker import codec
from broker.errors import InternalError

HEADER = "X-Request-ID"
_ACCEPTABLE = re.compile(r"\A[A-Za-z0-9._:-]{1,64}\Z")
log = logging.getLogger("squall.api")


def new_request_id() -> str:
    return secrets.token_hex(16)


def request_id_of(request: Request) -> str:
    rid = request.scope.get("state", {}).get("request_id")
    return rid if isinstance(rid, str) else new_request_id()


class RequestIdMiddleware:
    """Pure ASGI middleware: stamps `X-Request-ID`, and turns a crash into OpenWhisk's 500 shape.

    It catches crashes before Starlette's ServerErrorMiddleware would answer them in plain text.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Keep a caller's id (client-js sends __OW_TRANSACTION_ID as x-request-id) when it is sane.
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        rid = incoming if _ACCEPTABLE.match(incoming) else new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)[HEADER] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            body = codec.encode({"error": InternalError.default_message, "code": rid})
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"%d" % len(body)),
                    ],
                }
            )
            await send_with_id({"type": "http.response.body", "body": body})
