"""The small file a running standalone leaves in its data dir so other commands can find its servers."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import msgspec

from broker import codec

FILENAME = "standalone.json"


class RuntimeInfo(msgspec.Struct, frozen=True, kw_only=True):
    pid: int
    api_url: str
    nats_url: str
    mongodb_uri: str


@contextlib.contextmanager
def published(data_dir: Path, info: RuntimeInfo) -> Iterator[None]:
    """Write the file for as long as the block runs. Only its owner may read it: the NATS URL carries the
    embedded server's credentials (API keys stay in the store, hashed)."""
    path = data_dir / FILENAME
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(codec.encode(info))
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def read(data_dir: Path) -> RuntimeInfo | None:
    """The running standalone's info, or None when none runs on `data_dir`."""
    try:
        info = msgspec.json.decode((data_dir / FILENAME).read_bytes(), type=RuntimeInfo)
    except (OSError, msgspec.DecodeError):
        return None
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return None  # a stale file from a standalone that was killed
    except PermissionError:
        pass
    return info
