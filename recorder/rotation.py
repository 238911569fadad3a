"""Key rotation: a new custody signing key, or a new key-encryption key, without losing the past.

**Signing key** (``remotecase keys rotate --signing``): the new key is written first, as
``custody-ed25519.pem.next``; the log gets a ``keys.signing_rotated`` entry that both the old and
the new key sign (context ``remotecase-key-rotation-v1\\0`` over old public key || new public
key || time), and a tree head signed by the new key covers it; only then does the new key
replace the old file. The old public key stays published as ``custody-ed25519.<id>.pub.pem``:
recordings sealed under it still verify, and a verifier follows the chain from either key.

**KEK** (``remotecase keys rotate --kek``): the new KEK is written first, as
``recording-kek.key.next``; every wrapped data key is unwrapped with the old KEK and wrapped
under the new one, each file rewritten atomically (recordings' ``recording.json``, face
embeddings) or each row in one transaction (materials, by the caller's ``rewrap_rows``; the
documents' PDF revisions, by ``rewrap_documents``: ``control.documents.store.rewrap_keys``;
education records, by ``rewrap_education``: ``control.education.records.rewrap_keys``);
media, materials', documents' and education records' encrypted files are never touched. A
``keys.kek_rotated`` entry lists every recording's new wrapped key (so the verifier can tell
a logged rewrap from a swapped key), and only then does the new KEK replace the old file.
Either command, interrupted, is finished by running it again: the ``.next`` key is taken up,
and what was already rewrapped is skipped. The server refuses to start while a ``.next`` file
exists; run rotations with the server stopped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.files import write_atomic
from common.hashing import canonical

from .custody import CustodyLog, Witness
from .keys import (
    KEK_FILE,
    NEXT_SUFFIX,
    PUBLIC_KEY_FILE,
    SIGNING_KEY_FILE,
    KeyEncryptionKey,
    KeyProblem,
    key_id,
    load_signing_key,
    public_key_pem,
    signing_key_pem,
    write_key_file,
)


def _replace(src: Path, dst: Path) -> None:
    os.replace(src, dst)
    fd = os.open(dst.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rotate_signing(
    keys_dir: Path, custody_dir: Path, *, witness: Witness | None, actor: str, reason: str
) -> dict[str, Any]:
    key_path = keys_dir / SIGNING_KEY_FILE
    next_path = key_path.with_name(key_path.name + NEXT_SUFFIX)
    if not key_path.exists():
        raise KeyProblem(f"no signing key at {key_path}")
    old = load_signing_key(key_path, guard=False)  # may be the unsafe key being replaced
    old_id = key_id(old.public_key())
    if next_path.exists():
        new = load_signing_key(next_path)
    else:
        new = Ed25519PrivateKey.generate()
        write_key_file(next_path, signing_key_pem(new))
    new_id = key_id(new.public_key())
    custody = CustodyLog(custody_dir, old, witness=witness)
    try:
        custody.refresh()
        done = next((r for r in custody.rotations() if r.get("new_key_id") == new_id), None)
        if done is None:
            entry, head = custody.rotate_signing_key(new, actor=actor, reason=reason)
            index, size = entry["index"], head.tree_size
        else:
            index, size = done["index"], custody.size
    finally:
        custody.close()
    retired = keys_dir / f"custody-ed25519.{old_id}.pub.pem"
    if not retired.exists():
        write_atomic(retired, public_key_pem(old))
    write_atomic(keys_dir / PUBLIC_KEY_FILE, public_key_pem(new))
    _replace(next_path, key_path)
    return {
        "old_key_id": old_id,
        "new_key_id": new_id,
        "log_index": index,
        "tree_size": size,
        "retired_public_key": str(retired),
    }


def rotate_kek(
    keys_dir: Path,
    data_dir: Path,
    custody: CustodyLog,
    *,
    actor: str,
    reason: str,
    rewrap_rows: Callable[[KeyEncryptionKey, KeyEncryptionKey], int] | None = None,
    rewrap_documents: Callable[[KeyEncryptionKey, KeyEncryptionKey], int] | None = None,
    rewrap_education: Callable[[KeyEncryptionKey, KeyEncryptionKey], int] | None = None,
) -> dict[str, Any]:
    """Rewrap every data key under a new KEK; ``rewrap_rows`` does the database's materials,
    ``rewrap_documents`` the documents' revisions, ``rewrap_education`` the education
    records (each skips what is already rewrapped)."""
    kek_path = keys_dir / KEK_FILE
    next_path = kek_path.with_name(kek_path.name + NEXT_SUFFIX)
    if not kek_path.exists():
        raise KeyProblem(f"no key-encryption key at {kek_path}")
    old = KeyEncryptionKey.load(kek_path, guard=False)
    if next_path.exists():
        new = KeyEncryptionKey.load(next_path)
    else:
        new = KeyEncryptionKey.generate()
        write_key_file(next_path, new.file_bytes())
    if new.fingerprint == old.fingerprint:  # pragma: no cover - 2^-64
        raise KeyProblem("the new KEK has the old one's fingerprint")

    def rewrapped(record: dict[str, Any], wrapped_field: str) -> dict[str, Any] | None:
        if record.get("kek_fingerprint") == new.fingerprint:
            return None  # done before an interruption
        return {
            **record,
            "kek_fingerprint": new.fingerprint,
            wrapped_field: old.rewrap(
                str(record[wrapped_field]), str(record.get("kek_fingerprint")), new
            ),
        }

    recordings: dict[str, str] = {}
    for meta_path in sorted((data_dir / "recordings").glob("*/recording.json")):
        meta = json.loads(meta_path.read_bytes())
        if meta.get("state") == "recording":
            raise KeyProblem(
                f"{meta.get('recording_id')} is still recording: stop the server "
                "(a crashed recording is sealed at its next start) and run again"
            )
        record = rewrapped(meta["key"], "wrapped_data_key")
        if record is not None:
            meta["key"] = record
            write_atomic(meta_path, canonical(meta))
        recordings[str(meta["recording_id"])] = str(meta["key"]["wrapped_data_key"])
    faces = 0
    for path in sorted((data_dir / "faces").glob("*/*.json")):
        face = json.loads(path.read_bytes())
        record = rewrapped(face["embedding"], "wrapped_key")
        if record is not None:
            face["embedding"] = record
            write_atomic(path, canonical(face))
        faces += 1
    materials = rewrap_rows(old, new) if rewrap_rows is not None else 0
    documents = rewrap_documents(old, new) if rewrap_documents is not None else 0
    education = rewrap_education(old, new) if rewrap_education is not None else 0
    entry = custody.append(
        "keys.kek_rotated",
        actor=actor,
        reason=reason,
        old_kek=old.fingerprint,
        new_kek=new.fingerprint,
        recordings=recordings,
        faces=faces,
        materials=materials,
        documents=documents,
        education_records=education,
    )
    _replace(next_path, kek_path)
    return {
        "old_kek": old.fingerprint,
        "new_kek": new.fingerprint,
        "recordings": len(recordings),
        "faces": faces,
        "materials": materials,
        "documents": documents,
        "education_records": education,
        "log_index": entry["index"],
    }
