"""Client configuration as `wsk` keeps it: a `~/.wskprops` file of KEY=VALUE lines, overridden by the
environment (`__OW_API_HOST`, `__OW_API_KEY`, `__OW_NAMESPACE`) and by flags (`--apihost`, `--auth`, `-i`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# The keys wsk writes; others found in a file are kept as they are.
APIHOST: Final = "APIHOST"
AUTH: Final = "AUTH"
NAMESPACE: Final = "NAMESPACE"
APIVERSION: Final = "APIVERSION"
DEFAULT_NAMESPACE: Final = "_"
DEFAULT_APIVERSION: Final = "v1"


def default_path(home: Path) -> Path:
    return home / ".wskprops"


def parse_props(text: str) -> dict[str, str]:
    """KEY=VALUE lines as wsk reads them: blank lines and `#` comments skipped, the first `=` splits, and
    surrounding spaces are not part of a key or value."""
    props: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        props[key.strip()] = value.strip()
    return props


def dump_props(props: Mapping[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in props.items() if value != "")


def read_props(path: Path) -> dict[str, str]:
    try:
        return parse_props(path.read_text())
    except FileNotFoundError:
        return {}


def write_props(path: Path, props: Mapping[str, str]) -> None:
    """Write the file readable by its owner only: it holds a key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(dump_props(props))


def normalize_apihost(host: str) -> str:
    """wsk's rule: a host without a scheme is reached over https; a trailing slash or `/api/v1` is dropped."""
    host = host.strip().rstrip("/")
    if host.endswith("/api/v1"):
        host = host[: -len("/api/v1")]
    if "://" not in host:
        host = f"https://{host}"
    return host


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """What a command needs to reach the API: resolved once per command."""

    apihost: str | None  # with its scheme; None when nothing set it
    auth: str | None  # "uuid:key"
    namespace: str  # "_" = the key's own
    insecure: bool = False
    apiversion: str = DEFAULT_APIVERSION

    @property
    def credentials(self) -> tuple[str, str] | None:
        if not self.auth or ":" not in self.auth:
            return None
        user, _, secret = self.auth.partition(":")
        return user, secret


def resolve(
    props: Mapping[str, str],
    *,
    apihost: str | None = None,
    auth: str | None = None,
    namespace: str | None = None,
    insecure: bool = False,
) -> ClientConfig:
    """Flags (or their environment variables, which click reads into them) win over the file."""
    host = apihost or props.get(APIHOST) or None
    return ClientConfig(
        apihost=normalize_apihost(host) if host else None,
        auth=auth or props.get(AUTH) or None,
        namespace=namespace or props.get(NAMESPACE) or DEFAULT_NAMESPACE,
        insecure=insecure,
        apiversion=props.get(APIVERSION) or DEFAULT_APIVERSION,
    )
