"""Web actions on a real `squall standalone` (rootless Podman, the Python runtime): every extension, raw HTTP,
binary bodies, require-whisk-auth both ways, custom OPTIONS, OpenWhisk's errors, argument merging, final
parameters, packaged and `default` actions; anonymous callers unless a case says otherwise."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from api.web_request import web_url
from broker.config import GUEST_KEY
from tests.e2e.test_standalone import Standalone, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GUEST_USER, _, GUEST_SECRET = GUEST_KEY.partition(":")
EXPORTED = [{"key": "web-export", "value": True}]

ECHO = "def main(args):\n    return args\n"
HTTP = """
def main(args):
    return {"statusCode": 201, "headers": {"X-Made-By": "squall", "Set-Cookie": ["a=1", "b=2"]},
            "body": "<h1>hello %s</h1>" % args.get("name", "world")}
"""
# The smallest valid PNG: 1x1, transparent.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
IMAGE = f"""
def main(args):
    return {{"headers": {{"Content-Type": "image/png"}}, "body": "{base64.b64encode(PNG).decode()}"}}
"""
PAGES = """
def main(args):
    return {"html": "<p>page</p>", "svg": "<svg/>", "text": "plain words", "n": 7}
"""
CRASHING = "import os\n\ndef main(args):\n    os._exit(3)\n"  # a developer error: no result at all
RAISING = "def main(args):\n    raise RuntimeError('broken')\n"  # the runtime answers {"error": "broken"}
APP_ERROR = "def main(args):\n    return {'error': {'statusCode': 418, 'body': 'teapot'}}\n"
OPTIONS = """
def main(args):
    if args["__ow_method"] == "options":
        return {"statusCode": 200, "headers": {"Access-Control-Allow-Origin": "https://only.example",
                                               "X-Options-By": "action"}}
    return {"body": "not options"}
"""


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """One standalone for the module, a guest client on it, and the actions every case uses."""
    workdir = tmp_path_factory.mktemp("web-standalone")
    standalone = Standalone(workdir / "data", free_port(), workdir / "standalone.log")
    try:
        standalone.wait_ready()
        with httpx.Client(base_url=standalone.url, auth=(GUEST_USER, GUEST_SECRET), timeout=60) as client:
            create(client, "echo", ECHO)
            create(client, "plain", ECHO, annotations=[])  # not exported
            create(client, "page", HTTP)
            create(client, "image", IMAGE)
            create(client, "pages", PAGES)
            create(client, "raw", ECHO, annotations=[*EXPORTED, {"key": "raw-http", "value": True}])
            create(client, "crashing", CRASHING)
            create(client, "raising", RAISING)
            create(client, "app-error", APP_ERROR)
            create(
                client,
                "options",
                OPTIONS,
                annotations=[*EXPORTED, {"key": "web-custom-options", "value": True}],
            )
            create(
                client,
                "need-key",
                ECHO,
                annotations=[*EXPORTED, {"key": "require-whisk-auth", "value": True}],
            )
            create(
                client,
                "need-secret",
                ECHO,
                annotations=[*EXPORTED, {"key": "require-whisk-auth", "value": "s3cr3t"}],
            )
            create(
                client,
                "final",
                ECHO,
                annotations=[*EXPORTED, {"key": "final", "value": True}],
                parameters=[{"key": "fixed", "value": "by-owner"}],
            )
            r = client.put(
                "/api/v1/namespaces/_/packages/tools",
                json={"parameters": [{"key": "from", "value": "package"}]},
            )
            assert r.status_code == 200, r.text
            create(client, "tools/echo", ECHO)
            yield client
    finally:
        standalone.stop()
    assert standalone.proc.returncode == 0, standalone.output()


def create(
    api: httpx.Client,
    name: str,
    code: str,
    *,
    annotations: list[dict[str, Any]] | None = None,
    parameters: list[dict[str, Any]] | None = None,
) -> None:
    body = {
        "exec": {"kind": "python:default", "code": code},
        "annotations": EXPORTED if annotations is None else annotations,
        "parameters": parameters or [],
    }
    r = api.put(f"/api/v1/namespaces/_/actions/{name}", json=body, params={"overwrite": "true"})
    assert r.status_code == 200, r.text


def web(api: httpx.Client, method: str, path: str, *, auth: bool = False, **kwargs: Any) -> httpx.Response:
    """A request to `/api/v1/web/guest/<path>`, anonymous unless `auth`."""
    url = f"{api.base_url}/api/v1/web/guest/{path}"
    with httpx.Client(timeout=60, auth=(GUEST_USER, GUEST_SECRET) if auth else None) as client:
        return client.request(method, url, **kwargs)


def assert_error(r: httpx.Response, status: int, message: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == message and body["code"] == r.headers["x-request-id"], body


def test_json_extension_merges_query_and_body_with_the_request_context(api: httpx.Client) -> None:
    r = web(
        api,
        "POST",
        "default/echo.json?a=query&q=1",
        json={"a": "body", "n": 2},
        headers={"X-Probe": "p"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert len(r.headers["x-openwhisk-activation-id"]) == 32
    got = r.json()
    assert got["a"] == "body" and got["q"] == "1" and got["n"] == 2
    assert got["__ow_method"] == "post" and got["__ow_path"] == ""
    assert got["__ow_headers"]["x-probe"] == "p" and "__ow_user" not in got
    assert r.headers["access-control-allow-origin"] == "*"
    # What follows the action is both `__ow_path` and, but for `.http`, the field the answer projects.
    r = web(api, "GET", "default/echo.text/__ow_path")
    assert r.status_code == 200 and r.text == "/__ow_path"


def test_authenticated_caller_is_ow_user_and_its_credentials_stay_hidden(api: httpx.Client) -> None:
    r = web(api, "GET", "default/echo.json", auth=True)
    assert r.status_code == 200, r.text
    assert r.json()["__ow_user"] == "guest"
    assert "authorization" not in r.json()["__ow_headers"]


def test_form_body_and_projection(api: httpx.Client) -> None:
    r = web(api, "POST", "default/echo.json/__ow_headers", data={"x": "1"})
    assert r.status_code == 200, r.text
    assert r.json()["content-type"] == "application/x-www-form-urlencoded"
    r = web(api, "POST", "default/echo.text/x", data={"x": "from a form"})
    assert r.status_code == 200 and r.text == "from a form"
    assert r.headers["content-type"].startswith("text/plain")


def test_http_extension_and_no_extension_answer_the_action_s_response(api: httpx.Client) -> None:
    for path in ("default/page.http?name=web", "default/page?name=web"):
        r = web(api, "GET", path)
        assert r.status_code == 201, r.text
        assert r.text == "<h1>hello web</h1>"
        assert r.headers["content-type"] == "text/html; charset=UTF-8"
        assert r.headers["x-made-by"] == "squall"
        assert r.headers.get_list("set-cookie") == ["a=1", "b=2"]


def test_binary_body_is_decoded_with_its_content_type(api: httpx.Client) -> None:
    r = web(api, "GET", "default/image")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.content == PNG


def test_html_svg_text_extensions(api: httpx.Client) -> None:
    r = web(api, "GET", "default/pages.html")
    assert r.status_code == 200 and r.text == "<p>page</p>"
    assert r.headers["content-type"] == "text/html; charset=UTF-8"
    r = web(api, "GET", "default/pages.svg")
    assert r.status_code == 200 and r.text == "<svg/>" and r.headers["content-type"] == "image/svg+xml"
    r = web(api, "GET", "default/pages.text")
    assert r.status_code == 200 and r.text == "plain words"
    r = web(api, "GET", "default/pages.text/n")
    assert r.status_code == 200 and r.text == "7"


def test_raw_http_gets_the_query_string_and_the_body_as_sent(api: httpx.Client) -> None:
    r = web(
        api,
        "PUT",
        "default/raw.json?a=1&b=two",
        content=b"\x00\x01binary",
        headers={"Content-Type": "image/png"},
    )
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["__ow_query"] == "a=1&b=two" and got["__ow_method"] == "put"
    assert base64.b64decode(got["__ow_body"]) == b"\x00\x01binary"
    assert "a" not in got
    r = web(api, "POST", "default/raw.json", content=b"some text", headers={"Content-Type": "text/plain"})
    assert r.json()["__ow_body"] == "some text"


def test_require_whisk_auth_true_wants_valid_credentials(api: httpx.Client) -> None:
    assert web(api, "GET", "default/need-key.json", auth=True).status_code == 200
    assert web(api, "GET", "default/need-key.json").status_code == 401
    bad = base64.b64encode(f"{GUEST_USER}:wrong".encode()).decode()
    r = web(api, "GET", "default/need-key.json", headers={"Authorization": f"Basic {bad}"})
    assert r.status_code == 401 and set(r.json()) == {"error", "code"}


def test_require_whisk_auth_secret_wants_the_header(api: httpx.Client) -> None:
    r = web(api, "GET", "default/need-secret.json", headers={"X-Require-Whisk-Auth": "s3cr3t"})
    assert r.status_code == 200, r.text
    assert "x-require-whisk-auth" not in r.json()["__ow_headers"]
    assert (
        web(api, "GET", "default/need-secret.json", headers={"X-Require-Whisk-Auth": "nope"}).status_code
        == 401
    )
    assert web(api, "GET", "default/need-secret.json").status_code == 401
    assert (
        web(api, "GET", "default/need-secret.json", auth=True).status_code == 401
    )  # credentials are not the secret


def test_platform_answers_options_with_cors(api: httpx.Client) -> None:
    r = web(
        api,
        "OPTIONS",
        "default/echo.json",
        headers={"Access-Control-Request-Headers": "X-Custom, Content-Type"},
    )
    assert r.status_code == 200 and r.content == b""
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.headers["access-control-allow-headers"] == "X-Custom, Content-Type"
    assert "PATCH" in r.headers["access-control-allow-methods"]
    assert "x-openwhisk-activation-id" not in r.headers  # nothing ran


def test_custom_options_go_to_the_action(api: httpx.Client) -> None:
    r = web(api, "OPTIONS", "default/options")
    assert r.status_code == 200, r.text
    assert r.headers["x-options-by"] == "action"
    assert r.headers["access-control-allow-origin"] == "https://only.example"
    r = web(api, "GET", "default/options.text")
    assert r.text == "not options" and "access-control-allow-origin" not in r.headers


def test_errors_in_openwhisk_s_words(api: httpx.Client) -> None:
    missing = "The requested resource does not exist."
    assert_error(web(api, "GET", "default/nothing.json"), 404, missing)
    assert_error(web(api, "GET", "default/plain.json"), 404, missing)  # exists, not exported
    assert_error(web(api, "GET", "nopkg/echo.json"), 404, missing)
    r = web(api, "GET", "default/echo.xml")
    assert_error(r, 406, "Extension must be specified and one of [.http, .json, .html, .svg, .text].")
    assert r.headers["access-control-allow-origin"] == "*"
    assert_error(
        web(api, "GET", "default/echo.json/no/such/field"),
        404,
        "Response does not include requested property.",
    )
    assert_error(web(api, "GET", "default/pages.json/html"), 400, "Response is not valid 'application/json'.")
    r = web(api, "GET", "default/echo.json?__ow_method=get")
    assert_error(r, 400, "Request defines parameters that are not allowed (e.g., reserved properties).")


def test_failing_actions(api: httpx.Client) -> None:
    r = web(api, "GET", "default/crashing.json")
    assert_error(r, 400, "There was an error processing your request.")
    assert len(r.headers["x-openwhisk-activation-id"]) == 32
    # An application error's `error` field is what the extension shapes: here a string, not JSON.
    assert_error(web(api, "GET", "default/raising.json"), 400, "Response is not valid 'application/json'.")
    r = web(api, "GET", "default/raising.text")
    assert r.status_code == 200 and r.text == "broken"
    r = web(api, "GET", "default/app-error")  # an application error answers its `error` field
    assert r.status_code == 418 and r.text == "teapot"


def test_final_parameters_cannot_be_overridden(api: httpx.Client) -> None:
    r = web(api, "GET", "default/final.json")
    assert r.status_code == 200 and r.json()["fixed"] == "by-owner"
    assert_error(
        web(api, "GET", "default/final.json?fixed=mine"),
        400,
        "Request defines parameters that are not allowed (e.g., reserved properties).",
    )


def test_package_action_gets_package_parameters(api: httpx.Client) -> None:
    r = web(api, "GET", "tools/echo.json?x=1")
    assert r.status_code == 200, r.text
    assert r.json()["from"] == "package" and r.json()["x"] == "1"
    assert_error(web(api, "GET", "default/tools.json"), 404, "The requested resource does not exist.")


def test_web_url_helper_names_a_working_url(api: httpx.Client) -> None:
    url = web_url(str(api.base_url), "guest", "echo", package="tools", extension=".json")
    r = httpx.post(url, json={"via": "helper"}, timeout=60)
    assert r.status_code == 200 and json.loads(r.text)["via"] == "helper"
