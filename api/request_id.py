"""Transaction ids: every request gets one, kept in the request state and sent back as `X-Request-ID`."""

from __future__ import annotations

import re
import secrets

from starlette.requests import Request
from starlette.types import Scope

HEADER = "X-Request-ID"
_ACCEPTABLE = re.compile(r"\A[A-Za-z0-9._:-]{1,64}\Z")


def new_request_id() -> str:
    return secrets.token_hex(16)


def request_id_of(request: Request) -> str:
    rid = request.scope.get("state", {}).get("request_id")
    return rid if isinstance(rid, str) else new_request_id()


def assign_request_id(scope: Scope) -> str:
    """Keep a caller's id (client-js sends __OW_TRANSACTION_ID as x-request-id) when it is sane."""
    incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
    rid = incoming if _ACCEPTABLE.match(incoming) else new_request_id()
    scope.setdefault("state", {})["request_id"] = rid
    return rid
