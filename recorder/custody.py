"""The custody log: an append-only Merkle log of everything that happens to evidence.

Storage (in ``<data_dir>/custody/``):

* ``entries.log``: one canonical JSON entry per line; the leaf is ``SHA-256(0x00 || line)``.
* ``heads.log``: signed tree heads (STH), one JSON object per line.

Every append is flushed and fsynced before it returns. A line cut short by a crash is dropped
(and the file truncated back to the last complete line) when the log is opened. Callers on the
event loop use the ``*_async`` methods, which run the file work in the log's own thread.

Entry fields: ``index``, ``type``, ``time`` (UTC, RFC 3339 with milliseconds), ``actor``,
``case``, ``room``, ``reason``, plus type-specific fields. Types used so far:
``recording.started``, ``segment.written``, ``recording.stopped``, ``recording.sealed``,
``recording.recovered``, ``recording.viewed``, ``recording.verified``, ``recording.exported``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import struct
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import merkle
from .keys import key_id, sign, verify_signature

STH_CONTEXT = b"remotecase-sth-v1\x00"


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def utc_now() -> str:
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class TreeHead:
    tree_size: int
    timestamp_ms: int
    root_hash: str  # hex
    key_id: str
    signature: str  # base64 Ed25519 over signed_bytes()

    def signed_bytes(self) -> bytes:
        return STH_CONTEXT + struct.pack(">QQ", self.tree_size, self.timestamp_ms) + \
            bytes.fromhex(self.root_hash)

    def to_json(self) -> dict[str, Any]:
        return {"tree_size": self.tree_size, "timestamp_ms": self.timestamp_ms,
                "root_hash": self.root_hash, "key_id": self.key_id,
                "signature": self.signature}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TreeHead:
        return cls(int(data["tree_size"]), int(data["timestamp_ms"]), str(data["root_hash"]),
                   str(data["key_id"]), str(data["signature"]))

    def verify(self, public: Ed25519PublicKey) -> bool:
        try:
            message = self.signed_bytes()
        except (ValueError, struct.error):  # a malformed root hash or size
            return False
        return verify_signature(public, self.signature, message)


def _read_lines(path: Path) -> list[bytes]:
    """Complete lines of an append-only file; a torn last line is cut off the file."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with open(path, "r+b") as fh:
            fh.truncate(end)
            fh.flush()
            os.fsync(fh.fileno())
        data = data[:end]
    return [line for line in data.split(b"\n") if line]


class CustodyLog:
    def __init__(self, directory: Path, signing_key: Ed25519PrivateKey) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._key = signing_key
        self.public_key = signing_key.public_key()
        self.key_id = key_id(self.public_key)
        self._entries_path = directory / "entries.log"
        self._heads_path = directory / "heads.log"
        self._lock = threading.Lock()
        # another process (the CLI exporting while the server runs) may append too: every
        # write takes an exclusive lock on this file and first reads what others appended
        self._lock_path = directory / "log.lock"
        self._lines = _read_lines(self._entries_path)
        self._leaves = [merkle.leaf_hash(line) for line in self._lines]
        self._heads = [TreeHead.from_json(json.loads(h)) for h in _read_lines(self._heads_path)]
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="custody")

    # -- writing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        with self._lock, open(self._lock_path, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                self._catch_up()
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _catch_up(self) -> None:
        lines = _read_lines(self._entries_path)
        for line in lines[len(self._lines):]:
            self._lines.append(line)
            self._leaves.append(merkle.leaf_hash(line))
        heads = _read_lines(self._heads_path)
        for raw in heads[len(self._heads):]:
            self._heads.append(TreeHead.from_json(json.loads(raw)))

    def refresh(self) -> None:
        """Read entries other processes appended."""
        with self._exclusive():
            pass

    def append(self, entry_type: str, *, actor: str, reason: str = "", case: str = "",
               room: str = "", **fields: Any) -> dict[str, Any]:
        with self._exclusive():
            entry = {"index": len(self._lines), "type": entry_type, "time": utc_now(),
                     "actor": actor, "case": case, "room": room, "reason": reason, **fields}
            line = canonical(entry)
            if b"\n" in line:  # pragma: no cover - canonical JSON escapes newlines
                raise ValueError("entry must serialize to one line")
            with open(self._entries_path, "ab") as fh:
                fh.write(line + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            self._lines.append(line)
            self._leaves.append(merkle.leaf_hash(line))
            return entry

    def sign_head(self) -> TreeHead:
        with self._exclusive():
            size = len(self._leaves)
            head = TreeHead(size, int(datetime.datetime.now(datetime.UTC).timestamp() * 1000),
                            merkle.root(self._leaves).hex(), self.key_id, "")
            head = TreeHead(head.tree_size, head.timestamp_ms, head.root_hash, head.key_id,
                            sign(self._key, head.signed_bytes()))
            with open(self._heads_path, "ab") as fh:
                fh.write(canonical(head.to_json()) + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            self._heads.append(head)
            return head

    async def append_async(self, entry_type: str, **kwargs: Any) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: self.append(entry_type, **kwargs))

    async def sign_head_async(self) -> TreeHead:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.sign_head)

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    # -- reading ---------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self._lines)

    def entry(self, index: int) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self._lines[index])
        return result

    def entry_line(self, index: int) -> bytes:
        return self._lines[index]

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._lines]

    def heads(self) -> list[TreeHead]:
        return list(self._heads)

    def latest_head(self) -> TreeHead | None:
        return self._heads[-1] if self._heads else None

    def inclusion_proof(self, index: int, tree_size: int) -> list[str]:
        return [h.hex() for h in merkle.inclusion_proof(index, self._leaves[:tree_size])]

    def consistency_proof(self, old_size: int, new_size: int) -> list[str]:
        return [h.hex() for h in merkle.consistency_proof(old_size, self._leaves[:new_size])]


@dataclass
class LogProblem:
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


def verify_log(directory: Path, public: Ed25519PublicKey) -> list[LogProblem]:
    """Check a custody log directory with only the public key; an empty list means it holds.

    Every signed tree head must verify and match the entries' Merkle root at its size (an edited,
    removed or reordered entry changes the root; a head signed over other entries is a fork);
    heads never shrink; the log holds at least as many entries as its newest head.
    """
    problems: list[LogProblem] = []
    entries_path = directory / "entries.log"
    heads_path = directory / "heads.log"
    lines = [line for line in entries_path.read_bytes().split(b"\n") if line] \
        if entries_path.exists() else []
    leaves = [merkle.leaf_hash(line) for line in lines]
    for i, line in enumerate(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            problems.append(LogProblem(f"entry {i}", "not JSON"))
            continue
        if entry.get("index") != i:
            problems.append(LogProblem(f"entry {i}", f"says index {entry.get('index')}: "
                                                     "entries removed or reordered"))
    heads_raw = [h for h in heads_path.read_bytes().split(b"\n") if h] \
        if heads_path.exists() else []
    previous: TreeHead | None = None
    good_size = 0  # the largest size at which entries still match a signed head
    for n, raw in enumerate(heads_raw):
        try:
            head = TreeHead.from_json(json.loads(raw))
        except (ValueError, KeyError):
            problems.append(LogProblem(f"tree head {n}", "malformed"))
            continue
        if not head.verify(public):
            problems.append(LogProblem(f"tree head {n} (size {head.tree_size})",
                                       "signature does not verify with this public key"))
            continue
        if previous is not None and head.tree_size < previous.tree_size:
            problems.append(LogProblem(f"tree head {n}", "tree shrank"))
        if head.tree_size > len(leaves):
            problems.append(LogProblem(
                f"tree head {n}",
                f"signed {head.tree_size} entries but the log holds {len(leaves)}: truncated"))
        elif merkle.root(leaves[:head.tree_size]).hex() != head.root_hash:
            where = (f"entries {good_size}..{head.tree_size - 1}"
                     if good_size < head.tree_size else "entries before it")
            problems.append(LogProblem(
                f"tree head {n} (size {head.tree_size})",
                f"entries do not match the signed root: {where} were changed, removed, "
                "reordered, or the log forked"))
        else:
            good_size = max(good_size, head.tree_size)
        previous = head
    return problems


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
