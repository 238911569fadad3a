"""Keys kept apart from the data: the custody signing key and the key-encryption key.

* The **signing key** (Ed25519) signs tree heads and manifests; its public half is all an outsider
  needs to verify.
* The **key-encryption key** (KEK, AES-256) wraps each recording's own data key (RFC 3394 key
  wrap). Recordings store only the wrapped key and the KEK's fingerprint, so a copy of the data
  directory without the keys directory decrypts nothing.

Files are created on first use with exclusive create and mode 0600, in a directory that
configuration keeps outside ``storage.data_dir``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from . import keyguard


class KeyProblem(Exception):
    """A key is missing, malformed, or not the one the data was made with."""


def _create_exclusive(path: Path, data: bytes) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        _create_exclusive(path, pem)
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyProblem(f"signing key {path}: not a PEM private key ({exc})") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise KeyProblem(f"signing key {path}: not an Ed25519 key")
    raw = loaded.public_key().public_bytes(serialization.Encoding.Raw,
                                           serialization.PublicFormat.Raw)
    try:
        keyguard.check_signing_key(path, raw)
    except keyguard.UnsafeKey as exc:
        raise KeyProblem(str(exc)) from None
    return loaded


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(data: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyProblem(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyProblem("not an Ed25519 public key")
    return key


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def verify_signature(public: Ed25519PublicKey, signature_b64: str, message: bytes) -> bool:
    try:
        public.verify(base64.b64decode(signature_b64, validate=True), message)
        return True
    except (InvalidSignature, ValueError):
        return False


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message)).decode()


class KeyEncryptionKey:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise KeyProblem("key-encryption key must be 32 bytes (AES-256)")
        self._key = key
        self.fingerprint = hashlib.sha256(b"remotecase-kek" + key).hexdigest()[:16]

    @classmethod
    def load_or_create(cls, path: Path) -> KeyEncryptionKey:
        if not path.exists():
            _create_exclusive(path, base64.b64encode(secrets.token_bytes(32)) + b"\n")
        try:
            key = base64.b64decode(path.read_bytes().strip(), validate=True)
        except ValueError:
            raise KeyProblem(f"key-encryption key {path}: not base64") from None
        try:
            keyguard.check_kek(path, key)
        except keyguard.UnsafeKey as exc:
            raise KeyProblem(str(exc)) from None
        return cls(key)

    def wrap(self, data_key: bytes) -> str:
        return base64.b64encode(aes_key_wrap(self._key, data_key)).decode()

    def unwrap(self, wrapped_b64: str, expected_fingerprint: str) -> bytes:
        if expected_fingerprint != self.fingerprint:
            raise KeyProblem(
                f"wrong key-encryption key: the recording was sealed under KEK "
                f"{expected_fingerprint}, the configured KEK is {self.fingerprint}")
        try:
            return aes_key_unwrap(self._key, base64.b64decode(wrapped_b64))
        except (InvalidUnwrap, ValueError):
            raise KeyProblem("the wrapped data key does not unwrap under this KEK") from None
