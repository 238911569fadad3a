"""Durable file writes: exclusive create with mode 0600, and atomic replace (blocking: call
them in a thread on the event loop)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_exclusive(path: Path, data: bytes) -> None:
    """Create ``path`` (it must not exist), mode 0600, and write ``data`` to the disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a new or renamed file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: a reader sees the old content or the new, never a part."""
    tmp = path.with_name(path.name + f".tmp-{secrets.token_hex(4)}")
    write_exclusive(tmp, data)
    os.replace(tmp, path)
    fsync_dir(path.parent)
