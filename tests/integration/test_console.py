"""The console's static side served by the API: the page, its style sheet and scripts, their security headers,
nothing else; and the scripts never put a key in a URL or data into markup."""

from __future__ import annotations

import re

import httpx
import pytest

from api.routes.console import CONTENT_SECURITY_POLICY, assets

SCRIPTS = sorted(name for name in assets() if name.endswith(".js"))


def test_the_console_ships_its_page_styles_and_scripts() -> None:
    assert {"index.html", "console.css", "app.js", "stream.js", "api.js"} <= set(assets())


async def test_the_page_is_served_with_a_strict_policy(client: httpx.AsyncClient) -> None:
    r = await client.get("/console")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    policy = r.headers["content-security-policy"]
    assert policy == CONTENT_SECURITY_POLICY
    directives = dict(d.split(" ", 1) for d in policy.split("; "))
    assert directives["script-src"] == "'self'" and directives["default-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'" and directives["require-trusted-types-for"] == "'script'"
    assert "unsafe" not in policy
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-frame-options"] == "DENY"
    # The page loads its code from files only: no inline script or style, no handler attributes.
    page = r.text
    assert re.findall(r"<script\b[^>]*>", page) == ['<script type="module" src="/console/scripts/app.js">']
    assert "<style" not in page and not re.search(r"\son[a-z]+=", page) and "style=" not in page
    # Every module is preloaded with the page, so none waits for its importer to be parsed first.
    preloaded = re.findall(r'<link rel="modulepreload" href="/console/scripts/([a-z]+\.js)">', page)
    assert sorted([*preloaded, "app.js"]) == SCRIPTS


@pytest.mark.parametrize("name", SCRIPTS)
async def test_each_script_is_served_as_javascript(client: httpx.AsyncClient, name: str) -> None:
    r = await client.get(f"/console/scripts/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert r.content == assets()[name].body


async def test_an_unchanged_asset_is_answered_304(client: httpx.AsyncClient) -> None:
    first = await client.get("/console/console.css")
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/css")
    again = await client.get("/console/console.css", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    other = await client.get("/console/console.css", headers={"If-None-Match": '"stale"'})
    assert other.status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/console/scripts/index.html",
        "/console/scripts/console.css",
        "/console/scripts/missing.js",
        "/console/scripts/..%2Fapp.py",
        "/console/scripts/%2e%2e%2fcontext.py",
        "/console/scripts/APP.JS",
        "/console/app.js",
    ],
)
async def test_nothing_but_the_shipped_scripts_is_served(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 404
    assert set(r.json()) == {"error", "code"}


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_use_no_markup_sinks_and_keep_the_key_out_of_urls(name: str) -> None:
    source = assets()[name].body.decode()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in source, (name, sink)
    # The key is read from session storage and only ever becomes an Authorization header.
    assert "localStorage" not in source and "document.cookie" not in source
    assert re.search(r"[?&](key|auth|token|secret)=", source) is None, name
    assert "new EventSource" not in source, name


async def test_invoker_pools_need_a_key(client: httpx.AsyncClient) -> None:
    r = await client.get("/invokers/pools")
    assert r.status_code == 401
