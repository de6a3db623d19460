"""`GET /console`: the web console, static files shipped in the package, served with a strict CSP.

The console has no privileges of its own: it is a page and its scripts, and everything it shows comes from the
REST API, called by the browser with the namespace key the user typed (kept in the tab's session storage, sent
only as a Basic `Authorization` header, never in a URL). The activation feed reads `…/activations/stream` with
fetch() streaming, which can send that header, rather than EventSource, which cannot.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from importlib import resources
from typing import Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from api.routing import Operation, route
from broker.errors import NotFound

TAG = "Console"
ASSETS_PACKAGE: Final = "api"
ASSETS_DIR: Final = "console"
SCRIPT_NAME = re.compile(r"[a-z][a-z0-9_-]{0,40}\.js")

# Scripts and styles from this origin only, no inline code, no string-to-DOM sinks (Trusted Types with no
# policy makes `innerHTML = …` throw), no framing, no form posts, no plugins: a tenant's activation result that
# holds markup can only ever be text.
CONTENT_SECURITY_POLICY: Final = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "object-src 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ]
)

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # Revalidated on every load (an ETag makes that cheap), so an upgraded server never runs stale scripts.
    "Cache-Control": "no-cache",
}


class Asset(msgspec.Struct, frozen=True, kw_only=True):
    body: bytes
    media_type: str
    etag: str


@cache
def assets() -> dict[str, Asset]:
    """Every file of the console, read once: `index.html`, `console.css` and the scripts (`*.js`)."""
    folder = resources.files(ASSETS_PACKAGE).joinpath(ASSETS_DIR)
    found: dict[str, Asset] = {}
    for entry in folder.iterdir():
        name = entry.name
        media = _media_type(name)
        if media is None or not entry.is_file():
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        found[name] = Asset(body=body, media_type=media, etag=etag)
    return found


def _media_type(name: str) -> str | None:
    if name.endswith(".html"):
        return "text/html; charset=utf-8"
    if name.endswith(".css"):
        return "text/css; charset=utf-8"
    if name.endswith(".js"):
        return "text/javascript; charset=utf-8"
    return None


def serve(request: Request, name: str) -> Response:
    """One asset with the console's security headers; 304 when the browser's copy is current."""
    asset = assets().get(name)
    if asset is None:
        raise NotFound()
    headers = {**SECURITY_HEADERS, "ETag": asset.etag}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@route(
    "/console",
    "GET",
    Operation(
        summary="The web console (HTML): sign in with a namespace key, kept in the browser tab only",
        tag=TAG,
        response=str,
        content_type="text/html",
        auth=False,
    ),
)
async def console_page(request: Request) -> Response:
    return serve(request, "index.html")


@route(
    "/console/console.css",
    "GET",
    Operation(
        summary="The web console's style sheet", tag=TAG, response=str, content_type="text/css", auth=False
    ),
)
async def console_styles(request: Request) -> Response:
    return serve(request, "console.css")


@route(
    "/console/scripts/{name}",
    "GET",
    Operation(
        summary="One of the web console's scripts (ES modules)",
        tag=TAG,
        response=str,
        content_type="text/javascript",
        errors=(404,),
        auth=False,
    ),
)
async def console_script(request: Request) -> Response:
    name = request.path_params["name"]
    # Only names of the shipped scripts: the page and the style sheet are not scripts.
    if not SCRIPT_NAME.fullmatch(name):
        raise NotFound()
    return serve(request, name)


routes = [console_page, console_styles, console_script]
