"""The witness: a second key that countersigns every signed tree head, and the checkpoints.

The custody signing key alone cannot protect the log against whoever holds it, nor against a
copy of the data directory put back (a rollback). A witness keeps its own key and its own
memory of the last head it countersigned, away from ``storage.data_dir`` and ``keys.dir``:

* it countersigns a head only when it extends the last one it saw (RFC 9162 consistency
  proof), so two diverging histories can never both carry its signature;
* each countersigned head is written as a **checkpoint** to a directory an operator publishes
  (``custody.checkpoints_dir``: ``checkpoint-<size>.json`` and ``latest.json``).

A verifier given the witness public key (``--witness-key``) requires the countersignature on
every head from the first countersigned one on; given a checkpoint (``--checkpoint``) it proves
the log still holds that checkpoint's entries unchanged and at least as many.

The countersignature is Ed25519 over ``remotecase-witness-v1\\0 || uint64(time_ms) ||
head.signed_bytes() || head signature``; it is stored in the head's ``witness`` field as
``{"key_id", "timestamp_ms", "signature"}``.

An RFC 3161 time-stamp authority can take this role instead (``custody.witness = "tsa"``): the
interface is the same (:class:`recorder.custody.Witness`); a TSA token would be stored in the
same field. It is not implemented here (no TSA reachable from this machine's tests).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.files import write_atomic
from common.hashing import canonical

from . import merkle
from .keys import (
    WITNESS_CONTEXT,
    key_id,
    load_or_create_signing_key,
    public_key_pem,
    raw_public,
    sign_in_context,
    verify_in_context,
)

if TYPE_CHECKING:
    from .custody import TreeHead

WITNESS_KEY_FILE = "witness-ed25519.pem"


class WitnessRefused(Exception):
    """The head does not extend what the witness countersigned before."""


def cosigned_bytes(head: TreeHead, timestamp_ms: int) -> bytes:
    return struct.pack(">Q", timestamp_ms) + head.signed_bytes() + base64.b64decode(head.signature)


def verify_cosignature(head: TreeHead, witness: Ed25519PublicKey) -> str | None:
    """None when the head carries a valid countersignature of ``witness``."""
    cosig = head.witness
    if not isinstance(cosig, dict):
        return "missing"
    if cosig.get("key_id") != key_id(witness):
        return f"made by witness key {cosig.get('key_id')}, not the given {key_id(witness)}"
    try:
        message = cosigned_bytes(head, int(cosig.get("timestamp_ms", -1)))
    except (ValueError, struct.error, TypeError):
        return "malformed"
    if not verify_in_context(witness, WITNESS_CONTEXT, str(cosig.get("signature", "")), message):
        return "does not verify (the head or the countersignature was altered)"
    return None


class KeyWitness:
    """A witness with its own Ed25519 key and state, in a directory of its own.

    Runs in the server process (and in the CLI's), but nothing it keeps is in the data or keys
    directory: ``state.json`` (the last head it countersigned and the signing key it follows)
    and its key. Callers hold the custody log's lock, which serializes the witness too.
    """

    def __init__(self, directory: Path, checkpoints_dir: Path) -> None:
        self.directory = directory
        self.checkpoints_dir = checkpoints_dir
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        checkpoints_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # the server's workers start at once: one of them makes the key, the others wait
        fd = os.open(directory / "witness.lock", os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            self._key: Ed25519PrivateKey = load_or_create_signing_key(directory / WITNESS_KEY_FILE)
            self.public_key = self._key.public_key()
            public_path = directory / "witness-ed25519.pub.pem"
            if not public_path.exists():
                write_atomic(public_path, public_key_pem(self.public_key))
        self.key_id = key_id(self.public_key)
        self._state_path = directory / "state.json"

    def _state(self) -> dict[str, Any]:
        if not self._state_path.exists():
            return {}
        state: dict[str, Any] = json.loads(self._state_path.read_bytes())
        return state

    def witnessed_size(self) -> int:
        return int(self._state().get("tree_size", 0))

    def cosign(
        self,
        head: TreeHead,
        public: Ed25519PublicKey,
        proof: Sequence[bytes],
        rotations: Sequence[dict[str, Any]],
    ) -> dict[str, Any]:
        from .custody import check_rotation

        state = self._state()
        followed = str(state.get("signing_key_id", "")) or key_id(public)
        if key_id(public) != followed:
            # the log's key changed: accept it only along rotations both keys signed
            for rotation in rotations:
                if rotation.get("old_key_id") == followed and check_rotation(rotation) is None:
                    followed = str(rotation["new_key_id"])
            if key_id(public) != followed:
                raise WitnessRefused(
                    f"见证方拒绝：树头由密钥 {key_id(public)} 签名，不是其所跟随的 "
                    f"{state.get('signing_key_id')} / witness refuses: the head is signed by key "
                    f"{key_id(public)}, not by key {state.get('signing_key_id')} it follows nor "
                    "a key rotated to from it"
                )
        if not head.verify(public):
            raise WitnessRefused(
                "见证方拒绝：树头签名无效 / witness refuses: the head's signature does not verify"
            )
        seen = int(state.get("tree_size", 0))
        if seen:
            old_root = bytes.fromhex(str(state["root_hash"]))
            if head.tree_size < seen or not merkle.verify_consistency(
                seen, head.tree_size, old_root, bytes.fromhex(head.root_hash), proof
            ):
                raise WitnessRefused(
                    f"见证方拒绝：大小为 {head.tree_size} 的树头不延续其已见证的大小 {seen} 的日志"
                    f"（回滚或改写）/ witness refuses: the head of size {head.tree_size} does "
                    f"not extend the log of size {seen} it countersigned before (rolled back "
                    "or rewritten)"
                )
        timestamp_ms = max(head.timestamp_ms, int(state.get("timestamp_ms", 0)))
        cosignature = {
            "key_id": self.key_id,
            "timestamp_ms": timestamp_ms,
            "signature": sign_in_context(
                self._key, WITNESS_CONTEXT, cosigned_bytes(head, timestamp_ms)
            ),
        }
        checkpoint = canonical({**head.to_json(), "witness": cosignature})
        write_atomic(self.checkpoints_dir / f"checkpoint-{head.tree_size:012d}.json", checkpoint)
        write_atomic(self.checkpoints_dir / "latest.json", checkpoint)
        write_atomic(
            self._state_path,
            canonical(
                {
                    "tree_size": head.tree_size,
                    "root_hash": head.root_hash,
                    "timestamp_ms": timestamp_ms,
                    "signing_key_id": key_id(public),
                    "signing_public": base64.b64encode(raw_public(public)).decode(),
                }
            ),
        )
        return cosignature


def load_checkpoints(path: Path) -> list[TreeHead]:
    """A checkpoint file, or every ``checkpoint-*.json`` in a directory."""
    from .custody import TreeHead

    files = sorted(path.glob("checkpoint-*.json")) if path.is_dir() else [path]
    if path.is_dir() and not files and (path / "latest.json").exists():
        files = [path / "latest.json"]
    if not files:
        raise FileNotFoundError(f"no checkpoint in {path}")
    heads = []
    for file in files:
        try:
            data = json.loads(file.read_bytes())
            heads.append(TreeHead.from_json(data.get("tree_head", data)))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FileNotFoundError(f"{file}: not a checkpoint ({exc})") from None
    return heads


def load_witness_public(path: Path) -> Ed25519PublicKey:
    from .keys import load_public_key

    return load_public_key(path.read_bytes())


def configured_witness(mode: str, directory: Path, checkpoints_dir: Path) -> KeyWitness | None:
    """The witness ``custody.witness`` names (``"key"``), or None (``"off"``)."""
    return KeyWitness(directory, checkpoints_dir) if mode == "key" else None
