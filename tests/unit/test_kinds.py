"""The runtime catalog: kind resolution, the 400 for unsupported kinds, binary detection, `GET /` shape."""

from __future__ import annotations

import base64

import pytest

from broker import kinds
from broker.errors import BadRequest


@pytest.mark.parametrize(
    ("requested", "stored"),
    [
        ("python:default", "python:3.11"),
        ("python:3", "python:3.11"),
        ("python:3.11", "python:3.11"),
        ("nodejs:default", "nodejs:18"),
        ("nodejs:18", "nodejs:18"),
        ("  NodeJS:Default ", "nodejs:18"),
        ("sequence", "sequence"),
    ],
)
def test_kinds_resolve_to_what_is_stored(requested: str, stored: str) -> None:
    assert kinds.resolve_kind(requested) == stored


@pytest.mark.parametrize("kind", ["blackbox", "python:3.10", "nodejs:20", "java:8", "", "python"])
def test_unsupported_kinds_are_bad_requests_naming_the_valid_ones(kind: str) -> None:
    with pytest.raises(BadRequest) as raised:
        kinds.resolve_kind(kind)
    assert raised.value.message == (
        f"The specified runtime '{kind}' is not supported by this platform. Valid values are: "
        "'go:1.19', 'go:default', 'java:17', 'java:default', 'native', 'native:default', 'nodejs:18', "
        "'nodejs:default', 'php:8', 'php:8.2', 'php:default', 'python:3', 'python:3.11', 'python:default', "
        "'ruby:3', 'ruby:3.1', 'ruby:default', 'rust:1.63', 'rust:default', 'sequence'."
    )


def test_every_runnable_kind_has_an_image_family() -> None:
    assert kinds.image_family("python:3.11") == "python"
    assert kinds.image_family("nodejs:18") == "nodejs"
    with pytest.raises(BadRequest):
        kinds.image_family("sequence")
    assert kinds.runtime_of("python:default") is None  # only concrete kinds are stored


@pytest.mark.parametrize(
    ("code", "binary"),
    [
        (base64.b64encode(b"PK\x03\x04zip bytes").decode(), True),
        ("QUJD", True),
        ("QUI=", True),
        ("QQ==", True),
        ("  QUJD\n", True),  # trimmed first, as OpenWhisk does
        ("", False),
        ("QUJ", False),  # length not a multiple of 4
        ("Q===", False),
        ("====", False),
        ("QQ=A", False),
        ("def main(args): return args", False),
        ("abc!", False),
    ],
)
def test_binary_code_is_base64_as_openwhisk_decides(code: str, binary: bool) -> None:
    assert kinds.is_binary_code(code) is binary


def test_runtimes_document_lists_each_family_with_its_default() -> None:
    doc = kinds.runtimes_document()
    assert set(doc) == {"python", "nodejs", "go", "java", "ruby", "php", "rust", "native"}
    assert doc["python"] == [
        {
            "kind": "python:3.11",
            "image": "squall-python",
            "deprecated": False,
            "default": True,
            "attached": False,
            "requireMain": False,
        }
    ]
    assert [r["kind"] for r in doc["nodejs"]] == ["nodejs:18"]
