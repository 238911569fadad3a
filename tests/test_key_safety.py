"""No secret in the tree, and no server that signs or encrypts with a key others can read."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from recorder import keyguard
from recorder.keys import KeyEncryptionKey, KeyProblem, load_or_create_signing_key

ROOT = Path(__file__).resolve().parent.parent
GIT = shutil.which("git")
needs_git = pytest.mark.skipif(
    GIT is None or not (ROOT / ".git").exists(), reason="needs git and the repository"
)

PRIVATE_PEM = re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
# The fixture string this very file searches for is built, not written, so it is not a match.
OPENSSH = b"-----BEGIN OPENSSH " + b"PRIVATE KEY-----"


def tracked_files() -> list[Path]:
    out = subprocess.run(
        [GIT or "git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True
    ).stdout
    return [ROOT / name.decode() for name in out.split(b"\0") if name]


@needs_git
def test_no_private_key_material_is_tracked() -> None:
    found = []
    for path in tracked_files():
        if not path.is_file():
            continue
        data = path.read_bytes()
        if PRIVATE_PEM.search(data) or OPENSSH in data:
            found.append(f"{path.relative_to(ROOT)}: a PEM private key")
        if data[:4] == b"\x7fELF" and len(data) > 18 and data[16] == 4:  # ET_CORE
            found.append(f"{path.relative_to(ROOT)}: a core dump")
        if path.suffix == ".key":
            try:
                if len(base64.b64decode(data.strip(), validate=True)) in (16, 24, 32):
                    found.append(f"{path.relative_to(ROOT)}: a raw symmetric key")
            except ValueError:
                pass
        if path.name in ("custody-ed25519.pem", "recording-kek.key", "token-secret"):
            found.append(f"{path.relative_to(ROOT)}: a key file by name")
    assert found == []


def _published(path: str) -> bytes | None:
    """The key a first version of this repository published, from its history."""
    commits = subprocess.run(
        [GIT or "git", "-C", str(ROOT), "log", "--all", "--format=%H", "--", path],
        capture_output=True,
        text=True,
    ).stdout.split()
    for commit in commits:
        shown = subprocess.run(
            [GIT or "git", "-C", str(ROOT), "show", f"{commit}:{path}"], capture_output=True
        )
        if shown.returncode == 0:
            return shown.stdout
    return None


@needs_git
def test_keys_published_in_history_are_refused(tmp_path: Path) -> None:
    signing, kek = _published("keys/custody-ed25519.pem"), _published("keys/recording-kek.key")
    if signing is None or kek is None:
        pytest.skip("a shallow clone without the history that published the keys")
    key_path, kek_path = tmp_path / "custody-ed25519.pem", tmp_path / "recording-kek.key"
    for path, data in ((key_path, signing), (kek_path, kek)):
        path.write_bytes(data)
        path.chmod(0o600)
    with pytest.raises(KeyProblem, match="published"):
        load_or_create_signing_key(key_path)
    with pytest.raises(KeyProblem, match="published"):
        KeyEncryptionKey.load_or_create(kek_path)


def test_every_published_fingerprint_is_a_sha256() -> None:
    for value in keyguard.PUBLISHED_SIGNING_KEYS | keyguard.PUBLISHED_KEKS:
        assert re.fullmatch(r"[0-9a-f]{64}", value)


def test_new_keys_are_private_and_accepted(tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path / "keys" / "custody-ed25519.pem")
    kek = KeyEncryptionKey.load_or_create(tmp_path / "keys" / "recording-kek.key")
    for name in ("custody-ed25519.pem", "recording-kek.key"):
        assert (tmp_path / "keys" / name).stat().st_mode & 0o777 == 0o600
    assert isinstance(key, Ed25519PrivateKey) and len(kek.fingerprint) == 16


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "custody-ed25519.pem"
    load_or_create_signing_key(path)
    path.chmod(0o644)
    with pytest.raises(KeyProblem, match="chmod 600"):
        load_or_create_signing_key(path)
    kek_path = tmp_path / "recording-kek.key"
    KeyEncryptionKey.load_or_create(kek_path)
    kek_path.chmod(0o640)
    with pytest.raises(KeyProblem, match="readable by group or others"):
        KeyEncryptionKey.load_or_create(kek_path)


@pytest.mark.skipif(GIT is None, reason="needs git")
def test_a_key_tracked_by_git_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run([GIT or "git", "init", "-q", str(repo)], check=True)
    key = Ed25519PrivateKey.generate()
    path = repo / "custody-ed25519.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    load_or_create_signing_key(path)  # untracked: accepted
    subprocess.run([GIT or "git", "-C", str(repo), "add", path.name], check=True)
    with pytest.raises(KeyProblem, match="tracked by git"):
        load_or_create_signing_key(path)


def test_serve_refuses_an_unsafe_key_and_says_how_to_renew(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    load_or_create_signing_key(keys / "custody-ed25519.pem")
    (keys / "custody-ed25519.pem").chmod(0o604)
    env = {
        **os.environ,
        "REMOTECASE_KEYS__DIR": str(keys),
        "REMOTECASE_STORAGE__DATA_DIR": str(tmp_path / "var"),
        "REMOTECASE_SERVER__PORT": "0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "control.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "chmod 600" in result.stderr and "remotecase keys rotate" in result.stderr
