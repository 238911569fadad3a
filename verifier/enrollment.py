"""Reference photos: checked, embedded, and kept only as an encrypted embedding.

The photo itself is not stored: its SHA-256, its quality figures and the engine's embedding
are, the embedding encrypted with AES-256-GCM under a key wrapped by the recordings'
key-encryption key (face data is personal data). Stored in
``<data_dir>/faces/<room>/<participant>.json``.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.files import write_atomic
from common.hashing import canonical

from .engine import Engine

MAX_PHOTO_BYTES = 10 * 1024 * 1024


class EnrollmentRejected(Exception):
    """A reference photo refused: ``code`` for programs (and the catalogs' ``enrollment.*``),
    ``message`` for people, ``中文 / English``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class QualityRules:
    min_face: int = 80  # pixels, shorter side of the face box
    min_sharpness: float = 40.0  # variance of the Laplacian of the aligned 112x112 crop


def decode_photo(data: bytes) -> np.ndarray:
    if not data:
        raise EnrollmentRejected("empty", "照片为空 / the photo is empty")
    if len(data) > MAX_PHOTO_BYTES:
        raise EnrollmentRejected(
            "too_large",
            f"照片超过 {MAX_PHOTO_BYTES} 字节 / the photo exceeds {MAX_PHOTO_BYTES} bytes",
        )
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise EnrollmentRejected(
            "not_an_image",
            "文件不是 JPEG、PNG 等图像 / the file is not a JPEG, PNG or other image",
        )
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def examine(
    engine: Engine, rgb: np.ndarray, rules: QualityRules
) -> tuple[np.ndarray, dict[str, Any]]:
    """Embedding and quality of the one face in a reference photo, or a rejection."""
    faces = engine.faces(rgb, min_face=20)  # find small faces too, to say they are too small
    if not faces:
        raise EnrollmentRejected("no_face", "照片中没有找到人脸 / no face was found in the photo")
    if len(faces) > 1:
        raise EnrollmentRejected(
            "multiple_faces",
            f"照片中有 {len(faces)} 张人脸，登记照片应只有本人 / {len(faces)} faces in the "
            "photo; a reference shows one person",
        )
    face = faces[0]
    if face.quality["size"] < rules.min_face:
        raise EnrollmentRejected(
            "face_too_small",
            f"照片中的人脸只有 {face.quality['size']:.0f} 像素，至少需要 {rules.min_face} 像素 / "
            f"the face is {face.quality['size']:.0f} px; at least {rules.min_face} px are needed",
        )
    if face.quality["sharpness"] < rules.min_sharpness:
        raise EnrollmentRejected(
            "too_blurred",
            f"照片中的人脸过于模糊（清晰度 {face.quality['sharpness']:.0f}，至少需要 "
            f"{rules.min_sharpness:.0f}） / the face is too blurred (sharpness "
            f"{face.quality['sharpness']:.0f}, at least {rules.min_sharpness:.0f} needed)",
        )
    return engine.embed(rgb, face), dict(face.quality)


class KeyWrapper(Protocol):
    """Wraps each reference's data key: the service's key-encryption key
    (:class:`recorder.keys.KeyEncryptionKey`)."""

    @property
    def fingerprint(self) -> str: ...

    def wrap(self, data_key: bytes) -> str: ...

    def unwrap(self, wrapped_b64: str, expected_fingerprint: str) -> bytes: ...


class EnrollmentStore:
    def __init__(self, directory: Path, kek: KeyWrapper) -> None:
        self.directory = directory
        self.kek = kek

    def _path(self, room: str, participant: str) -> Path:
        return self.directory / room / f"{participant}.json"

    def save(
        self,
        room: str,
        participant: str,
        *,
        photo_sha256: str,
        quality: dict[str, Any],
        embedding: np.ndarray,
        model: dict[str, object],
        actor: str,
    ) -> dict[str, Any]:
        key = AESGCM.generate_key(bit_length=256)
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(key).encrypt(
            nonce, embedding.astype("<f8").tobytes(), f"face/{room}/{participant}".encode()
        )
        record = {
            "room": room,
            "participant": participant,
            "photo_sha256": photo_sha256,
            "quality": quality,
            "model": model,
            "enrolled_by": actor,
            "enrolled_at": datetime.datetime.now(datetime.UTC).isoformat(),
            "embedding": {
                "algorithm": "AES-256-GCM",
                "ciphertext": base64.b64encode(nonce + sealed).decode(),
                "wrapped_key": self.kek.wrap(key),
                "kek_fingerprint": self.kek.fingerprint,
            },
        }
        path = self._path(room, participant)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, canonical(record))
        return {k: v for k, v in record.items() if k != "embedding"}

    def load(self, room: str, participant: str) -> tuple[dict[str, Any], np.ndarray] | None:
        path = self._path(room, participant)
        if not path.exists():
            return None
        record = json.loads(path.read_bytes())
        sealed = record["embedding"]
        key = self.kek.unwrap(sealed["wrapped_key"], sealed["kek_fingerprint"])
        raw = base64.b64decode(sealed["ciphertext"])
        plain = AESGCM(key).decrypt(raw[:12], raw[12:], f"face/{room}/{participant}".encode())
        return record, np.frombuffer(plain, dtype="<f8").copy()

    def delete(self, scope: str, participant: str) -> bool:
        path = self._path(scope, participant)
        if not path.exists():
            return False
        path.unlink()
        return True


def photo_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
