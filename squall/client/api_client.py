"""The HTTP client of the `squall` commands: OpenWhisk's REST API over httpx, errors as `ClientError`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final
from urllib.parse import quote

import httpx

from squall.client.config import ClientConfig

# wsk's exit codes: 1 for a general error, 3 when the API cannot be reached, 148 (404 - 256) for a resource
# that does not exist, so that scripts can tell "absent" from "failed".
EXIT_GENERAL: Final = 1
EXIT_NETWORK: Final = 3
EXIT_NOT_FOUND: Final = 148
TIMEOUT_S: Final = 75.0  # past the API's 60 s blocking wait, so that a blocking invoke gets its 202


class ClientError(Exception):
    """A failed command: the message to print and the exit status."""

    def __init__(self, message: str, *, status: int | None = None, exit_code: int = EXIT_GENERAL) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.exit_code = exit_code
        self.body: Any = None


def segment(part: str) -> str:
    """One path segment of an entity name, quoted as OpenWhisk's names allow (`@`, `&`, spaces)."""
    return quote(part, safe="@&")


def error_message(status: int, body: Any, text: str) -> str:
    """OpenWhisk's error shape `{"error", "code"}` as wsk prints it; else an activation's error result."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, str):
            code = body.get("code")
            return f"{error} (code {code})" if code else error
        result = (body.get("response") or {}).get("result")
        if isinstance(result, dict) and "error" in result:
            inner = result["error"]
            return inner if isinstance(inner, str) else str(inner)
    return text.strip() or f"HTTP {status}"


class Api:
    """One connection pool to `{apihost}/api/v1`, authenticated with the configured key."""

    def __init__(self, config: ClientConfig, *, timeout: float = TIMEOUT_S) -> None:
        if not config.apihost:
            raise ClientError(
                "The API host is not valid: set one with `squall property set --apihost URL` (or --apihost)."
            )
        self.config = config
        self.base = f"{config.apihost}/api/{config.apiversion}"
        self.http = httpx.Client(
            base_url=self.base,
            auth=config.credentials,
            # Plain http needs no certificates: loading the CA bundle is most of a short command's set-up.
            verify=not config.insecure and self.base.startswith("https:"),
            timeout=timeout,
            headers={"User-Agent": "squall-cli"},
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def require_auth(self) -> None:
        if self.config.credentials is None:
            raise ClientError(
                "The API key is not valid: set one with `squall property set --auth UUID:KEY` (or --auth)."
            )

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        ok: tuple[int, ...] = (),
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send a request; a status outside 2xx (and outside `ok`) raises ClientError with the server's message."""
        if not path.startswith(("/", "http")):
            self.require_auth()
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        try:
            response = self.http.request(method, path, params=query, json=json, headers=headers)
        except httpx.TransportError as exc:
            raise ClientError(f"Cannot reach the API at {self.base}: {exc}", exit_code=EXIT_NETWORK) from None
        if response.is_success or response.status_code in ok:
            return response
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        error = ClientError(
            error_message(response.status_code, body, response.text),
            status=response.status_code,
            exit_code=EXIT_NOT_FOUND if response.status_code == 404 else EXIT_GENERAL,
        )
        error.body = body
        raise error

    def get(self, path: str, **params: Any) -> Any:
        return _json(self.request("GET", path, params=params))

    def put(self, path: str, body: Any, **params: Any) -> Any:
        return _json(self.request("PUT", path, params=params, json=body))

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return _json(self.request("POST", path, params=params, json=body))

    def delete(self, path: str, **params: Any) -> Any:
        return _json(self.request("DELETE", path, params=params))

    @contextmanager
    def stream(
        self, path: str, *, params: Mapping[str, Any], headers: Mapping[str, str], read_s: float | None = None
    ) -> Iterator[httpx.Response]:
        """A streamed GET (Server-Sent Events); errors as `request`'s, network errors left to the caller."""
        self.require_auth()
        query = {k: _query_value(v) for k, v in params.items() if v is not None}
        timeout = httpx.Timeout(10.0, read=read_s)
        with self.http.stream("GET", path, params=query, headers=headers, timeout=timeout) as response:
            if not response.is_success:
                response.read()
                try:
                    body: Any = response.json()
                except ValueError:
                    body = None
                raise ClientError(
                    error_message(response.status_code, body, response.text), status=response.status_code
                )
            yield response


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _json(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text
