"""Materials and evidence items: files parties upload and officers attach to a case.

The type is taken from the content (magic numbers, then a real parse: an image must decode, a
PDF must open, a video must have a decodable video stream), never from the name or the
``Content-Type`` header. Before anything decodes, the sizes a parser would allocate for are read
from the headers (a PNG's IHDR, a JPEG's start-of-frame segment, the video stream's parameters
as FFmpeg probes them, the PDF's page count and page sizes) and held to a :class:`ContentBudget`:
a small file may declare a billion pixels.

Each file is hashed (SHA-256) as it arrives and stored encrypted: a random data key per file,
wrapped under the key-encryption key (as recordings are), and the file cut into 1 MiB chunks
sealed with AES-256-GCM, each chunk's position and the "last chunk" flag bound in as associated
data, so that reordering, truncating or extending a file fails decryption. An upload is written
in that form straight away, to ``<data_dir>/materials/<material id>.bin.part`` (0600, locked
while it is written), checked by reading it back through :class:`PlainReader` (a seekable file
that decrypts and authenticates one chunk at a time), then renamed to ``<material id>.bin``; no
plaintext is ever on disk, and a file is never held whole in memory but for a photo's decode.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mediaserver import pdfium
from recorder.keys import KeyEncryptionKey, KeyProblem

from ..config import MaterialsConfig

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
    (b"MZ", "Windows 可执行程序", "a Windows executable"),
    (b"\x7fELF", "Linux 可执行程序", "a Linux executable"),
    (b"#!", "脚本", "a script"),
    (b"PK\x03\x04", "ZIP 压缩包（或办公文档）", "a ZIP archive (or an office document)"),
    (b"\xca\xfe\xba\xbe", "Java 类文件或 macOS 程序", "a Java class or macOS executable"),
    (b"\xcf\xfa\xed\xfe", "macOS 可执行程序", "a macOS executable"),
    (b"Rar!", "RAR 压缩包", "a RAR archive"),
    (b"7z\xbc\xaf", "7-Zip 压缩包", "a 7-Zip archive"),
)
_ACCEPTED_ZH = "仅接受 JPEG、PNG、PDF、MP4/MOV、WebM/Matroska"
_ACCEPTED = "accepted are JPEG, PNG, PDF, MP4/MOV, WebM/Matroska"


class MaterialRejected(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def sniff(head: bytes) -> str:
    """The media type the first bytes declare; :class:`MaterialRejected` if not accepted."""
    if not head:
        raise MaterialRejected("empty", "文件为空 / the file is empty")
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
    for magic, what_zh, what in _REFUSED_MAGIC:
        if head.startswith(magic):
            raise MaterialRejected(
                "unsupported_type",
                f"文件内容是{what_zh}，{_ACCEPTED_ZH} / the content is {what}; {_ACCEPTED}",
            )
    raise MaterialRejected(
        "unsupported_type",
        f"文件内容不是可接受的类型，{_ACCEPTED_ZH} / the "
        "content is not a JPEG, PNG, PDF, MP4/MOV or "
        "WebM/Matroska file",
    )


@dataclass(frozen=True)
class ContentBudget:
    """What a parser may be asked to hold, checked from the headers before anything decodes.
    The defaults are ``materials.*``'s (control/config.py)."""

    max_pixels: int = int(MaterialsConfig.max_megapixels * 1e6)  # a photo, a video's frames
    max_pdf_pages: int = MaterialsConfig.max_pdf_pages

    @classmethod
    def of(cls, settings: MaterialsConfig) -> ContentBudget:
        return cls(
            max_pixels=int(settings.max_megapixels * 1e6), max_pdf_pages=settings.max_pdf_pages
        )


# PDFium may not be entered from two threads at once: every call into it holds the process's one
# lock (evidence display renders pages too).
PDFIUM = pdfium.LOCK
# ISO 32000: a page is at most 14400 units on a side (200 inches)
MAX_PAGE_POINTS = 14400.0
# JPEG start-of-frame markers (every SOFn but DHT C4, JPG C8 and DAC CC)
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


CATEGORY_ZH = {"image": "图片", "pdf": "PDF 文件", "video": "视频"}


def _corrupt(category: str, zh: str, en: str) -> MaterialRejected:
    said = f"：{zh}" if zh else ""
    return MaterialRejected(
        "corrupt",
        f"{CATEGORY_ZH[category]}已损坏或不完整{said} / "
        f"the {category} is damaged or incomplete ({en})",
    )


def _exact(fh: BinaryIO, size: int, category: str) -> bytes:
    data = fh.read(size)
    if len(data) != size:
        raise _corrupt(category, "文件提前结束", "the file ends early")
    return data


def png_size(fh: BinaryIO) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which a PNG must open with."""
    fh.seek(8)
    head = _exact(fh, 25, "image")
    if head[4:8] != b"IHDR" or int.from_bytes(head[:4], "big") != 13:
        raise _corrupt("image", "缺少 IHDR 文件头", "no IHDR header")
    width, height = struct.unpack(">II", head[8:16])
    return width, height


def jpeg_size(fh: BinaryIO) -> tuple[int, int]:
    """Width and height from the first start-of-frame segment, walking the segments before it
    by their lengths (an Exif block may put it tens of kilobytes in)."""
    fh.seek(2)
    while True:
        if _exact(fh, 1, "image") != b"\xff":
            raise _corrupt("image", "段标记错误", "a segment marker is wrong")
        marker = _exact(fh, 1, "image")[0]
        while marker == 0xFF:  # fill bytes
            marker = _exact(fh, 1, "image")[0]
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length
            continue
        if marker in (0xD9, 0xDA):
            raise _corrupt("image", "图像数据前没有帧头", "no frame header before the image data")
        length = int.from_bytes(_exact(fh, 2, "image"), "big")
        if length < 2:
            raise _corrupt("image", "段长度错误", "a segment length is wrong")
        if marker in _SOF:
            if length < 7:
                raise _corrupt("image", "帧头过短", "the frame header is too short")
            frame = _exact(fh, 5, "image")
            height, width = struct.unpack(">HH", frame[1:5])
            return width, height
        fh.seek(length - 2, io.SEEK_CUR)


def _check_pixels(width: int, height: int, budget: ContentBudget, what_zh: str, what: str) -> None:
    if width <= 0 or height <= 0:
        raise MaterialRejected(
            "corrupt",
            f"{what_zh}的尺寸为 {width}×{height}，无法使用 / "
            f"the {what} declares {width}x{height} pixels",
        )
    if width * height > budget.max_pixels:
        limit = budget.max_pixels / 1e6
        raise MaterialRejected(
            "too_many_pixels",
            f"{what_zh}为 {width}×{height} 像素（{width * height / 1e6:.1f} 百万像素），"
            f"超过 {limit:g} 百万像素的上限 / the {what} is {width}x{height} pixels "
            f"({width * height / 1e6:.1f} megapixels), more than the limit of "
            f"{limit:g} megapixels",
        )


def check_content(
    media_type: str, source: BinaryIO, budget: ContentBudget = ContentBudget()
) -> dict[str, object]:
    """Check a whole file read from ``source`` (seekable; call from a thread): what it holds
    (pixels, pages, duration) or :class:`MaterialRejected`.

    Sizes are read from the headers first, so that a file declaring more pixels or pages than
    the budget is refused before a decoder allocates for them."""
    category = TYPES[media_type][0]
    try:
        if category == "image":
            return _check_image(media_type, source, budget)
        if category == "pdf":
            return _check_pdf(source, budget)
        return _check_video(source, budget)
    except MaterialRejected:
        raise
    except Exception as exc:
        raise _corrupt(category, "", str(exc)) from None


def _check_image(media_type: str, source: BinaryIO, budget: ContentBudget) -> dict[str, object]:
    import cv2
    import numpy as np

    width, height = (png_size if media_type == "image/png" else jpeg_size)(source)
    _check_pixels(width, height, budget, "图片", "image")
    # at most materials.max_image_mb: small enough to decode from memory
    source.seek(0)
    image = cv2.imdecode(np.frombuffer(source.read(), np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise _corrupt("image", "无法解码", "does not decode")
    return {"width": int(image.shape[1]), "height": int(image.shape[0])}


def _check_pdf(source: BinaryIO, budget: ContentBudget) -> dict[str, object]:
    with PDFIUM:
        return _check_pdf_locked(source, budget)


def _check_pdf_locked(source: BinaryIO, budget: ContentBudget) -> dict[str, object]:
    import pypdfium2

    # pdfium reads the document through `source` as it needs it, not all at once
    pdf = pypdfium2.PdfDocument(source)
    try:
        pages = len(pdf)
        if pages < 1:
            raise _corrupt("pdf", "没有页面", "has no pages")
        if pages > budget.max_pdf_pages:
            raise MaterialRejected(
                "too_many_pages",
                f"PDF 文件有 {pages} 页，超过 {budget.max_pdf_pages} 页的上限 "
                f"/ the PDF has {pages} pages, more than the limit of "
                f"{budget.max_pdf_pages}",
            )
        for index in range(pages):
            width, height = pdf.get_page_size(index)
            if not (0 < width <= MAX_PAGE_POINTS and 0 < height <= MAX_PAGE_POINTS):
                raise MaterialRejected(
                    "page_too_large",
                    f"PDF 第 {index + 1} 页为 {width:.0f}×{height:.0f} 点，超过标准允许的 "
                    f"14400×14400 点 / page {index + 1} of the PDF is {width:.0f}x{height:.0f} "
                    "points, more than the 14400x14400 the PDF standard allows",
                )
    finally:
        pdf.close()
    return {"pages": pages}


def _check_video(source: BinaryIO, budget: ContentBudget) -> dict[str, object]:
    import av

    # FFmpeg's own per-frame limit guards the probing, which may decode a frame already;
    # the budget itself is checked on the declared size below, with a clear error.
    backstop = {"max_pixels": str(2 * budget.max_pixels + (1 << 20))}
    with av.open(source, mode="r", options=backstop) as container:
        if not container.streams.video:
            raise _corrupt("video", "没有视频流", "has no video stream")
        stream = container.streams.video[0]
        context = stream.codec_context
        if context.width or context.height:
            _check_pixels(context.width, context.height, budget, "视频画面", "video frame")
        context.options = {**context.options, **backstop}
        context.thread_count = 1
        frame = next(container.decode(stream), None)
        if frame is None:
            raise _corrupt("video", "没有可解码的画面", "has no decodable frame")
        _check_pixels(frame.width, frame.height, budget, "视频画面", "video frame")
        duration = (float(container.duration) / 1e6) if container.duration else None
        return {
            "codec": context.name,
            "width": frame.width,
            "height": frame.height,
            "duration": duration,
            "audio": bool(container.streams.audio),
        }


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


class PlainReader(io.RawIOBase):
    """The plaintext of an encrypted material as a seekable file, decrypting one chunk at a time
    (so that a parser reads a file of any size in about one chunk of memory). Every chunk is
    authenticated as it is read; a damaged one raises ``ValueError``. Use from one thread."""

    def __init__(self, path: Path, key: bytes, material_id: str) -> None:
        super().__init__()
        self._aead = AESGCM(key)
        self._material_id = material_id
        self._fh = open(path, "rb")
        stored = os.fstat(self._fh.fileno()).st_size
        self._count = max(1, -(-stored // (CHUNK + TAG)))
        self.size = stored - self._count * TAG
        if self.size < 0:
            self._fh.close()
            raise ValueError(f"material {material_id}: the file is truncated")
        self._pos = 0
        self._cached: tuple[int, bytes] | None = None

    def _chunk(self, index: int) -> bytes:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        self._fh.seek(index * (CHUNK + TAG))
        sealed = self._fh.read(CHUNK + TAG)
        last = index == self._count - 1
        try:
            plain = self._aead.decrypt(_nonce(index), sealed, _aad(self._material_id, index, last))
        except InvalidTag:
            raise ValueError(
                f"material {self._material_id}: chunk {index} fails "
                "authentication (damaged, truncated or reordered)"
            ) from None
        self._cached = (index, plain)
        return plain

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self.size:
            index, offset = divmod(self._pos, CHUNK)
            piece = self._chunk(index)[offset : offset + len(view) - done]
            view[done : done + len(piece)] = piece
            done += len(piece)
            self._pos += len(piece)
        return done

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
            self._cached = None
        super().close()


class MaterialWriter:
    """Receives a file in pieces; hashes and encrypts it as it comes into a temporary file next
    to where it will be kept (call from a thread). :meth:`seal` ends the file, :meth:`reader`
    reads it back for checking, :meth:`commit` keeps it, :meth:`abort` removes it."""

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
        # held until the file is kept or removed: start-up cleanup leaves a locked part alone
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._lock = os.dup(fd)
        self._fh = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self.size += len(data)
        self._buffer += data
        while len(self._buffer) > CHUNK:  # keep one chunk back: it may be the last
            self._seal_chunk(bytes(self._buffer[:CHUNK]), last=False)
            del self._buffer[:CHUNK]

    def _seal_chunk(self, chunk: bytes, *, last: bool) -> None:
        self._fh.write(
            self._aead.encrypt(
                _nonce(self._index), chunk, _aad(self.material_id, self._index, last)
            )
        )
        self._index += 1

    def seal(self) -> None:
        """Write the last chunk and close the temporary file (durably)."""
        if self._fh.closed:
            return
        self._seal_chunk(bytes(self._buffer), last=True)
        self._buffer.clear()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()

    def reader(self) -> io.BufferedReader:
        """The sealed file's plaintext, read back through its authenticated chunks."""
        return io.BufferedReader(PlainReader(self._tmp, self._key, self.material_id), 1 << 16)

    def commit(self) -> StoredMaterial:
        self.seal()
        os.replace(self._tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._unlock()
        kek = self._store.kek
        return StoredMaterial(
            self.material_id,
            self._hash.hexdigest(),
            self.size,
            kek.wrap(self._key),
            kek.fingerprint,
        )

    def _unlock(self) -> None:
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def finish(self) -> StoredMaterial:
        return self.commit()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self._tmp.unlink(missing_ok=True)
        self._unlock()


class MaterialStore:
    def __init__(self, directory: Path, kek: KeyEncryptionKey) -> None:
        self.directory = directory
        self.kek = kek
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._slots = directory / "uploading"
        self._slots.mkdir(exist_ok=True, mode=0o700)
        # A server killed mid-upload leaves a partial file that no row points to. One still
        # being written by another worker process is locked by it, and left alone.
        for partial in directory.glob("*.part"):
            try:
                fd = os.open(partial, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            else:
                partial.unlink(missing_ok=True)
            finally:
                os.close(fd)

    def take_upload_slot(self, actor: str, limit: int) -> int | None:
        """One of ``limit`` upload slots of ``actor``, held as a locked file (a descriptor to
        give to :meth:`give_back_slot`), or None when all are taken. The locks are the kernel's,
        so they hold across worker processes and end with a process that dies. Never waits."""
        name = hashlib.sha256(actor.encode()).hexdigest()[:24]
        for slot in range(limit):
            fd = os.open(self._slots / f"{name}.{slot}", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return fd
        return None

    @staticmethod
    def give_back_slot(fd: int) -> None:
        os.close(fd)  # closing the descriptor ends its lock

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
                    raise ValueError(
                        f"material {material_id}: chunk {index} fails "
                        "authentication (damaged, truncated or reordered)"
                    ) from None
                if last:
                    return
                block = following
                index += 1

    def read_all(
        self, material_id: str, wrapped_key: str, kek_fingerprint: str, expected_sha256: str
    ) -> bytes:
        """The whole plaintext, checked against the hash taken on receipt."""
        data = b"".join(self.chunks(material_id, wrapped_key, kek_fingerprint))
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected_sha256:
            raise ValueError(
                f"material {material_id}: SHA-256 {digest} is not the "
                f"{expected_sha256} taken on receipt"
            )
        return data

    def verify(
        self, material_id: str, wrapped_key: str, kek_fingerprint: str, expected_sha256: str
    ) -> None:
        """Read the whole file chunk by chunk and check it against the hash taken on receipt;
        ``KeyProblem`` or ``ValueError`` when it does not check out (call from a thread)."""
        digest = hashlib.sha256()
        for chunk in self.chunks(material_id, wrapped_key, kek_fingerprint):
            digest.update(chunk)
        if digest.hexdigest() != expected_sha256:
            raise ValueError(
                f"material {material_id}: SHA-256 {digest.hexdigest()} is not the "
                f"{expected_sha256} taken on receipt"
            )

    def open(self, material_id: str, wrapped_key: str, kek_fingerprint: str) -> PlainReader:
        """A kept file's plaintext as a seekable file, decrypted chunk by chunk."""
        key = self.kek.unwrap(wrapped_key, kek_fingerprint)
        return PlainReader(self.path_of(material_id), key, material_id)

    def delete(self, material_id: str) -> None:
        self.path_of(material_id).unlink(missing_ok=True)


__all__ = [
    "TYPES",
    "ContentBudget",
    "KeyProblem",
    "MaterialRejected",
    "MaterialStore",
    "PlainReader",
    "StoredMaterial",
    "check_content",
    "sniff",
]
