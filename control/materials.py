"""Materials and evidence items: files parties upload and officers attach to a case.

The type is taken from the content (magic numbers, then a real parse: an image must decode, a
PDF must open, a video must have a decodable video stream), never from the name or the
``Content-Type`` header. Each file is hashed (SHA-256) as it arrives and stored encrypted: a
random data key per file, wrapped under the key-encryption key (as recordings are), and the
file cut into 1 MiB chunks sealed with AES-256-GCM, each chunk's position and the "last chunk"
flag bound in as associated data, so that reordering, truncating or extending a file fails
decryption. On disk: ``<data_dir>/materials/<material id>.bin``.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recorder.keys import KeyEncryptionKey, KeyProblem

CHUNK = 1 << 20
TAG = 16

# media type -> (category, the extension a download gets)
TYPES = {
    "image/jpeg": ("image", "jpg"),
    "image/png": ("image", "png"),
    "application/pdf": ("pdf", "pdf"),
    "video/mp4": ("video", "mp4"),
    "video/quicktime": ("video", "mov"),
    "video/webm": ("video", "webm"),
    "video/x-matroska": ("video", "mkv"),
}

# what a refused file looks like, to say so instead of "unknown"
_REFUSED_MAGIC = (
    (b"MZ", "a Windows executable"),
    (b"\x7fELF", "a Linux executable"),
    (b"#!", "a script"),
    (b"PK\x03\x04", "a ZIP archive (or an office document)"),
    (b"\xca\xfe\xba\xbe", "a Java class or macOS executable"),
    (b"\xcf\xfa\xed\xfe", "a macOS executable"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
)


class MaterialRejected(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def sniff(head: bytes) -> str:
    """The media type the first bytes declare; :class:`MaterialRejected` if not accepted."""
    if not head:
        raise MaterialRejected("empty", "the file is empty")
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:12] == b"qt  " else "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if b"webm" in head[:64] else "video/x-matroska"
    for magic, what in _REFUSED_MAGIC:
        if head.startswith(magic):
            raise MaterialRejected("unsupported_type",
                                   f"the content is {what}; accepted are JPEG, PNG, PDF, "
                                   "MP4/MOV, WebM/Matroska")
    raise MaterialRejected("unsupported_type", "the content is not a JPEG, PNG, PDF, MP4/MOV "
                                               "or WebM/Matroska file")


def check_content(media_type: str, data: bytes) -> dict[str, object]:
    """Parse the whole file; what it holds (pixels, pages, duration) or MaterialRejected."""
    category = TYPES[media_type][0]
    try:
        if category == "image":
            import cv2
            import numpy as np

            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError("does not decode")
            return {"width": int(image.shape[1]), "height": int(image.shape[0])}
        if category == "pdf":
            import pypdfium2

            pdf = pypdfium2.PdfDocument(data)
            try:
                pages = len(pdf)
            finally:
                pdf.close()
            if pages < 1:
                raise ValueError("has no pages")
            return {"pages": pages}
        import av

        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise ValueError("has no video stream")
            stream = container.streams.video[0]
            frame = next(container.decode(stream), None)
            if frame is None:
                raise ValueError("has no decodable frame")
            duration = (float(container.duration) / 1e6) if container.duration else None
            return {"codec": stream.codec_context.name, "width": frame.width,
                    "height": frame.height, "duration": duration,
                    "audio": bool(container.streams.audio)}
    except MaterialRejected:
        raise
    except Exception as exc:
        raise MaterialRejected("corrupt", f"the {category} is damaged or incomplete "
                                          f"({exc})") from None


def _aad(material_id: str, index: int, last: bool) -> bytes:
    return f"remotecase-material-v1/{material_id}/{index}/{int(last)}".encode()


def _nonce(index: int) -> bytes:
    # one data key per file, so a counter never repeats under a key
    return index.to_bytes(12, "big")


@dataclass(frozen=True)
class StoredMaterial:
    material_id: str
    sha256: str
    size: int
    wrapped_key: str
    kek_fingerprint: str


class MaterialWriter:
    """Receives a file in pieces; hashes and encrypts it as it comes (call from a thread)."""

    def __init__(self, store: MaterialStore, material_id: str) -> None:
        self._store = store
        self.material_id = material_id
        self._key = secrets.token_bytes(32)
        self._aead = AESGCM(self._key)
        self._hash = hashlib.sha256()
        self._buffer = bytearray()
        self._index = 0
        self.size = 0
        self.path = store.path_of(material_id)
        self._tmp = self.path.with_name(self.path.name + ".part")
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._fh = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self.size += len(data)
        self._buffer += data
        while len(self._buffer) > CHUNK:  # keep one chunk back: it may be the last
            self._seal(bytes(self._buffer[:CHUNK]), last=False)
            del self._buffer[:CHUNK]

    def _seal(self, chunk: bytes, *, last: bool) -> None:
        self._fh.write(self._aead.encrypt(_nonce(self._index), chunk,
                                          _aad(self.material_id, self._index, last)))
        self._index += 1

    def finish(self) -> StoredMaterial:
        self._seal(bytes(self._buffer), last=True)
        self._buffer.clear()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        kek = self._store.kek
        return StoredMaterial(self.material_id, self._hash.hexdigest(), self.size,
                              kek.wrap(self._key), kek.fingerprint)

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self._tmp.unlink(missing_ok=True)


class MaterialStore:
    def __init__(self, directory: Path, kek: KeyEncryptionKey) -> None:
        self.directory = directory
        self.kek = kek
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        # a server killed mid-upload leaves a partial file that no row points to
        for partial in directory.glob("*.part"):
            partial.unlink(missing_ok=True)

    @staticmethod
    def new_id() -> str:
        return "MAT_" + secrets.token_hex(8)

    def path_of(self, material_id: str) -> Path:
        if not material_id.startswith("MAT_") or not material_id[4:].isalnum():
            raise ValueError(f"not a material ID: {material_id!r}")
        return self.directory / f"{material_id}.bin"

    def writer(self, material_id: str) -> MaterialWriter:
        return MaterialWriter(self, material_id)

    def chunks(self, material_id: str, wrapped_key: str, kek_fingerprint: str) -> Iterator[bytes]:
        """The plaintext, chunk by chunk; raises KeyProblem or ValueError when it is damaged."""
        key = self.kek.unwrap(wrapped_key, kek_fingerprint)
        aead = AESGCM(key)
        with open(self.path_of(material_id), "rb") as fh:
            index = 0
            block = fh.read(CHUNK + TAG)
            while True:
                following = fh.read(CHUNK + TAG)
                last = not following
                try:
                    yield aead.decrypt(_nonce(index), block, _aad(material_id, index, last))
                except InvalidTag:
                    raise ValueError(f"material {material_id}: chunk {index} fails "
                                     "authentication (damaged, truncated or reordered)") from None
                if last:
                    return
                block = following
                index += 1

    def read_all(self, material_id: str, wrapped_key: str, kek_fingerprint: str,
                 expected_sha256: str) -> bytes:
        """The whole plaintext, checked against the hash taken on receipt."""
        data = b"".join(self.chunks(material_id, wrapped_key, kek_fingerprint))
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected_sha256:
            raise ValueError(f"material {material_id}: SHA-256 {digest} is not the "
                             f"{expected_sha256} taken on receipt")
        return data

    def delete(self, material_id: str) -> None:
        self.path_of(material_id).unlink(missing_ok=True)


__all__ = ["TYPES", "KeyProblem", "MaterialRejected", "MaterialStore", "StoredMaterial",
           "check_content", "sniff"]
