"""Export packages kept encrypted at rest: decrypted media never stays on the disk.

A court export (``POST /api/recordings/{id}/export``) is built by
:func:`recorder.export.export_recording` in a private temporary directory
(``<data_dir>/tmp/build-<pid>-<random>``, mode 0700), then every file of it is encrypted into
``recordings/<id>/exports/<EXP_id>/`` and the temporary directory is removed, whatever happens.
A build left by a process that died is removed by the next start or the next export.

Each file becomes ``blobs/<n>`` (mode 0600): 1 MiB chunks, each sealed with AES-256-GCM under
the export's key, nonce = file number (4 bytes) || chunk number (8 bytes), associated data =
export ID, file path, chunk number and whether it is the last chunk (so that chunks can be
neither swapped, moved between files, nor cut off). ``index.json`` names the files and their
sizes. The export's key is derived from the recording's data key (HKDF-SHA256, info
``remotecase export v1`` + recording ID + export ID): it is never stored, a KEK rotation that
rewraps the data key keeps every export readable, and deleting a recording's media deletes its
exports with it. A download decrypts a file as it is sent.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

CHUNK = 1 << 20
TAG = 16
FORMAT = "remotecase-sealed-export/1"


def export_key(data_key: bytes, recording_id: str, export_id: str) -> bytes:
    info = b"remotecase export v1\0" + recording_id.encode() + b"\0" + export_id.encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(data_key)


def _nonce(file_number: int, chunk: int) -> bytes:
    return file_number.to_bytes(4, "big") + chunk.to_bytes(8, "big")


def _aad(export_id: str, path: str, chunk: int, last: bool) -> bytes:
    return json.dumps([export_id, path, chunk, last]).encode()


def build_dir(tmp_root: Path) -> Path:
    """A new private directory to build a package in (removed by the caller)."""
    tmp_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = tmp_root / f"build-{os.getpid()}-{secrets.token_hex(8)}"
    path.mkdir(mode=0o700)
    return path


def clear_stale_builds(tmp_root: Path) -> list[str]:
    """Remove builds whose process is gone (a crash in the middle of an export)."""
    removed = []
    for path in sorted(tmp_root.glob("build-*")) if tmp_root.is_dir() else []:
        try:
            pid = int(path.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def seal_package(package: Path, out: Path, key: bytes) -> dict[str, Any]:
    """Encrypt every file under ``package`` into ``out`` (made whole or not at all)."""
    export_id = out.name
    partial = out.with_name(f".{export_id}.partial")
    partial.mkdir(mode=0o700)
    try:
        (partial / "blobs").mkdir(mode=0o700)
        aead = AESGCM(key)
        files: dict[str, dict[str, int]] = {}
        for number, path in enumerate(p for p in sorted(package.rglob("*")) if p.is_file()):
            rel = path.relative_to(package).as_posix()
            size = path.stat().st_size
            fd = os.open(
                partial / "blobs" / str(number), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600
            )
            with os.fdopen(fd, "wb") as sink, open(path, "rb") as source:
                chunks = max(1, -(-size // CHUNK))
                for chunk in range(chunks):
                    plain = source.read(CHUNK)
                    last = chunk == chunks - 1
                    sink.write(
                        aead.encrypt(
                            _nonce(number, chunk), plain, _aad(export_id, rel, chunk, last)
                        )
                    )
                sink.flush()
                os.fsync(sink.fileno())
            files[rel] = {"blob": number, "size": size}
        index = {"format": FORMAT, "export": export_id, "files": files}
        fd = os.open(partial / "index.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(json.dumps(index, sort_keys=True, indent=1).encode())
            fh.flush()
            os.fsync(fh.fileno())
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return index


def load_index(out: Path) -> dict[str, Any] | None:
    """The export's index, or None for no such (or a pre-encryption, plaintext) export."""
    try:
        index: dict[str, Any] = json.loads((out / "index.json").read_bytes())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return index if index.get("format") == FORMAT else None


class SealedFile:
    """One file of a sealed export, decrypted a chunk at a time (blocking: call in a thread)."""

    def __init__(self, out: Path, index: dict[str, Any], path: str, key: bytes) -> None:
        entry = index["files"][path]
        self.size: int = entry["size"]
        self._number: int = entry["blob"]
        self._chunks = max(1, -(-self.size // CHUNK))
        self._next = 0
        self._export_id, self._path = out.name, path
        self._aead = AESGCM(key)
        self._fh = open(out / "blobs" / str(self._number), "rb")  # closed by close()

    def read_chunk(self) -> bytes:
        """The next chunk's plaintext, b"" at the end; raises InvalidTag if it was altered."""
        if self._next >= self._chunks:
            return b""
        sealed = self._fh.read(CHUNK + TAG)
        chunk, last = self._next, self._next == self._chunks - 1
        self._next += 1
        plain: bytes = self._aead.decrypt(
            _nonce(self._number, chunk), sealed, _aad(self._export_id, self._path, chunk, last)
        )
        return plain

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()
