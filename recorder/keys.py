"""Keys kept apart from the data: the custody signing key and the key-encryption key.

* The **signing key** (Ed25519) signs tree heads and manifests; its public half is all an outsider
  needs to verify.
* The **key-encryption key** (KEK, AES-256) wraps each recording's own data key (RFC 3394 key
  wrap). Recordings store only the wrapped key and the KEK's fingerprint, so a copy of the data
  directory without the keys directory decrypts nothing.

Files are created on first use with exclusive create and mode 0600, in a directory (mode 0700)
that configuration keeps outside ``storage.data_dir``.

**Context strings.** Every signature this project makes is over ``CONTEXT || message`` with a
context of its own (``remotecase-<object>-v<n>\0``), so a signature made for one kind of object
can never be passed off as another's: a tree head as a package, a rotation statement as a
manifest. The one exception is the manifest signature of recordings sealed before manifests had a
context; since nothing else is ever signed without a context, a bare signature can only be one of
those, and verification names it as such.
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

from common.files import fsync_dir

from . import keyguard

STH_CONTEXT = b"remotecase-sth-v2\x00"
MANIFEST_CONTEXT = b"remotecase-manifest-v1\x00"
PACKAGE_CONTEXT = b"remotecase-package-v1\x00"
ROTATION_CONTEXT = b"remotecase-key-rotation-v1\x00"
WITNESS_CONTEXT = b"remotecase-witness-v1\x00"

SIGNING_KEY_FILE = "custody-ed25519.pem"
PUBLIC_KEY_FILE = "custody-ed25519.pub.pem"
KEK_FILE = "recording-kek.key"
# written first by a rotation and renamed over the key once everything is done; a leftover one
# means a rotation was interrupted (the server refuses to start until it is finished)
NEXT_SUFFIX = ".next"


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


def _refuse_unfinished_rotation(path: Path) -> None:
    pending = path.with_name(path.name + NEXT_SUFFIX)
    if pending.exists():
        raise KeyProblem(
            f"密钥轮换未完成（{pending} 仍在），请再次执行 `remotecase keys rotate` 完成它。"
            f" / a key rotation was interrupted ({pending} exists): run the same "
            "`remotecase keys rotate` command again to finish it before starting the server."
        )


def write_key_file(path: Path, data: bytes) -> None:
    """A new key file: exclusive create, mode 0600, fsynced, in a 0700 directory."""
    if not _create_exclusive(path, data):
        raise KeyProblem(f"{path} exists already")
    fsync_dir(path.parent)


def signing_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_signing_key(path: Path, *, guard: bool = True) -> Ed25519PrivateKey:
    """An existing signing key, checked by the keyguard unless ``guard`` is off (a rotation
    must read the unsafe key it replaces). No rotation check, no creation."""
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyProblem(f"signing key {path}: not a PEM private key ({exc})") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise KeyProblem(f"signing key {path}: not an Ed25519 key")
    raw = loaded.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    try:
        if guard:
            keyguard.check_signing_key(path, raw)
    except keyguard.UnsafeKey as exc:
        raise KeyProblem(str(exc)) from None
    return loaded


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    _refuse_unfinished_rotation(path)
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _create_exclusive(path, pem)
    return load_signing_key(path)


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(data: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyProblem(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyProblem("not an Ed25519 public key")
    return key


def raw_public(public: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    if isinstance(public, Ed25519PrivateKey):
        public = public.public_key()
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_from_raw(raw: bytes) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise KeyProblem(f"not a raw Ed25519 public key: {exc}") from None


def key_id(public: Ed25519PublicKey) -> str:
    """The first 16 hex digits of SHA-256 over the raw 32-byte Ed25519 public key."""
    return hashlib.sha256(raw_public(public)).hexdigest()[:16]


def sign_in_context(key: Ed25519PrivateKey, context: bytes, message: bytes) -> str:
    return sign(key, context + message)


def verify_in_context(
    public: Ed25519PublicKey, context: bytes, signature_b64: str, message: bytes
) -> bool:
    return verify_signature(public, signature_b64, context + message)


def sign_manifest(key: Ed25519PrivateKey, body: bytes) -> str:
    """The manifest signature (``remotecase-manifest-v1\\0 || manifest.json``)."""
    return sign_in_context(key, MANIFEST_CONTEXT, body)


def verify_manifest(public: Ed25519PublicKey, signature_b64: str, body: bytes) -> str | None:
    """``"context"``, ``"legacy"`` (a bare signature, see the module doc) or None."""
    if verify_in_context(public, MANIFEST_CONTEXT, signature_b64, body):
        return "context"
    if verify_signature(public, signature_b64, body):
        return "legacy"
    return None


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
        # the first 16 hex digits of SHA-256(b"remotecase-kek" || key): names the KEK without
        # revealing it (keyguard lists the full digest of the published ones)
        self.fingerprint = hashlib.sha256(b"remotecase-kek" + key).hexdigest()[:16]

    @classmethod
    def generate(cls) -> KeyEncryptionKey:
        return cls(secrets.token_bytes(32))

    def file_bytes(self) -> bytes:
        return base64.b64encode(self._key) + b"\n"

    def rewrap(self, wrapped_b64: str, fingerprint: str, new: KeyEncryptionKey) -> str:
        """A data key wrapped under this KEK, wrapped under ``new`` instead."""
        return new.wrap(self.unwrap(wrapped_b64, fingerprint))

    @classmethod
    def load_or_create(cls, path: Path) -> KeyEncryptionKey:
        _refuse_unfinished_rotation(path)
        if not path.exists():
            _create_exclusive(path, base64.b64encode(secrets.token_bytes(32)) + b"\n")
        return cls.load(path)

    @classmethod
    def load(cls, path: Path, *, guard: bool = True) -> KeyEncryptionKey:
        """An existing KEK file, checked by the keyguard unless ``guard`` is off."""
        try:
            key = base64.b64decode(path.read_bytes().strip(), validate=True)
        except ValueError:
            raise KeyProblem(f"key-encryption key {path}: not base64") from None
        try:
            if guard:
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
                f"{expected_fingerprint}, the configured KEK is {self.fingerprint}"
            )
        try:
            return aes_key_unwrap(self._key, base64.b64decode(wrapped_b64))
        except (InvalidUnwrap, ValueError):
            raise KeyProblem("the wrapped data key does not unwrap under this KEK") from None
