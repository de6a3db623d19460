"""Command arguments turned into request bodies (pure): `-p`/`-P` parameters, `-a`/`-A` annotations, kinds
inferred from file names, action code, `--web` and limits, as wsk builds them."""

from __future__ import annotations

import base64
import io
import json
import secrets
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from squall.client.api_client import ClientError

KIND_BY_EXTENSION: Final = {".js": "nodejs:default", ".py": "python:default"}
WEB_EXPORT: Final = "web-export"
RAW_HTTP: Final = "raw-http"
FINAL: Final = "final"
WEB_SECURE: Final = "require-whisk-auth"


def parse_value(text: str) -> Any:
    """wsk's rule for `-p KEY VALUE`: a value that parses as JSON is that JSON, anything else a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def key_values(pairs: Iterable[tuple[str, str]], files: Iterable[str] = ()) -> list[dict[str, Any]]:
    """`-p K V` pairs and `-P file.json` objects as OpenWhisk's `[{key, value}]`; later ones win."""
    merged: dict[str, Any] = {}
    for path in files:
        merged.update(read_json_object(path))
    for key, value in pairs:
        merged[key] = parse_value(value)
    return [{"key": key, "value": value} for key, value in merged.items()]


def payload(pairs: Iterable[tuple[str, str]], files: Iterable[str] = ()) -> dict[str, Any]:
    """An invoke's or fire's body: the same parameters as one object."""
    return {kv["key"]: kv["value"] for kv in key_values(pairs, files)}


def read_json_object(path: str) -> dict[str, Any]:
    try:
        found = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ClientError(f"File '{path}' is not a valid file or it does not exist.") from None
    except ValueError as exc:
        raise ClientError(f"File '{path}' is not valid JSON: {exc}") from None
    if not isinstance(found, dict):
        raise ClientError(f"File '{path}' must hold a JSON object.")
    return found


def kind_of(path: str, kind: str | None, data: bytes) -> str:
    """The action's kind: `--kind` when given, else the file's extension (a zip by what it holds)."""
    if kind:
        return kind
    suffix = Path(path).suffix.lower()
    if suffix in KIND_BY_EXTENSION:
        return KIND_BY_EXTENSION[suffix]
    if suffix == ".zip":
        try:
            names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
        except zipfile.BadZipFile:
            raise ClientError(f"File '{path}' is not a valid zip file.") from None
        if "__main__.py" in names:
            return "python:default"
        if "package.json" in names or "index.js" in names:
            return "nodejs:default"
    raise ClientError(
        f"Cannot infer the kind of '{path}' from its name: give --kind (e.g. python:default, nodejs:default)."
    )


def code_exec(path: str, kind: str | None, main: str | None) -> dict[str, Any]:
    """`exec` of a code action read from a file: text as it is, a zip (or any binary) in base64."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ClientError(f"File '{path}' is not a valid file or it does not exist.") from None
    resolved = kind_of(path, kind, data)
    binary = path.lower().endswith(".zip")
    if not binary:
        try:
            code = data.decode()
        except UnicodeDecodeError:
            binary = True
    if binary:
        code = base64.b64encode(data).decode()
    found: dict[str, Any] = {"kind": resolved, "code": code, "binary": binary}
    if main:
        found["main"] = main
    return found


def sequence_exec(components: str, qualify: Any) -> dict[str, Any]:
    names = [c.strip() for c in components.split(",") if c.strip()]
    if not names:
        raise ClientError("A sequence needs at least one action: --sequence a,b,c.")
    return {"kind": "sequence", "components": [qualify(name) for name in names]}


def limits(
    timeout: int | None, memory: int | None, logsize: int | None, concurrency: int | None
) -> dict[str, int]:
    found = {"timeout": timeout, "memory": memory, "logs": logsize, "concurrency": concurrency}
    return {key: value for key, value in found.items() if value is not None}


def web_annotations(web: str | None, web_secure: str | None) -> dict[str, Any]:
    """`--web true|false|raw` and `--web-secure SECRET|true|false` as wsk's annotations."""
    found: dict[str, Any] = {}
    if web is not None:
        value = web.lower()
        if value in ("true", "yes"):
            found |= {WEB_EXPORT: True, RAW_HTTP: False, FINAL: True}
        elif value == "raw":
            found |= {WEB_EXPORT: True, RAW_HTTP: True, FINAL: True}
        elif value in ("false", "no"):
            found |= {WEB_EXPORT: False, RAW_HTTP: False, FINAL: False}
        else:
            raise ClientError(
                f"Invalid argument '{web}' for --web flag. Valid input consist of 'yes', 'true', 'raw', 'false', or 'no'."
            )
    if web_secure is not None:
        if web_secure.lower() == "true":
            # As wsk: a generated secret, a number the caller sends as X-Require-Whisk-Auth.
            found[WEB_SECURE] = secrets.randbelow(2**53)
        elif web_secure.lower() == "false":
            found[WEB_SECURE] = False
        else:
            found[WEB_SECURE] = web_secure
    return found


def merge_annotations(listed: list[dict[str, Any]], extra: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Annotations given with -a/-A, then the ones flags imply (`--web`), which win."""
    merged = {kv["key"]: kv["value"] for kv in listed} | dict(extra)
    return [{"key": key, "value": value} for key, value in merged.items()]


def annotation(record: Mapping[str, Any], key: str) -> Any:
    for kv in record.get("annotations") or []:
        if kv.get("key") == key:
            return kv.get("value")
    return None
