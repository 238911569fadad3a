"""The shared helpers of ``common/``: the bytes the custody log hashes and signs (the recorder
and the verifier both use these, so a reference written by the verifier is hashed and exported
by the recorder the same way), and files written the way recordings are written."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from common.files import write_atomic, write_exclusive
from common.hashing import canonical, sha256_file


def test_canonical_is_the_custody_logs_form() -> None:
    # known answer: changing this form changes every hash and signature already made
    record = {"b": [1, 2.5, None], "a": "民警 / officer", "c": {"z": True, "y": "\u00e9"}}
    assert (
        canonical(record)
        == '{"a":"民警 / officer","b":[1,2.5,null],"c":{"y":"é","z":true}}'.encode()
    )
    assert canonical({"line": "a\nb"}) == b'{"line":"a\\nb"}'  # one entry stays one line


def test_file_hash_known_answers(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"abc")  # FIPS 180-2's test vector
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    path.write_bytes(b"")
    assert sha256_file(path) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    data = os.urandom(3 << 20) + b"tail"  # more than one 1 MiB block, and a partial last one
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_write_exclusive_refuses_an_existing_file_and_creates_0600(tmp_path: Path) -> None:
    path = tmp_path / "reference.json"
    write_exclusive(path, b"first")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_exclusive(path, b"second")
    assert path.read_bytes() == b"first"


def test_write_atomic_replaces_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "reference.json"
    write_atomic(path, b"old")
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference.json"]
