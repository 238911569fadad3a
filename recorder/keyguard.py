"""Refuse key files that are not secret: tracked by git, readable by group or others, or one of
the keys that were once published in this repository's history.

The first versions of this repository carried a custody signing key and a key-encryption key in
``keys/``. Anyone who cloned it holds them, so data signed or wrapped under them proves nothing.
Their fingerprints are listed here, computed as the server computes them (the signing key by the
SHA-256 of its raw Ed25519 public key, the KEK by SHA-256 of ``b"remotecase-kek" || key``), and a
server that finds one of them refuses to start.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

# Signing keys once in the repository (SHA-256 of the raw public key).
PUBLISHED_SIGNING_KEYS = frozenset(
    {
        "aeb56cb86e2ab0f389fe1a78e132839c9b27735b937b83003baf1b0068019dfc",
    }
)
# Key-encryption keys once in the repository (full KEK fingerprint).
PUBLISHED_KEKS = frozenset(
    {
        "02ba0ef7d7330e3f300dc2a1fdeeab01c28e3e264eb17afa645330d98a341e31",
    }
)

HOW_TO_RENEW = (
    "新部署：删除该文件后重新启动，服务器会生成新密钥；已有数据的部署：用 "
    "`remotecase keys rotate --signing` 或 `--kek` 换用新密钥。"
    " / A new deployment: delete the file and start again, the server makes a new key; a "
    "deployment with data: rotate to a new key with `remotecase keys rotate --signing` or "
    "`--kek`."
)


class UnsafeKey(Exception):
    """A key file that must not be used: the message says why and how to make a new one."""


def signing_fingerprint(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()


def kek_fingerprint(key: bytes) -> str:
    return hashlib.sha256(b"remotecase-kek" + key).hexdigest()


def _tracked_by_git(path: Path) -> bool:
    git = shutil.which("git")
    if git is None:
        return False
    try:
        result = subprocess.run(
            [git, "-C", str(path.parent), "ls-files", "--error-unmatch", "--", path.name],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def check_file(path: Path) -> None:
    """Raise UnsafeKey if ``path`` is readable by group or others, or tracked by git."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise UnsafeKey(
            f"密钥文件 {path} 可被其他用户读取（权限 {mode:04o}），请执行 chmod 600。"
            f" / key file {path} is readable by group or others (mode {mode:04o}): "
            f"chmod 600 it, and make a new key if others may have read it. {HOW_TO_RENEW}"
        )
    if _tracked_by_git(path):
        raise UnsafeKey(
            f"密钥文件 {path} 已被 git 跟踪，任何拿到仓库的人都持有它。"
            f" / key file {path} is tracked by git: anyone with the repository holds it. "
            f"Remove it from the repository (git rm --cached) and {HOW_TO_RENEW}"
        )


def check_signing_key(path: Path, raw_public: bytes) -> None:
    if signing_fingerprint(raw_public) in PUBLISHED_SIGNING_KEYS:
        raise UnsafeKey(
            f"签名密钥 {path} 曾在本项目仓库中公开，不能用于签署证据。"
            f" / signing key {path} was published in this project's repository and signs "
            f"nothing that can be trusted. {HOW_TO_RENEW}"
        )
    check_file(path)


def check_kek(path: Path, key: bytes) -> None:
    if kek_fingerprint(key) in PUBLISHED_KEKS:
        raise UnsafeKey(
            f"密钥加密密钥 {path} 曾在本项目仓库中公开，不能保护录像与材料。"
            f" / key-encryption key {path} was published in this project's repository and "
            f"protects nothing. {HOW_TO_RENEW}"
        )
    check_file(path)
