"""Compiled action artefacts kept on the invoker's host by code hash, so a second container does not recompile.

Containers never see this directory: the pool hands a container the artefact of exactly the code it is
initializing (in /init's body) and takes a new one from the proxy's /artefact, which is a snapshot made right
after the compile step, before the launcher (the action's own code) started. The key includes the namespace
that owns the action, so one tenant's artefact is never served to another even for identical code: compile
steps can run the action's code (a Rust build.rs), and what such code builds must not reach anyone else.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from broker.config import Settings


def artefact_key(owner: str, kind: str, main: str, code: str, binary: bool) -> str:
    """The cache key of one compilation: sha256 of everything the compile step depends on."""
    digest = hashlib.sha256()
    for part in (owner, kind, main, "binary" if binary else "text", code):
        encoded = part.encode()
        digest.update(b"%d:" % len(encoded))
        digest.update(encoded)
    return digest.hexdigest()


def owner_of(pool_key: str) -> str:
    """The owning namespace of a pool key ("ns/[pkg/]name@rev[#invoker ns]")."""
    return pool_key.partition("/")[0]


class ArtefactCache:
    """A directory of `<key>` files, least recently used first out past `max_bytes`. Thread-safe enough for
    one invoker: writes are atomic renames, and a file removed under a reader is a miss."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> ArtefactCache:
        directory = Path(settings.artefact_cache_dir or settings.data_dir / "artefacts").expanduser()
        return cls(directory, settings.artefact_cache_mb * 1024 * 1024)

    def get(self, key: str) -> bytes | None:
        path = self.directory / key
        try:
            data = path.read_bytes()
        except OSError:
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: evicted last
        return data

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(temporary, self.directory / key)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self._evict()

    def _evict(self) -> None:
        entries = []
        for path in self.directory.iterdir():
            with contextlib.suppress(OSError):
                st = path.stat()
                entries.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            with contextlib.suppress(OSError):
                path.unlink()
                total -= size
