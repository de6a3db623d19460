"""Web action responses (pure): an activation's result shaped into HTTP by the URL's extension, as OpenWhisk's
`WebActions.scala` shapes it (`.http` reads `{statusCode, headers, body}`; the others project a field)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

from api.web_request import HTML, HTTP, JSON, SVG, TEXT, is_binary, is_json_family, media_type_of
from broker import codec
from broker.errors import BadRequest, NotFound

PROPERTY_NOT_FOUND: Final = "Response does not include requested property."
HTTP_UNKNOWN_CONTENT_TYPE: Final = "Response did not specify a known content-type."
HTTP_CONTENT_TYPE_ERROR: Final = "Response type in header did not match generated content type."
ERROR_PROCESSING_REQUEST: Final = "There was an error processing your request."
RESPONSE_NOT_READY: Final = "Response not yet ready."

JSON_TYPE: Final = "application/json"
HTML_TYPE: Final = "text/html; charset=UTF-8"
TEXT_TYPE: Final = "text/plain; charset=UTF-8"
SVG_TYPE: Final = "image/svg+xml"

_INTEGER = re.compile(r"\A\s*-?[0-9]+\s*\Z")
_MEDIA_TYPE = re.compile(r"\A[\w!#$&^.+-]+/[\w!#$&^.+-]+\s*(;.*)?\Z")
# Framing is the server's business: an action's own value would contradict the body actually sent.
_FRAMING_HEADERS = frozenset({"content-type", "content-length", "transfer-encoding", "connection"})


def invalid_media(media_type: str) -> str:
    return f"Response is not valid '{media_type}'."


@dataclass(frozen=True, slots=True)
class WebAnswer:
    """An HTTP response: `content_type` None means none (an empty body)."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


def project(result: Any, path: list[str]) -> Any:
    """The field `path` selects in `result` (the whole result for an empty path); 404 when it is missing."""
    value = result
    for part in path:
        if not isinstance(value, dict) or part not in value:
            raise NotFound(PROPERTY_NOT_FOUND)
        value = value[part]
    return value


def shape(value: Any, extension: str) -> WebAnswer:
    """The response for `value` (the result, or its projected field) under `extension`."""
    if extension == JSON:
        return as_json(value)
    if extension == HTML:
        return _as_markup(value, "html", HTML_TYPE, "text/html")
    if extension == SVG:
        return _as_markup(value, "svg", SVG_TYPE, "image/svg+xml")
    if extension == TEXT:
        return as_text(value)
    assert extension == HTTP, extension
    return as_http(value)


def as_json(value: Any) -> WebAnswer:
    if not isinstance(value, dict | list):
        raise BadRequest(invalid_media(JSON_TYPE))
    return WebAnswer(status=200, body=codec.encode(value), content_type=JSON_TYPE)


def _as_markup(value: Any, fallback: str, content_type: str, media_type: str) -> WebAnswer:
    # An object answers its `body`, else its `html` (or `svg`) field; anything else answers itself.
    markup = value.get("body", value.get(fallback)) if isinstance(value, dict) else value
    if not isinstance(markup, str):
        raise BadRequest(invalid_media(media_type))
    return WebAnswer(status=200, body=markup.encode(), content_type=content_type)


def as_text(value: Any) -> WebAnswer:
    if isinstance(value, dict):
        if "body" in value:
            value = value["body"]
        elif "text" in value:
            value = value["text"]
        else:
            raise NotFound(PROPERTY_NOT_FOUND)
    return WebAnswer(status=200, body=_text_of(value).encode(), content_type=TEXT_TYPE)


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, indent=2, ensure_ascii=False)
    return json.dumps(value)  # true, 1.5, null as JSON writes them


# -- .http ---------------------------------------------------------------------------------------------------


def as_http(value: Any) -> WebAnswer:
    """`{statusCode, headers, body}`: a string body is text (`text/html` unless a header says otherwise) or, for a
    binary content type, base64 decoded to bytes; another JSON body is serialized (`application/json`); no
    body (or `""`) is an empty response, 204 unless `statusCode` says otherwise."""
    if not isinstance(value, dict):
        raise BadRequest(invalid_media("message/http"))
    headers = _headers_of(value.get("headers"))
    status = _status_of(value.get("statusCode"))
    body = value.get("body")
    content_type = next((v for k, v in headers if k.lower() == "content-type"), None)
    kept = [(k, v) for k, v in headers if k.lower() not in _FRAMING_HEADERS]
    if body is None or body == "":
        return WebAnswer(status=status or 204, headers=kept)
    answer = _string_body(body, content_type) if isinstance(body, str) else _json_body(body, content_type)
    return WebAnswer(status=status or 200, body=answer.body, content_type=answer.content_type, headers=kept)


def _headers_of(raw: Any) -> list[tuple[str, str]]:
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise BadRequest(invalid_media("message/http"))
    out: list[tuple[str, str]] = []
    for name, value in raw.items():
        out.extend((name, text) for text in _header_values(value))
    return out


def _header_values(value: Any) -> list[str]:
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, str):
        return [value]
    if isinstance(value, int | float):
        return [json.dumps(value)]
    if isinstance(value, list):
        return [text for item in value for text in _header_values(item)]
    raise BadRequest(invalid_media("message/http"))


def _status_of(raw: Any) -> int | None:
    """`statusCode` as a whole number or a numeric string, 100 to 599; None when absent."""
    if raw is None:
        return None
    code: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        code = raw
    elif (isinstance(raw, float) and raw.is_integer()) or (isinstance(raw, str) and _INTEGER.match(raw)):
        code = int(raw)
    if code is None or not 100 <= code <= 599:
        raise BadRequest(invalid_media("message/http"))
    return code


def _string_body(body: str, content_type: str | None) -> WebAnswer:
    if content_type is None:
        return WebAnswer(status=200, body=body.encode(), content_type=HTML_TYPE)
    if not _MEDIA_TYPE.match(content_type.strip()):
        raise BadRequest(HTTP_UNKNOWN_CONTENT_TYPE)
    media_type = media_type_of(content_type)
    if is_binary(media_type):
        return WebAnswer(status=200, body=_base64(body), content_type=content_type)
    if is_json_family(media_type):
        # OpenWhisk's legacy: a JSON-typed string that is valid base64 is decoded first.
        try:
            return WebAnswer(status=200, body=_base64(body), content_type=content_type)
        except BadRequest:
            pass
    return WebAnswer(status=200, body=body.encode(), content_type=_with_charset(content_type))


def _json_body(body: Any, content_type: str | None) -> WebAnswer:
    media_type = media_type_of(content_type) if content_type is not None else JSON_TYPE
    if content_type is not None and not _MEDIA_TYPE.match(content_type.strip()):
        raise BadRequest(HTTP_UNKNOWN_CONTENT_TYPE)
    if not is_json_family(media_type):
        raise BadRequest(HTTP_CONTENT_TYPE_ERROR)
    if media_type == JSON_TYPE:
        return WebAnswer(status=200, body=codec.encode(body), content_type=JSON_TYPE)
    return WebAnswer(status=200, body=json.dumps(body, indent=2).encode(), content_type=media_type)


def _base64(text: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(HTTP_CONTENT_TYPE_ERROR) from None


def _with_charset(content_type: str) -> str:
    # Text goes out as UTF-8 and says so, unless the action named a charset itself.
    return content_type if "charset=" in content_type.lower() else f"{content_type}; charset=UTF-8"
