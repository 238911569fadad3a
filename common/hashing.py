"""Hashes and the canonical JSON form that hashes and signatures are taken over."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def canonical(obj: Any) -> bytes:
    """JSON with sorted keys, no spaces, UTF-8 kept as is: the bytes a hash or signature is
    taken over (the custody log's form; changing it changes every hash)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks (blocking: call it in a thread on the loop)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
