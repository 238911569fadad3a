"""The custody log: an append-only Merkle log of everything that happens to evidence.

Storage (in ``<data_dir>/custody/``):

* ``entries.log``: one canonical JSON entry per line; the leaf is ``SHA-256(0x00 || line)``.
* ``heads.log``: signed tree heads (STH), one JSON object per line, each countersigned by the
  witness when one is configured (see :mod:`recorder.witness`).

Every append is flushed and fsynced before it returns. A line cut short by a crash is dropped
(and the file truncated back to the last complete line) when the log is opened. Callers on the
event loop use the ``*_async`` methods, which run the file work in the log's own thread.

Entry fields: ``index``, ``type``, ``time`` (UTC, RFC 3339 with milliseconds), ``actor``,
``case``, ``room``, ``reason``, plus type-specific fields. Types used so far:
``recording.started``, ``segment.written``, ``recording.stopped``, ``recording.sealed``,
``recording.recovered``, ``recording.viewed``, ``recording.verified``, ``recording.exported``,
``recording.retention_changed``, ``recording.deleted``, ``keys.signing_rotated``,
``keys.kek_rotated``.

An entry is trusted only once a signed tree head covers it. The types that change what a
verifier accepts (a deletion, a retention change, a key rotation) are therefore committed under
a new signed head in the same locked step as their append (``SIGN_AT_ONCE``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import struct
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.hashing import canonical

from . import merkle
from .keys import (
    ROTATION_CONTEXT,
    STH_CONTEXT,
    KeyProblem,
    key_id,
    public_from_raw,
    raw_public,
    sign,
    sign_in_context,
    verify_in_context,
    verify_signature,
)

STH_CONTEXT_V1 = b"remotecase-sth-v1\x00"  # heads before the key ID was signed
# Entries that get a signed (and witnessed) head of their own at once, so that none of them can
# be cut from the end of the log before the next seal: deletions and key changes, and every
# access to evidence (rare next to segments and verdicts, which the next seal covers).
SIGN_AT_ONCE = frozenset(
    {
        "recording.deleted",
        "recording.retention_changed",
        "keys.signing_rotated",
        "keys.kek_rotated",
        "recording.viewed",
        "recording.verified",
        "recording.streamed",
        "recording.downloaded",
        "material.received",
        "material.downloaded",
        "evidence.display_started",
        "evidence.display_ended",
        "verification.reference_deleted",
    }
)
ROTATION = "keys.signing_rotated"


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
    version: int = 2
    # the witness's countersignature (see recorder.witness); not part of what the log signs
    witness: dict[str, Any] | None = None

    def signed_bytes(self) -> bytes:
        """v2: ``remotecase-sth-v2\\0 || uint64 size || uint64 time_ms || root || key_id``."""
        if self.version == 1:
            return (
                STH_CONTEXT_V1
                + struct.pack(">QQ", self.tree_size, self.timestamp_ms)
                + bytes.fromhex(self.root_hash)
            )
        if len(self.key_id) != 16:
            raise ValueError("key ID must be 16 hex digits")
        return (
            STH_CONTEXT
            + struct.pack(">QQ", self.tree_size, self.timestamp_ms)
            + bytes.fromhex(self.root_hash)
            + self.key_id.encode("ascii")
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "tree_size": self.tree_size,
            "timestamp_ms": self.timestamp_ms,
            "root_hash": self.root_hash,
            "key_id": self.key_id,
            "signature": self.signature,
        }
        if self.version != 1:
            data["v"] = self.version
        if self.witness is not None:
            data["witness"] = self.witness
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TreeHead:
        witness = data.get("witness")
        return cls(
            int(data["tree_size"]),
            int(data["timestamp_ms"]),
            str(data["root_hash"]),
            str(data["key_id"]),
            str(data["signature"]),
            int(data.get("v", 1)),
            witness if isinstance(witness, dict) else None,
        )

    def unwitnessed(self) -> TreeHead:
        return TreeHead(
            self.tree_size,
            self.timestamp_ms,
            self.root_hash,
            self.key_id,
            self.signature,
            self.version,
        )

    def same_head(self, other: TreeHead) -> bool:
        return self.unwitnessed() == other.unwitnessed()

    def verify(self, public: Ed25519PublicKey) -> bool:
        """The signature holds under ``public`` and the head names that key's ID."""
        if self.key_id != key_id(public) or self.version not in (1, 2):
            return False
        try:
            message = self.signed_bytes()
        except (ValueError, struct.error, UnicodeEncodeError):  # a malformed root or size
            return False
        return verify_signature(public, self.signature, message)


class Witness(Protocol):
    """Countersigns tree heads; refuses one that does not extend what it saw before."""

    def witnessed_size(self) -> int: ...

    def cosign(
        self,
        head: TreeHead,
        public: Ed25519PublicKey,
        proof: Sequence[bytes],
        rotations: Sequence[dict[str, Any]],
    ) -> dict[str, Any]: ...


def rotation_statement(entry: dict[str, Any]) -> bytes:
    """What both keys sign when the signing key changes."""
    return (
        base64.b64decode(str(entry.get("old_public", "")), validate=True)
        + base64.b64decode(str(entry.get("new_public", "")), validate=True)
        + str(entry.get("rotated_at", "")).encode()
    )


def check_rotation(entry: dict[str, Any]) -> str | None:
    """None when both keys signed the hand-over; otherwise what is wrong."""
    try:
        statement = rotation_statement(entry)
        old = public_from_raw(base64.b64decode(str(entry["old_public"])))
        new = public_from_raw(base64.b64decode(str(entry["new_public"])))
    except (KeyError, ValueError, KeyProblem) as exc:
        return f"malformed key rotation ({exc})"
    if key_id(old) != entry.get("old_key_id") or key_id(new) != entry.get("new_key_id"):
        return "key IDs do not match the public keys"
    if not verify_in_context(old, ROTATION_CONTEXT, str(entry.get("old_signature", "")), statement):
        return f"not signed by the retiring key {entry.get('old_key_id')}"
    if not verify_in_context(new, ROTATION_CONTEXT, str(entry.get("new_signature", "")), statement):
        return f"not signed by the new key {entry.get('new_key_id')}"
    return None


class _LineFile:
    """An append-only file of lines, read from where the last read ended: the log reads what
    another process appended at every locked step, and a step must not cost the whole file
    (a recording appends a ``segment.written`` per track every few seconds, so the log grows by
    tens of lines a second: reading it whole at every append made each append slower than the
    last, and held the interpreter while it split the lines)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0  # bytes of complete lines taken so far

    def read_new(self) -> list[bytes]:
        """Complete lines appended since the last call; a torn last line (a writer killed
        mid-line: every writer holds the log's lock while it writes) is cut off the file."""
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return []
        if size == self.offset:
            return []
        if size < self.offset:  # pragma: no cover - the log is append-only
            raise ValueError(f"{self.path} shrank from {self.offset} to {size} bytes")
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(self.offset + end)
                fh.flush()
                os.fsync(fh.fileno())
            data = data[:end]
        self.offset += len(data)
        return [line for line in data.split(b"\n") if line]

    def append(self, line: bytes) -> None:
        """Append one line and make it durable (the caller holds the log's lock and has read
        every line before it)."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "ab") as fh:
            fh.write(line + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.offset += len(line) + 1


class CustodyLog:
    def __init__(
        self, directory: Path, signing_key: Ed25519PrivateKey, *, witness: Witness | None = None
    ) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._key = signing_key
        self.public_key = signing_key.public_key()
        self.key_id = key_id(self.public_key)
        self.witness = witness
        self._entries_path = directory / "entries.log"
        self._heads_path = directory / "heads.log"
        self._entries_file = _LineFile(self._entries_path)
        self._heads_file = _LineFile(self._heads_path)
        self._lock = threading.Lock()
        # another process (the CLI exporting while the server runs) may append too: every
        # write takes an exclusive lock on this file and first reads what others appended
        self._lock_path = directory / "log.lock"
        self._lines: list[bytes] = []
        self._leaves: list[bytes] = []
        self._heads: list[TreeHead] = []
        self._rotations: list[dict[str, Any]] = []
        self._compact = merkle.CompactRange()  # the tree hash of all entries, kept as they come
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="custody")
        self._catch_up()

    def _take(self, lines: list[bytes], heads: list[bytes]) -> None:
        """Lines and heads that follow the ones held (read from the files, or appended)."""
        for line in lines:
            self._lines.append(line)
            self._leaves.append(merkle.leaf_hash(line))
            self._compact.append(self._leaves[-1])
            if b'"type":"keys.signing_rotated"' in line:
                self._rotations.append(json.loads(line))
        for raw in heads:
            self._heads.append(TreeHead.from_json(json.loads(raw)))

    # -- writing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        with self._lock, os.fdopen(fd, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                self._catch_up()
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _catch_up(self) -> None:
        """What other processes appended since this one last read (under the lock)."""
        self._take(self._entries_file.read_new(), self._heads_file.read_new())

    def refresh(self) -> None:
        """Read entries other processes appended."""
        with self._exclusive():
            pass

    def append(
        self,
        entry_type: str,
        *,
        actor: str,
        reason: str = "",
        case: str = "",
        room: str = "",
        **fields: Any,
    ) -> dict[str, Any]:
        with self._exclusive():
            entry = self._append_locked(
                entry_type, actor=actor, reason=reason, case=case, room=room, **fields
            )
            if entry_type in SIGN_AT_ONCE:
                self._sign_head_locked()
            return entry

    def _append_locked(self, entry_type: str, **fields: Any) -> dict[str, Any]:
        entry = {"index": len(self._lines), "type": entry_type, "time": utc_now(), **fields}
        line = canonical(entry)
        if b"\n" in line:  # pragma: no cover - canonical JSON escapes newlines
            raise ValueError("entry must serialize to one line")
        self._entries_file.append(line)
        self._take([line], [])
        return entry

    def _check_not_retired(self) -> None:
        for rotation in self._rotations:
            if rotation.get("old_key_id") == self.key_id:
                raise KeyProblem(
                    f"签名密钥 {self.key_id} 已在托管日志条目 {rotation.get('index')} 轮换为 "
                    f"{rotation.get('new_key_id')}，请重启服务器以加载新密钥。 / signing key "
                    f"{self.key_id} was retired by log entry {rotation.get('index')} (rotated to "
                    f"{rotation.get('new_key_id')}): restart to load the new key"
                )

    def sign_head(self) -> TreeHead:
        with self._exclusive():
            return self._sign_head_locked()

    def _sign_head_locked(self) -> TreeHead:
        self._check_not_retired()
        size = len(self._leaves)
        unsigned = TreeHead(
            size,
            int(datetime.datetime.now(datetime.UTC).timestamp() * 1000),
            self._compact.root().hex(),
            self.key_id,
            "",
        )
        head = TreeHead(
            size,
            unsigned.timestamp_ms,
            unsigned.root_hash,
            self.key_id,
            sign(self._key, unsigned.signed_bytes()),
        )
        if self.witness is not None:
            seen = self.witness.witnessed_size()
            proof = merkle.consistency_proof(seen, self._leaves[:size]) if 0 < seen < size else []
            cosignature = self.witness.cosign(head, self.public_key, proof, self._rotations)
            head = TreeHead(
                head.tree_size,
                head.timestamp_ms,
                head.root_hash,
                head.key_id,
                head.signature,
                head.version,
                cosignature,
            )
        self._heads_file.append(canonical(head.to_json()))
        self._heads.append(head)
        return head

    def rotate_signing_key(
        self, new_key: Ed25519PrivateKey, *, actor: str, reason: str
    ) -> tuple[dict[str, Any], TreeHead]:
        """Hand over to ``new_key``: an entry both keys sign, then a head the new key signs."""
        with self._exclusive():
            self._check_not_retired()
            rotated_at = utc_now()
            fields: dict[str, Any] = {
                "old_key_id": self.key_id,
                "new_key_id": key_id(new_key.public_key()),
                "old_public": base64.b64encode(raw_public(self.public_key)).decode(),
                "new_public": base64.b64encode(raw_public(new_key)).decode(),
                "rotated_at": rotated_at,
            }
            statement = rotation_statement(fields)
            fields["old_signature"] = sign_in_context(self._key, ROTATION_CONTEXT, statement)
            fields["new_signature"] = sign_in_context(new_key, ROTATION_CONTEXT, statement)
            entry = self._append_locked(
                ROTATION, actor=actor, reason=reason, case="", room="", **fields
            )
            self._key = new_key
            self.public_key = new_key.public_key()
            self.key_id = key_id(self.public_key)
            return entry, self._sign_head_locked()

    async def append_async(self, entry_type: str, **kwargs: Any) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: self.append(entry_type, **kwargs))

    async def sign_head_async(self) -> TreeHead:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.sign_head)

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    async def close_async(self) -> None:
        """``close`` from the event loop: appends still queued (each fsynced, a head signed and
        witnessed) finish in their thread while the loop goes on."""
        await asyncio.to_thread(self.close)

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

    def rotations(self) -> list[dict[str, Any]]:
        return list(self._rotations)

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


@dataclass
class KeyChain:
    """The custody signing keys in the order they were in force, from the rotation entries.

    ``epochs[i] = (first entry index, key ID, public key or None)``: key i signs every head whose
    tree covers entries from ``epochs[i][0]`` on (a head of size s is signed by the key in force
    at entry s-1). Trusted when one of its keys is a key the verifier was given: each hand-over
    is signed by both keys, so trust runs both ways along the chain.
    """

    epochs: list[tuple[int, str, Ed25519PublicKey | None]] = field(default_factory=list)
    problems: list[LogProblem] = field(default_factory=list)
    trusted: bool = False

    def key_for_size(self, tree_size: int) -> tuple[str, Ed25519PublicKey | None]:
        chosen = self.epochs[0]
        for epoch in self.epochs:
            if epoch[0] <= max(tree_size - 1, 0):
                chosen = epoch
        return chosen[1], chosen[2]

    def public(self, wanted: str) -> Ed25519PublicKey | None:
        return next((pub for _, kid, pub in self.epochs if kid == wanted), None)

    def describe(self) -> str:
        return " -> ".join(f"{kid} (from entry {start})" for start, kid, _ in self.epochs)


def key_chain(
    anchors: Sequence[Ed25519PublicKey],
    rotations: Sequence[dict[str, Any]],
    named: str | None = None,
) -> KeyChain:
    """Follow the rotation entries (in log order) from the first key on: the first rotation's
    old key, or without rotations the given key (of several given, the one ``named`` by the
    first head)."""
    by_id = {key_id(a): a for a in anchors}
    chain = KeyChain()
    start_id = (
        str(rotations[0].get("old_key_id"))
        if rotations
        else (named if named in by_id else next(iter(by_id), ""))
    )
    start_pub = by_id.get(start_id)
    if start_pub is None and rotations and rotations[0].get("old_key_id") == start_id:
        with contextlib.suppress(KeyError, ValueError, KeyProblem):
            start_pub = public_from_raw(base64.b64decode(str(rotations[0]["old_public"])))
    chain.epochs.append((0, start_id, start_pub))
    for rotation in rotations:
        where = f"entry {rotation.get('index')} ({ROTATION})"
        problem = check_rotation(rotation)
        if problem is not None:
            chain.problems.append(LogProblem(where, problem))
            continue
        if rotation.get("old_key_id") != chain.epochs[-1][1]:
            chain.problems.append(
                LogProblem(
                    where,
                    f"hands over from key {rotation.get('old_key_id')}, but key "
                    f"{chain.epochs[-1][1]} was in force: the chain is broken",
                )
            )
            continue
        new_pub = public_from_raw(base64.b64decode(str(rotation["new_public"])))
        # the rotation entry is the new key's first: the head that covers it is the new key's
        chain.epochs.append((int(rotation["index"]), str(rotation["new_key_id"]), new_pub))
    chain.trusted = any(
        kid in by_id and (pub is None or key_id(pub) == kid) for _, kid, pub in chain.epochs
    ) and (named is None or any(kid == named for _, kid, _ in chain.epochs))
    return chain


@dataclass
class LogAudit:
    """What :func:`audit_log` found: problems, and what holds."""

    problems: list[LogProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    leaves: list[bytes] = field(default_factory=list)
    heads: list[TreeHead] = field(default_factory=list)  # those that verify and match
    signed_size: int = 0  # entries below this index are under a signed head that matches
    chain: KeyChain = field(default_factory=KeyChain)

    def has_head(self, head: TreeHead) -> bool:
        return any(h.same_head(head) for h in self.heads)


def audit_log(
    directory: Path,
    anchors: Sequence[Ed25519PublicKey],
    *,
    checkpoints: Sequence[TreeHead] = (),
    witness: Ed25519PublicKey | None = None,
) -> LogAudit:
    """Check a custody log directory with only public keys.

    Every signed tree head must verify under the key in force at its size (following the
    rotation entries from a given key) and match the entries' Merkle root at its size (an edited,
    removed or reordered entry changes the root; a head signed over other entries is a fork);
    heads never shrink; the log holds at least as many entries as its newest head. With
    ``checkpoints`` (trusted earlier heads, e.g. published by the witness) the log must still
    hold each one's entries unchanged (no rollback, no rewrite). With the ``witness`` public key
    every head from the first countersigned one on must carry a valid countersignature.
    """
    from .witness import verify_cosignature

    audit = LogAudit()
    problems = audit.problems
    entries_path = directory / "entries.log"
    heads_path = directory / "heads.log"
    lines = (
        [line for line in entries_path.read_bytes().split(b"\n") if line]
        if entries_path.exists()
        else []
    )
    leaves = [merkle.leaf_hash(line) for line in lines]
    audit.lines, audit.leaves = lines, leaves
    rotations: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            problems.append(LogProblem(f"entry {i}", "not JSON"))
            continue
        if entry.get("index") != i:
            problems.append(
                LogProblem(
                    f"entry {i}", f"says index {entry.get('index')}: entries removed or reordered"
                )
            )
        if entry.get("type") == ROTATION:
            rotations.append(entry)
    heads_raw = (
        [h for h in heads_path.read_bytes().split(b"\n") if h] if heads_path.exists() else []
    )
    parsed: list[tuple[int, TreeHead]] = []
    for n, raw in enumerate(heads_raw):
        try:
            parsed.append((n, TreeHead.from_json(json.loads(raw))))
        except (ValueError, KeyError, TypeError):
            problems.append(LogProblem(f"tree head {n}", "malformed"))
    chain = key_chain(anchors, rotations, parsed[0][1].key_id if parsed else None)
    audit.chain = chain
    problems.extend(chain.problems)
    if not heads_raw:
        problems.append(
            LogProblem(
                "heads.log",
                f"{'missing' if not heads_path.exists() else 'empty'}: no signed tree "
                f"head covers the {len(lines)} entries, none of them can be trusted",
            )
        )
    if parsed and not chain.trusted:
        problems.append(
            LogProblem(
                "signing keys",
                f"the heads are signed by {chain.describe()}; none of them is the "
                f"given public key ({', '.join(key_id(a) for a in anchors)}) nor "
                "linked to it by a signed rotation",
            )
        )
    roots = merkle.roots_at(
        leaves, [h.tree_size for _, h in parsed] + [c.tree_size for c in checkpoints]
    )
    previous: TreeHead | None = None
    good_size = 0  # the largest size at which entries still match a signed head
    witnessed_from: int | None = None
    for n, head in parsed:
        where = f"tree head {n} (size {head.tree_size})"
        expected_id, expected_pub = chain.key_for_size(head.tree_size)
        if head.key_id != expected_id:
            known = chain.public(head.key_id)
            problems.append(
                LogProblem(
                    where,
                    f"names key {head.key_id}, but key {expected_id} was in force at that "
                    "size"
                    + (
                        " (a retired key signed after its rotation)"
                        if known
                        else " (neither the given key nor one rotated to or from it)"
                    ),
                )
            )
            continue
        if expected_pub is None or not chain.trusted or not head.verify(expected_pub):
            problems.append(
                LogProblem(
                    where, f"signature does not verify with this public key (key {head.key_id})"
                )
            )
            continue
        if witness is not None:
            if head.witness is not None:
                witness_problem = verify_cosignature(head, witness)
                if witness_problem:
                    problems.append(
                        LogProblem(where, f"witness countersignature: {witness_problem}")
                    )
                elif witnessed_from is None:
                    witnessed_from = n
            elif witnessed_from is not None or n == parsed[-1][0]:
                problems.append(
                    LogProblem(
                        where,
                        "carries no witness countersignature: signed without the witness "
                        "(a history re-signed by whoever holds the signing key?)",
                    )
                )
        if previous is not None and head.tree_size < previous.tree_size:
            problems.append(LogProblem(where, "tree shrank"))
        if head.tree_size > len(leaves):
            problems.append(
                LogProblem(
                    f"tree head {n}",
                    f"signed {head.tree_size} entries but the log holds {len(leaves)}: truncated",
                )
            )
        elif roots[head.tree_size].hex() != head.root_hash:
            span = (
                f"entries {good_size}..{head.tree_size - 1}"
                if good_size < head.tree_size
                else "entries before it"
            )
            problems.append(
                LogProblem(
                    where,
                    f"entries do not match the signed root: {span} were changed, removed, "
                    "reordered, or the log forked",
                )
            )
        else:
            good_size = max(good_size, head.tree_size)
            audit.heads.append(head)
        previous = head
    audit.signed_size = good_size
    for checkpoint in checkpoints:
        where = f"checkpoint (size {checkpoint.tree_size})"
        _, cp_pub = chain.key_for_size(checkpoint.tree_size)
        if cp_pub is None or not checkpoint.verify(cp_pub):
            problems.append(
                LogProblem(where, "its tree head does not verify with the signing keys")
            )
            continue
        if witness is not None:
            witness_problem = verify_cosignature(checkpoint, witness)
            if witness_problem:
                problems.append(LogProblem(where, f"witness countersignature: {witness_problem}"))
                continue
        if checkpoint.tree_size > len(leaves):
            problems.append(
                LogProblem(
                    where,
                    f"the log holds {len(leaves)} entries, the checkpoint signed "
                    f"{checkpoint.tree_size}: rolled back (entries removed from the end)",
                )
            )
        elif roots[checkpoint.tree_size].hex() != checkpoint.root_hash:
            problems.append(
                LogProblem(
                    where,
                    f"the log's first {checkpoint.tree_size} entries are not those the "
                    "checkpoint signed: history rewritten",
                )
            )
        elif not parsed or parsed[-1][1].tree_size < checkpoint.tree_size:
            problems.append(
                LogProblem(
                    where,
                    "heads.log holds no head as recent as the checkpoint: signed heads "
                    "removed (rolled back)",
                )
            )
        else:
            audit.notes.append(f"consistent with the checkpoint of size {checkpoint.tree_size}")
    if good_size < len(lines):
        audit.notes.append(
            f"entries {good_size}..{len(lines) - 1} are after the newest signed "
            "head that matches: not yet trusted"
        )
    return audit


def verify_log(directory: Path, public: Ed25519PublicKey) -> list[LogProblem]:
    """:func:`audit_log`'s problems with one trusted key; an empty list means the log holds."""
    audit = audit_log(directory, [public])
    # a log that has not signed anything yet has nothing to check
    return [p for p in audit.problems if not (p.where == "heads.log" and not audit.lines)]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
