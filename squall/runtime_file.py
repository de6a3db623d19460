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
    """Write the file for as long as the block runs; it holds no secrets (keys stay in the store)."""
    path = data_dir / FILENAME
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(codec.encode(info))
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
