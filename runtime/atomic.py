"""Atomic file writes: a temporary file in the target's directory, fsync, then rename over the target.

A reader (or a process killed mid-write) sees either the old file, no file, or the complete new file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(src: str | Path, dst: str | Path) -> None:
    """Moves a finished file into place atomically (same filesystem), durable before and after the rename."""
    with open(src, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(src, dst)
    _fsync_dir(Path(dst).parent)


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path beside ``target``; on success it is fsynced and renamed to ``target``.

    On an exception the temporary file is removed and ``target`` is left untouched.
    """
    target = Path(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts and images are meant to be shared
    try:
        yield tmp
        publish(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(target: str | Path, obj: Any) -> None:
    atomic_write_bytes(target, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
