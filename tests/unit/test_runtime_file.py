"""The standalone's runtime file: present while it runs, ignored when stale, never left behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from squall import runtime_file
from squall.runtime_file import RuntimeInfo


def info(pid: int) -> RuntimeInfo:
    return RuntimeInfo(pid=pid, api_url="http://x", nats_url="nats://x", mongodb_uri="mongodb://x")


def test_published_while_running_and_removed_after(tmp_path: Path) -> None:
    with runtime_file.published(tmp_path, info(os.getpid())):
        assert runtime_file.read(tmp_path) == info(os.getpid())
    assert runtime_file.read(tmp_path) is None
    assert not (tmp_path / runtime_file.FILENAME).exists()


def test_a_file_of_a_dead_process_is_ignored(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    with runtime_file.published(tmp_path, info(dead.pid)):
        assert runtime_file.read(tmp_path) is None


def test_garbage_is_ignored(tmp_path: Path) -> None:
    (tmp_path / runtime_file.FILENAME).write_text("{not json")
    assert runtime_file.read(tmp_path) is None
