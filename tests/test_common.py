"""The shared helpers of ``common/`` (the verifier's hashing and durable writes): they give the
bytes the custody log's own functions give, and write files the way recordings are written."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from common.files import write_atomic, write_exclusive
from common.hashing import canonical, sha256_file
from recorder import custody


def test_canonical_and_file_hash_are_the_custody_logs(tmp_path: Path) -> None:
    # until the recorder imports these too, both copies must give the same bytes: a reference
    # written by the verifier is hashed and exported by the recorder
    record = {"b": [1, 2.5, None], "a": "民警 / officer", "c": {"z": True, "y": "\u00e9"}}
    assert canonical(record) == custody.canonical(record)
    assert canonical(record) == '{"a":"民警 / officer","b":[1,2.5,null],"c":{"y":"é","z":true}}' \
        .encode()
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(3 << 20) + b"tail")  # more than one 1 MiB block
    assert sha256_file(path) == custody.sha256_file(path)


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
