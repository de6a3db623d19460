"""Web action requests (pure): the URL's parts and extension, media types, and the action's arguments.

Follows Apache OpenWhisk's `WebActions.scala`: `/web/{ns}/{pkg|default}/{action}[.ext][/rest]`, the action's
arguments built from the query, the body and the request's context (`__ow_method`, `__ow_headers`, …).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, quote

import msgspec

from broker.entities import KeyValue
from broker.errors import BadRequest
from broker.params import lookup

WEB_PREFIX: Final = "/api/v1/web/"
DEFAULT_PACKAGE: Final = "default"

HTTP: Final = ".http"
JSON: Final = ".json"
HTML: Final = ".html"
SVG: Final = ".svg"
TEXT: Final = ".text"
# In OpenWhisk's order; without a known extension a name gets `.http` (its `enforceExtension` is off).
EXTENSIONS: Final = (HTTP, JSON, HTML, SVG, TEXT)

# Annotations a web action is read by.
WEB_EXPORT: Final = "web-export"
RAW_HTTP: Final = "raw-http"
REQUIRE_WHISK_AUTH: Final = "require-whisk-auth"
WEB_CUSTOM_OPTIONS: Final = "web-custom-options"
REQUIRE_WHISK_AUTH_HEADER: Final = "x-require-whisk-auth"

OW_METHOD: Final = "__ow_method"
OW_HEADERS: Final = "__ow_headers"
OW_PATH: Final = "__ow_path"
OW_USER: Final = "__ow_user"
OW_QUERY: Final = "__ow_query"
OW_BODY: Final = "__ow_body"
RESERVED: Final = frozenset({OW_METHOD, OW_HEADERS, OW_PATH, OW_USER, OW_QUERY, OW_BODY})

# Never passed on to the action: the caller's own credentials, and the shared secret of require-whisk-auth.
HIDDEN_HEADERS: Final = frozenset({"authorization", REQUIRE_WHISK_AUTH_HEADER})

PARAMETERS_NOT_ALLOWED: Final = "Request defines parameters that are not allowed (e.g., reserved properties)."
EXTENSION_NOT_SUPPORTED: Final = "Extension must be specified and one of [{}].".format(", ".join(EXTENSIONS))

_EXTENSION_LIKE = re.compile(r"\.[a-z]+\Z")


@dataclass(frozen=True, slots=True)
class WebPath:
    """What a web URL names: `package` is None for `default`; `rest` is what follows the action, e.g. `/a/b`."""

    namespace: str
    package: str | None
    name: str
    extension: str
    rest: str

    @property
    def projection(self) -> list[str]:
        """The field path `rest` selects in the result (`/body/a` → body, a)."""
        return [part for part in self.rest.split("/") if part]

    @property
    def action_ref(self) -> str:
        """The fully qualified action: `/ns/[pkg/]name`."""
        middle = "" if self.package is None else f"{self.package}/"
        return f"/{self.namespace}/{middle}{self.name}"


def split_extension(segment: str) -> tuple[str, str]:
    """`hello.json` → (`hello`, `.json`); a name without a known extension keeps it all and gets `.http`."""
    for extension in EXTENSIONS:
        if segment.endswith(extension) and len(segment) > len(extension):
            return segment[: -len(extension)], extension
    return segment, HTTP


def unknown_extension(segment: str) -> str | None:
    """The `.xyz` ending of an action segment when it looks like an extension none of ours is."""
    match = _EXTENSION_LIKE.search(segment)
    if match is None or match.group(0) in EXTENSIONS or match.start() == 0:
        return None
    return match.group(0)


def parse_web_path(namespace: str, package: str, tail: str) -> WebPath:
    """The path parameters of `/web/{namespace}/{package}/{tail}` as a WebPath (names are checked by the caller)."""
    segment, slash, rest = tail.partition("/")
    name, extension = split_extension(segment)
    return WebPath(
        namespace=namespace,
        package=None if package == DEFAULT_PACKAGE else package,
        name=name,
        extension=extension,
        rest=slash + rest,
    )


def web_url(api_url: str, namespace: str, name: str, package: str | None = None, extension: str = "") -> str:
    """The URL a web-exported action answers on (`wsk action get NAME --url` prints it): `extension` is one of
    EXTENSIONS or empty (`.http` semantics)."""
    if extension and extension not in EXTENSIONS:
        raise ValueError(f"unknown web extension {extension!r}")
    parts = (namespace, package or DEFAULT_PACKAGE, name)
    path = "/".join(quote(part, safe="@&") for part in parts)
    return f"{api_url.rstrip('/')}{WEB_PREFIX}{path}{extension}"


# -- media types -------------------------------------------------------------------------------------------

_TEXTUAL_APPLICATION = frozenset(
    {
        "application/javascript",
        "application/ecmascript",
        "application/xml",
        "application/x-www-form-urlencoded",
        "application/graphql",
    }
)


def media_type_of(content_type: str | None) -> str:
    """`text/html; charset=utf-8` → `text/html`; empty when absent."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def is_json_family(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def is_binary(media_type: str) -> bool:
    """Whether a body of this type is bytes (base64 in JSON) rather than text, as akka-http classifies types:
    text, the JSON and XML families, SVG and a few textual `application/` types are text; the rest is binary."""
    if media_type.startswith("text/") or is_json_family(media_type) or media_type.endswith("+xml"):
        return False
    return media_type not in _TEXTUAL_APPLICATION


# -- the action's arguments ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebRequest:
    """The parts of an HTTP request a web action sees."""

    method: str
    headers: list[tuple[str, str]]  # as received; names in any case
    path: str  # what follows the action segment (`__ow_path`)
    query: list[tuple[str, str]]  # decoded pairs, in order
    query_string: str  # as sent, for `__ow_query`
    body: bytes
    content_type: str | None


def visible_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """`__ow_headers`: lowercased names, without the caller's credentials."""
    out: dict[str, str] = {}
    for name, value in headers:
        lowered = name.lower()
        if lowered not in HIDDEN_HEADERS:
            out[lowered] = value
    return out


def context_arguments(request: WebRequest, user: str | None) -> dict[str, Any]:
    """`__ow_method` (lowercase), `__ow_headers`, `__ow_path`, and `__ow_user` when the caller authenticated."""
    found: dict[str, Any] = {
        OW_METHOD: request.method.lower(),
        OW_HEADERS: visible_headers(request.headers),
        OW_PATH: request.path,
    }
    if user is not None:
        found[OW_USER] = user
    return found


def decode_body(body: bytes, content_type: str | None, raw: bool) -> Any:
    """The body as OpenWhisk passes it on; None when there is none.

    Not raw: JSON (a JSON-family type) and forms are values; anything else is `__ow_body`. Raw: a string,
    base64 for binary types and (for OpenWhisk's legacy) for `application/json`. A body sent without a
    Content-Type is `application/octet-stream`, which is binary.
    """
    media_type = media_type_of(content_type) or "application/octet-stream"
    if not body:
        return None
    if not raw and is_json_family(media_type):
        if not body.strip():
            return None
        try:
            return msgspec.json.decode(body)
        except msgspec.DecodeError:
            raise BadRequest("The request content was malformed:\nThe body is not valid JSON.") from None
    if not raw and media_type == "application/x-www-form-urlencoded":
        try:
            return dict(parse_qsl(body.decode(), keep_blank_values=True))
        except UnicodeDecodeError:
            raise BadRequest("The request content was malformed:\nThe form is not UTF-8.") from None
    if is_binary(media_type) or media_type == "application/json":
        return base64.b64encode(body).decode()
    try:
        return body.decode()
    except UnicodeDecodeError:
        raise BadRequest(f"Content type '{media_type}' is not supported.") from None


def request_arguments(request: WebRequest, user: str | None, raw: bool) -> dict[str, Any]:
    """The payload of the web action's invocation (its own and its package's parameters go beneath).

    Precedence as OpenWhisk's: context < query < body. A raw-http action gets the query string as
    `__ow_query` and the body as `__ow_body` (`""` when empty); any other gets the query's fields, then a
    JSON object's or a form's fields, or any other body as `__ow_body`. Setting a reserved `__ow_` field
    from the query or body is a 400.
    """
    arguments = context_arguments(request, user)
    body = decode_body(request.body, request.content_type, raw)
    if raw:
        arguments[OW_QUERY] = request.query_string
        arguments[OW_BODY] = "" if body is None else body
        return arguments
    query = dict(request.query)
    fields = body if isinstance(body, dict) else {}
    if RESERVED.intersection(query) or RESERVED.intersection(fields):
        raise BadRequest(PARAMETERS_NOT_ALLOWED)
    arguments.update(query)
    if isinstance(body, dict):
        arguments.update(body)
    elif body is not None:
        arguments[OW_BODY] = body
    return arguments


# -- annotations ---------------------------------------------------------------------------------------------


def is_on(annotations: Iterable[KeyValue], key: str) -> bool:
    """OpenWhisk reads web-export, raw-http and web-custom-options as JSON booleans: only `true` is on."""
    return lookup(annotations, key) is True


def auth_allows(requirement: Any, headers: Mapping[str, str], authenticated: bool) -> bool:
    """`require-whisk-auth`: absent (or false/null) lets anyone in; `true` wants valid OpenWhisk credentials; a
    string or number wants header `X-Require-Whisk-Auth` to equal it. `headers` are keyed in lowercase."""
    if requirement is None or requirement is False:
        return True
    if requirement is True:
        return authenticated
    if isinstance(requirement, str):
        expected = requirement
    elif isinstance(requirement, int | float):
        expected = _number_text(requirement)
    else:
        return False  # an object or array: nothing can match it, as in OpenWhisk
    return headers.get(REQUIRE_WHISK_AUTH_HEADER) == expected


def _number_text(value: int | float) -> str:
    # Scala's BigDecimal prints 42 as "42" and 1.5 as "1.5"; a whole float (42.0) reads as written in JSON.
    return str(value)
