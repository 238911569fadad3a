"""The custody log against a small independent checker written here from RFC 9162 2.1.

Nothing below imports recorder.merkle: the checker is the RFC's pseudo-code in plain Python, so a
shared bug cannot hide.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from recorder.custody import CustodyLog, verify_log


def rfc_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def rfc_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def rfc_verify_inclusion(
    leaf_index: int, tree_size: int, leaf: bytes, path: list[bytes], root: bytes
) -> bool:
    # RFC 9162 section 2.1.3.2, steps 1-6
    if leaf_index >= tree_size:
        return False
    fn, sn, r = leaf_index, tree_size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = rfc_node(p, r)
            if fn % 2 == 0:
                while not (fn % 2 == 1 or fn == 0):
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = rfc_node(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def rfc_verify_consistency(
    first: int, second: int, first_hash: bytes, second_hash: bytes, path: list[bytes]
) -> bool:
    # RFC 9162 section 2.1.4.2, steps 1-7
    if first == second:
        return not path and first_hash == second_hash
    if first & (first - 1) == 0:
        path = [first_hash, *path]
    fn, sn = first - 1, second - 1
    while fn % 2 == 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr, sr = rfc_node(c, fr), rfc_node(c, sr)
            if fn % 2 == 0:
                while not (fn % 2 == 1 or fn == 0):
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = rfc_node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == first_hash and sr == second_hash and sn == 0


@pytest.fixture
def log(tmp_path: Path) -> Iterator[CustodyLog]:
    custody = CustodyLog(tmp_path / "custody", Ed25519PrivateKey.generate())
    yield custody
    custody.close()


def test_proofs_check_out_with_the_independent_checker(log: CustodyLog) -> None:
    heads = []
    for i in range(23):
        log.append("segment.written", actor="recorder", room="r", segment=i)
        if i in (0, 1, 2, 6, 7, 8, 15, 16, 22):
            heads.append(log.sign_head())
    lines = [log.entry_line(i) for i in range(log.size)]
    for head in heads:
        assert head.verify(log.public_key)
        root = bytes.fromhex(head.root_hash)
        for index in range(head.tree_size):
            proof = [bytes.fromhex(h) for h in log.inclusion_proof(index, head.tree_size)]
            assert rfc_verify_inclusion(
                index, head.tree_size, rfc_leaf(lines[index]), proof, root
            ), (index, head.tree_size)
            # the wrong leaf or position fails
            assert not rfc_verify_inclusion(index, head.tree_size, rfc_leaf(b"forged"), proof, root)
    for old in heads:
        for new in heads:
            if old.tree_size > new.tree_size:
                continue
            proof = [bytes.fromhex(h) for h in log.consistency_proof(old.tree_size, new.tree_size)]
            assert rfc_verify_consistency(
                old.tree_size,
                new.tree_size,
                bytes.fromhex(old.root_hash),
                bytes.fromhex(new.root_hash),
                proof,
            )


def test_a_fork_fails_consistency(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    honest = CustodyLog(tmp_path / "a", key)
    forked = CustodyLog(tmp_path / "b", key)
    for i in range(5):
        honest.append("x", actor="a", n=i)
        forked.append("x", actor="a", n=i if i != 2 else 99)  # history rewritten at entry 2
    old = honest.sign_head()
    for i in range(5, 9):
        forked.append("x", actor="a", n=i)
    new = forked.sign_head()
    proof = [bytes.fromhex(h) for h in forked.consistency_proof(old.tree_size, new.tree_size)]
    assert not rfc_verify_consistency(
        old.tree_size,
        new.tree_size,
        bytes.fromhex(old.root_hash),
        bytes.fromhex(new.root_hash),
        proof,
    )
    honest.close()
    forked.close()


def test_entries_are_durable_and_a_torn_line_is_dropped(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    log = CustodyLog(tmp_path / "c", key)
    for i in range(3):
        log.append("recording.viewed", actor="supervisor", reason="review", n=i)
    log.sign_head()
    log.close()
    path = tmp_path / "c" / "entries.log"
    path.write_bytes(path.read_bytes() + b'{"index":3,"type":"torn')  # crash mid-append
    reopened = CustodyLog(tmp_path / "c", key)
    assert reopened.size == 3
    assert path.read_bytes().endswith(b"\n")
    entry = reopened.append("recording.viewed", actor="supervisor", reason="again")
    assert entry["index"] == 3
    assert verify_log(tmp_path / "c", key.public_key()) == []
    assert json.loads(path.read_bytes().splitlines()[-1])["reason"] == "again"
    reopened.close()


def test_two_writers_interleave_and_each_reads_only_what_is_new(tmp_path: Path) -> None:
    """The server and the CLI append to one log (each takes the file lock and first reads what
    the other appended): entries interleave without a gap or a repeat, each log's tree covers
    every entry, and a step reads only the bytes appended since the last one, not the whole
    file (a recording appends tens of lines a second)."""
    key = Ed25519PrivateKey.generate()
    server, cli = CustodyLog(tmp_path / "c", key), CustodyLog(tmp_path / "c", key)
    for i in range(10):
        writer = server if i % 3 else cli
        assert writer.append("recording.viewed", actor="supervisor", n=i)["index"] == i
    server.sign_head()
    cli.refresh()
    assert server.size == cli.size == 10
    assert [e["n"] for e in cli.entries()] == list(range(10))
    assert cli.latest_head() == server.latest_head()
    entries = tmp_path / "c" / "entries.log"
    assert server._entries_file.offset == cli._entries_file.offset == entries.stat().st_size
    assert verify_log(tmp_path / "c", key.public_key()) == []
    server.close()
    cli.close()


def test_one_pass_roots_equal_the_recursive_tree_hash() -> None:
    from recorder import merkle

    leaves = [rfc_leaf(str(i).encode()) for i in range(70)]
    roots = merkle.roots_at(leaves, list(range(71)))
    compact = merkle.CompactRange()
    for size in range(71):
        assert roots[size] == merkle.root(leaves[:size]), size
        assert compact.root() == roots[size]
        if size < 70:
            compact.append(leaves[size])
    # and against the RFC's definition, independently: MTH of 5 leaves
    a, b, c, d, e = leaves[:5]
    assert roots[5] == rfc_node(rfc_node(rfc_node(a, b), rfc_node(c, d)), e)


def test_access_to_evidence_is_under_a_signed_head_at_once(tmp_path: Path) -> None:
    """A view or download cannot be cut from the end of the log before the next seal: its
    append signs a head in the same locked step; a verdict waits for the next head."""
    log = CustodyLog(tmp_path / "c", Ed25519PrivateKey.generate())
    try:
        log.append("verification.verdict", actor="verifier", reason="sample")
        assert log.latest_head() is None
        for kind in ("recording.viewed", "recording.downloaded", "material.downloaded"):
            log.append(kind, actor="supervisor", reason="review")
            head = log.latest_head()
            assert head is not None and head.tree_size == log.size
    finally:
        log.close()
