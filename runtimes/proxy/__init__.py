"""The in-container proxies shipped with Squall, and their installation where rootless containers can read them."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

from broker.errors import InternalError, Unavailable

PROXY_FILES = (
    "python_proxy.py",
    "node_proxy.js",
    "loop_proxy.py",
    "launchers/native.py",
    "launchers/launcher.rb",
    "launchers/launcher.php",
    "launchers/launcher.go",
    "launchers/launcher.rs",
)


def proxy_dir() -> Path:
    """The directory of the shipped proxy files (inside the installed package or the checkout)."""
    return Path(__file__).resolve().parent


def proxy_digest(source: Path | None = None) -> str:
    """12 hex digits naming the proxies' content: an installed copy is reused exactly while it matches."""
    source = source or proxy_dir()
    digest = hashlib.sha256()
    for name in PROXY_FILES:
        content = (source / name).read_bytes()
        digest.update(b"%s\0%d\0" % (name.encode(), len(content)))
        digest.update(content)
    return digest.hexdigest()[:12]


def install_proxies(dest: Path, owner_uid: int, owner_gid: int) -> Path:
    """Copy the proxies into `dest/<digest>/` unless an identical copy is there, and return that directory.

    The copy belongs to `owner_uid:owner_gid` (the rootless engine's user) with modes 0755/0644, since a
    container runs as that user (or a subordinate id of it) and root's home or the checkout may not be
    traversable for it. `dest` and its ancestors must be traversable by the owner (Unavailable otherwise).
    Safe to call concurrently: a copy is assembled aside and renamed into place.
    """
    source = proxy_dir()
    target = dest / proxy_digest(source)
    _ensure_dir(dest, owner_uid, owner_gid)
    _check_traversable(dest, owner_uid, owner_gid)
    if _matches(target, source):
        return target
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=dest))
    try:
        for name in PROXY_FILES:
            if not (staging / name).parent.is_dir():
                (staging / name).parent.mkdir()
                _own((staging / name).parent, owner_uid, owner_gid, 0o755)
            shutil.copyfile(source / name, staging / name)
            _own(staging / name, owner_uid, owner_gid, 0o644)
        _own(staging, owner_uid, owner_gid, 0o755)
        if target.exists() and not _matches(target, source):
            shutil.rmtree(target)  # damaged: an identical copy replaces it
        try:
            staging.rename(target)
        except OSError:
            if not _matches(target, source):  # not another installer that got there first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _matches(target: Path, source: Path) -> bool:
    try:
        return all((target / n).read_bytes() == (source / n).read_bytes() for n in PROXY_FILES)
    except OSError:
        return False


def _ensure_dir(path: Path, uid: int, gid: int) -> None:
    """Create `path` (and missing parents) for the owner; existing directories are left as they are."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o755)
            _own(directory, uid, gid, 0o755)


def _own(path: Path, uid: int, gid: int, mode: int) -> None:
    os.chmod(path, mode)
    if os.geteuid() == 0:
        os.chown(path, uid, gid)
    elif os.geteuid() != uid:
        raise Unavailable(
            f"cannot give {path} to uid {uid}: install the proxies as root or as the engine's user"
        )


def _check_traversable(path: Path, uid: int, gid: int) -> None:
    if uid == 0:
        return
    for directory in (path, *path.parents):
        try:
            st = directory.stat()
        except OSError as exc:
            raise InternalError(f"cannot inspect {directory}: {exc}") from None
        if st.st_uid == uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid == gid:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            raise Unavailable(
                f"the proxies cannot be installed in {path}: uid {uid} cannot traverse {directory} "
                f"(mode {stat.filemode(st.st_mode)}, owner {st.st_uid}:{st.st_gid})"
            )
