"""Shaping an action's result into a web response per extension, with OpenWhisk's errors."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from api.web_request import HTML, HTTP, JSON, SVG, TEXT
from api.web_response import (
    HTML_TYPE,
    HTTP_CONTENT_TYPE_ERROR,
    HTTP_UNKNOWN_CONTENT_TYPE,
    PROPERTY_NOT_FOUND,
    TEXT_TYPE,
    WebAnswer,
    invalid_media,
    project,
    shape,
)
from broker.errors import BadRequest, NotFound


def test_projection_walks_fields_and_404s_on_a_missing_one() -> None:
    result = {"body": {"a": [1, 2]}}
    assert project(result, []) == result
    assert project(result, ["body", "a"]) == [1, 2]
    for path in (["nope"], ["body", "a", "x"]):
        with pytest.raises(NotFound) as caught:
            project(result, path)
        assert caught.value.message == PROPERTY_NOT_FOUND


def test_json_answers_objects_and_arrays_only() -> None:
    answer = shape({"a": 1}, JSON)
    assert answer == WebAnswer(status=200, body=b'{"a":1}', content_type="application/json")
    assert shape([1], JSON).body == b"[1]"
    with pytest.raises(BadRequest, match=re.escape(invalid_media("application/json"))):
        shape("text", JSON)


def test_html_and_svg_take_body_or_their_field_or_a_string() -> None:
    assert shape({"html": "<p>x</p>"}, HTML) == WebAnswer(
        status=200, body=b"<p>x</p>", content_type=HTML_TYPE
    )
    assert shape({"body": "<b/>", "html": "<i/>"}, HTML).body == b"<b/>"
    assert shape("<p/>", HTML).body == b"<p/>"
    assert shape({"svg": "<svg/>"}, SVG).content_type == "image/svg+xml"
    with pytest.raises(BadRequest, match=re.escape(invalid_media("text/html"))):
        shape({"nothing": 1}, HTML)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"text": "hi"}, "hi"),
        ({"body": {"a": 1}}, '{\n  "a": 1\n}'),
        ("plain", "plain"),
        (True, "true"),
        (1.5, "1.5"),
        (None, "null"),
    ],
)
def test_text_renders_values(value: Any, text: str) -> None:
    answer = shape(value, TEXT)
    assert answer.body.decode() == text and answer.content_type == TEXT_TYPE


def test_text_without_body_or_text_field_is_a_404() -> None:
    with pytest.raises(NotFound, match="requested property"):
        shape({"other": 1}, TEXT)


def test_http_string_body_defaults_to_html() -> None:
    answer = shape({"body": "<h1>hi</h1>", "headers": {"X-A": "1", "X-N": 2, "X-B": True}}, HTTP)
    assert answer.status == 200 and answer.body == b"<h1>hi</h1>" and answer.content_type == HTML_TYPE
    assert (
        ("X-A", "1") in answer.headers
        and ("X-N", "2") in answer.headers
        and ("X-B", "true") in answer.headers
    )


def test_http_binary_body_is_base64_decoded() -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00"
    answer = shape(
        {"statusCode": 200, "headers": {"Content-Type": "image/png"}, "body": base64.b64encode(png).decode()},
        HTTP,
    )
    assert answer.body == png and answer.content_type == "image/png"
    with pytest.raises(BadRequest) as caught:
        shape({"headers": {"Content-Type": "image/png"}, "body": "not base64!"}, HTTP)
    assert caught.value.message == HTTP_CONTENT_TYPE_ERROR


def test_http_json_body_is_serialized() -> None:
    answer = shape({"statusCode": "201", "body": {"ok": True}}, HTTP)
    assert answer == WebAnswer(status=201, body=b'{"ok":true}', content_type="application/json")
    with pytest.raises(BadRequest, match="did not match"):
        shape({"headers": {"content-type": "text/plain"}, "body": {"ok": True}}, HTTP)


def test_http_text_type_gets_a_charset_and_multi_valued_headers() -> None:
    answer = shape(
        {"headers": {"content-type": "text/plain", "Set-Cookie": ["a=1", "b=2"]}, "body": "x"}, HTTP
    )
    assert answer.content_type == "text/plain; charset=UTF-8"
    assert [v for k, v in answer.headers if k == "Set-Cookie"] == ["a=1", "b=2"]
    assert all(k.lower() != "content-type" for k, _ in answer.headers)


def test_http_empty_bodies_default_to_204() -> None:
    assert shape({}, HTTP) == WebAnswer(status=204)
    assert shape({"body": ""}, HTTP).status == 204
    redirect = shape({"statusCode": 302, "headers": {"location": "/x"}}, HTTP)
    assert redirect.status == 302 and redirect.headers == [("location", "/x")] and redirect.body == b""


@pytest.mark.parametrize(
    "value",
    [
        [1, 2],
        "text",
        {"statusCode": "abc"},
        {"statusCode": 42},
        {"statusCode": 200.5},
        {"statusCode": True},
        {"headers": "x"},
        {"headers": {"x": {"nested": 1}}},
    ],
)
def test_http_invalid_responses(value: Any) -> None:
    with pytest.raises(BadRequest, match=re.escape(invalid_media("message/http"))):
        shape(value, HTTP)


def test_http_unknown_content_type() -> None:
    with pytest.raises(BadRequest) as caught:
        shape({"headers": {"content-type": "nonsense"}, "body": "x"}, HTTP)
    assert caught.value.message == HTTP_UNKNOWN_CONTENT_TYPE
