"""Web action URLs, extensions, media types and the arguments an action gets, as OpenWhisk builds them."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from api.web_request import (
    EXTENSION_NOT_SUPPORTED,
    HTTP,
    JSON,
    PARAMETERS_NOT_ALLOWED,
    TEXT,
    WebRequest,
    auth_allows,
    decode_body,
    is_binary,
    is_on,
    parse_web_path,
    request_arguments,
    split_extension,
    unknown_extension,
    web_url,
)
from broker.entities import KeyValue
from broker.errors import BadRequest


def request(
    *,
    method: str = "POST",
    headers: list[tuple[str, str]] | None = None,
    path: str = "",
    query: list[tuple[str, str]] | None = None,
    query_string: str = "",
    body: bytes = b"",
    content_type: str | None = None,
) -> WebRequest:
    return WebRequest(
        method=method,
        headers=headers or [],
        path=path,
        query=query or [],
        query_string=query_string,
        body=body,
        content_type=content_type,
    )


@pytest.mark.parametrize(
    ("segment", "expected"),
    [
        ("hello.json", ("hello", JSON)),
        ("hello.text", ("hello", TEXT)),
        ("hello", ("hello", HTTP)),
        ("hello.http", ("hello", HTTP)),
        ("hello.xml", ("hello.xml", HTTP)),  # not an extension of ours: part of the name, as in OpenWhisk
        (".json", (".json", HTTP)),
    ],
)
def test_extension_is_split_off_only_when_known(segment: str, expected: tuple[str, str]) -> None:
    assert split_extension(segment) == expected


def test_unknown_extension_is_recognised_for_the_406() -> None:
    assert unknown_extension("hello.xml") == ".xml"
    assert unknown_extension("hello.json") is None
    assert unknown_extension("hello") is None
    assert unknown_extension("v1.2") is None  # digits: a version in a name, not an extension
    assert "[.http, .json, .html, .svg, .text]" in EXTENSION_NOT_SUPPORTED


def test_web_path_splits_action_extension_and_projection() -> None:
    web = parse_web_path("guest", "default", "hello.json/body/a")
    assert (web.namespace, web.package, web.name, web.extension) == ("guest", None, "hello", JSON)
    assert web.rest == "/body/a" and web.projection == ["body", "a"]
    assert web.action_ref == "/guest/hello"
    packaged = parse_web_path("guest", "demo", "hello")
    assert packaged.package == "demo" and packaged.action_ref == "/guest/demo/hello"
    assert packaged.extension == HTTP and packaged.rest == "" and packaged.projection == []


def test_web_url_of_an_action() -> None:
    assert web_url("http://h:3233", "guest", "hello") == "http://h:3233/api/v1/web/guest/default/hello"
    assert (
        web_url("http://h:3233/", "guest", "my hello", package="demo", extension=".json")
        == "http://h:3233/api/v1/web/guest/demo/my%20hello.json"
    )
    with pytest.raises(ValueError, match="unknown web extension"):
        web_url("http://h", "guest", "hello", extension=".xml")


def test_media_types_binary_or_text() -> None:
    for text in ("text/plain", "application/json", "application/ld+json", "image/svg+xml", "application/xml"):
        assert not is_binary(text), text
    for binary in ("image/png", "application/octet-stream", "application/zip", "audio/mpeg"):
        assert is_binary(binary), binary


def test_query_and_json_body_merge_body_last_with_context() -> None:
    args = request_arguments(
        request(
            method="POST",
            headers=[("Content-Type", "application/json"), ("X-Thing", "1"), ("Authorization", "Basic xx")],
            path="/a/b",
            query=[("a", "query"), ("q", "1")],
            body=b'{"a": "body", "n": 2}',
            content_type="application/json",
        ),
        user="guest",
        raw=False,
    )
    assert args == {
        "__ow_method": "post",
        "__ow_headers": {"content-type": "application/json", "x-thing": "1"},
        "__ow_path": "/a/b",
        "__ow_user": "guest",
        "a": "body",
        "q": "1",
        "n": 2,
    }


def test_the_caller_s_credentials_never_reach_the_action() -> None:
    args = request_arguments(
        request(
            headers=[("Authorization", "Basic abc"), ("X-Require-Whisk-Auth", "s3cret"), ("Accept", "*/*")]
        ),
        user=None,
        raw=False,
    )
    assert args["__ow_headers"] == {"accept": "*/*"}
    assert "__ow_user" not in args


def test_form_body_is_merged() -> None:
    args = request_arguments(
        request(body=b"x=1&y=two+words", content_type="application/x-www-form-urlencoded"), None, False
    )
    assert args["x"] == "1" and args["y"] == "two words"


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"[1, 2]", "application/json", [1, 2]),  # JSON that is not an object: __ow_body
        (b"hello", "text/plain", "hello"),
        (b"\x89PNG\x00", "image/png", base64.b64encode(b"\x89PNG\x00").decode()),
        (b"\x00\x01", None, base64.b64encode(b"\x00\x01").decode()),  # no type: octet-stream
    ],
)
def test_other_bodies_arrive_as_ow_body(body: bytes, content_type: str | None, expected: Any) -> None:
    args = request_arguments(request(body=body, content_type=content_type), None, False)
    assert args["__ow_body"] == expected


def test_raw_http_gets_query_string_and_body_unparsed() -> None:
    args = request_arguments(
        request(
            query=[("a", "1")],
            query_string="a=1&b=%20",
            body=b'{"x": 1}',
            content_type="application/json",
        ),
        None,
        True,
    )
    assert args["__ow_query"] == "a=1&b=%20"
    assert base64.b64decode(args["__ow_body"]) == b'{"x": 1}'  # OpenWhisk's legacy: JSON as base64
    assert "a" not in args and "x" not in args
    empty = request_arguments(request(method="GET"), None, True)
    assert empty["__ow_body"] == "" and empty["__ow_query"] == "" and empty["__ow_method"] == "get"
    text = request_arguments(
        request(body=b"x=1", content_type="application/x-www-form-urlencoded"), None, True
    )
    assert text["__ow_body"] == "x=1"


def test_reserved_properties_cannot_be_set_by_the_request() -> None:
    with pytest.raises(BadRequest, match="not allowed") as caught:
        request_arguments(request(query=[("__ow_user", "admin")]), None, False)
    assert caught.value.message == PARAMETERS_NOT_ALLOWED
    with pytest.raises(BadRequest):
        request_arguments(
            request(body=b'{"__ow_method": "get"}', content_type="application/json"), None, False
        )


def test_malformed_json_body_is_a_400() -> None:
    with pytest.raises(BadRequest, match="malformed"):
        decode_body(b"{nope", "application/json", raw=False)


def test_require_whisk_auth_both_forms() -> None:
    assert auth_allows(None, {}, authenticated=False)
    assert auth_allows(True, {}, authenticated=True)
    assert not auth_allows(True, {}, authenticated=False)
    assert auth_allows("s3cret", {"x-require-whisk-auth": "s3cret"}, authenticated=False)
    assert not auth_allows("s3cret", {"x-require-whisk-auth": "wrong"}, authenticated=True)
    assert not auth_allows("s3cret", {}, authenticated=True)
    assert auth_allows(42, {"x-require-whisk-auth": "42"}, authenticated=False)
    assert not auth_allows({"a": 1}, {"x-require-whisk-auth": "{}"}, authenticated=True)


def test_annotations_are_on_only_when_true() -> None:
    pairs = [KeyValue(key="web-export", value=True), KeyValue(key="raw-http", value="true")]
    assert is_on(pairs, "web-export")
    assert not is_on(pairs, "raw-http")
    assert not is_on(pairs, "web-custom-options")
