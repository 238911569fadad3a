"""Key lifecycle: a new signing key handed over in a log entry both keys sign, and a new KEK
that rewraps every data key without touching media; old and new recordings still verify."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.hashing import canonical
from control.documents import store as documents_store
from control.documents.desk import DocumentDesk, IntegrityProblem
from control.materials.store import MaterialStore
from recorder.custody import CustodyLog, TreeHead
from recorder.export import export_recording
from recorder.keys import (
    KeyEncryptionKey,
    KeyProblem,
    key_id,
    load_or_create_signing_key,
    load_public_key,
    load_signing_key,
    sign,
)
from recorder.rotation import rotate_kek
from recorder.verify import verify_package, verify_recording
from recorder.witness import load_checkpoints
from tests.custody_helpers import Site, failures, lines, make_site, record, write_lines
from verifier.enrollment import EnrollmentStore


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return make_site(tmp_path_factory.mktemp("rotation") / "site")


@pytest.fixture
def site(golden: Site, tmp_path: Path) -> Site:
    return golden.copy(tmp_path / "site")


async def _keys_cli(site: Site, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "control.cli",
        "keys",
        "rotate",
        *args,
        "--actor",
        "admin-li",
        "--reason",
        "annual rotation",
        env={**os.environ, **site.config_env()},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


async def test_signing_rotation_chains_and_both_recordings_verify(site: Site) -> None:
    old_public = site.public
    old_id = key_id(old_public)
    code, out = await _keys_cli(site, "--signing")
    assert code == 0, out
    new_public = site.public
    new_id = key_id(new_public)
    assert new_id != old_id and f"{old_id} -> {new_id}" in out
    assert out.startswith("签名密钥已轮换：") and " / signing key rotated: " in out
    assert (site.keys / f"custody-ed25519.{old_id}.pub.pem").exists()
    assert not (site.keys / "custody-ed25519.pem.next").exists()
    assert os.stat(site.keys / "custody-ed25519.pem").st_mode & 0o777 == 0o600
    entries = [json.loads(line) for line in lines(site.custody / "entries.log")]
    rotation = next(e for e in entries if e["type"] == "keys.signing_rotated")
    assert (rotation["old_key_id"], rotation["new_key_id"]) == (old_id, new_id)
    assert rotation["actor"] == "admin-li"

    # a second recording, made by a server that loaded the new key
    second = await record(site.base, room_id="second-room")

    # the checks read, decrypt and verify whole recordings and packages: in a thread, not
    # on the event loop (the suite's blocking check flagged them)
    def check() -> None:
        checkpoints = load_checkpoints(site.base / "checkpoints")
        for recording_id in (site.recording_id, second):
            directory = site.base / "var" / "recordings" / recording_id
            for anchor in (old_public, new_public):  # trust runs both ways along the chain
                findings = verify_recording(
                    directory,
                    site.custody,
                    anchor,
                    site.kek(),
                    checkpoints=checkpoints,
                    witness=site.witness_public,
                )
                assert failures(findings) == [], (recording_id, failures(findings))
                keys = next(f.detail for f in findings if f.check == "signing keys")
                assert f"by key {old_id}" in keys and f"by key {new_id}" in keys
        heads = [TreeHead.from_json(json.loads(h)) for h in lines(site.custody / "heads.log")]
        assert [h.key_id for h in heads if h.tree_size <= rotation["index"]] and all(
            h.key_id == old_id for h in heads if h.tree_size <= rotation["index"]
        )
        assert all(h.key_id == new_id for h in heads if h.tree_size > rotation["index"])
        first_seal = json.loads((site.recording / "manifest.sig.json").read_bytes())
        assert first_seal["tree_head"]["key_id"] == old_id

        # the old recording exported after the rotation: signed by the new key, sealed by the old
        custody = site.custody_log()
        try:
            out_dir = site.base / "package-after"
            export_recording(
                recording_dir=site.recording,
                custody=custody,
                kek=site.kek(),
                signing_key=load_or_create_signing_key(site.keys / "custody-ed25519.pem"),
                out=out_dir,
                actor="sup",
                reason="appeal",
            )
        finally:
            custody.close()
        for anchor in (old_public, new_public):
            findings = verify_package(out_dir, anchor, witness=site.witness_public)
            assert failures(findings) == []
        assert any(f.check == "seal" and f"key {old_id}" in f.detail for f in findings)
        assert any(f.check == "package signature" and f"key {new_id}" in f.detail for f in findings)
        # the package made before the rotation holds no rotation entry: it verifies with the old
        # (published) key, or with both; the new key alone cannot vouch for it, and says so
        assert failures(verify_package(site.package, old_public)) == []
        assert failures(verify_package(site.package, [new_public, old_public])) == []
        fails = failures(verify_package(site.package, new_public))
        assert any("made before a rotation? give the older published key too" in f for f in fails)

    await asyncio.to_thread(check)


async def test_a_retired_key_signs_nothing_more(site: Site) -> None:
    old_key = load_signing_key(site.keys / "custody-ed25519.pem")
    code, out = await _keys_cli(site, "--signing")
    assert code == 0, out
    # a server still running with the old key refuses to sign a head under it
    stale = CustodyLog(site.custody, old_key)
    try:
        stale.append("verification.verdict", actor="x")
        with pytest.raises(KeyProblem, match="retired"):
            stale.sign_head()
    finally:
        stale.close()
    # someone holding the old key appends a head under it after the rotation: named
    leaves_size = len(lines(site.custody / "entries.log"))
    from recorder import merkle

    leaves = [merkle.leaf_hash(line) for line in lines(site.custody / "entries.log")]
    forged = TreeHead(leaves_size, 1, merkle.root(leaves).hex(), key_id(old_key.public_key()), "")
    forged = TreeHead(
        forged.tree_size, 1, forged.root_hash, forged.key_id, sign(old_key, forged.signed_bytes())
    )
    heads = site.custody / "heads.log"
    write_lines(heads, [*lines(heads), canonical(forged.to_json())])
    fails = failures(verify_recording(site.recording, site.custody, site.public))
    assert any("a retired key signed after its rotation" in f for f in fails), fails


def _add_material_and_face(site: Site, kek: KeyEncryptionKey) -> tuple[str, bytes, str]:
    store = MaterialStore(site.base / "var" / "materials", kek)
    material_id = store.new_id()
    data = os.urandom(3 << 20) + b"evidence photo"
    writer = store.writer(material_id)
    writer.write(data)
    stored = writer.finish()
    conn = sqlite3.connect(site.base / "var" / "control.sqlite3")
    with conn:
        conn.execute(
            "INSERT INTO materials (id, case_id, origin, uploaded_by, name, media_type, size, "
            "sha256, wrapped_key, kek_fingerprint, custody_index, created_at) "
            "VALUES (?, 1, 'officer', 'officer:wang', 'photo.jpg', 'image/jpeg', ?, ?, ?, ?, 0, "
            "'2026-01-01')",
            (material_id, stored.size, stored.sha256, stored.wrapped_key, stored.kek_fingerprint),
        )
    conn.close()
    faces = EnrollmentStore(site.base / "var" / "faces", kek)
    faces.save(
        "custody-room",
        "driver",
        photo_sha256="00" * 32,
        quality={},
        actor="officer",
        embedding=np.arange(512, dtype="<f8"),
        model={"name": "test"},
    )
    return material_id, data, stored.sha256


def _add_document(site: Site, kek: KeyEncryptionKey) -> tuple[dict[str, Any], bytes, str]:
    """A document revision encrypted at rest, its key row in the control database."""
    desk = DocumentDesk(site.base / "var", site.keys, kek=kek)
    pdf = b"%PDF-1.7\n" + os.urandom(50_000) + b"\n%%EOF\n"
    sealed = desk.write(1, 1, 1, pdf)
    conn = sqlite3.connect(site.base / "var" / "control.sqlite3")
    with conn:
        documents_store.insert_file(conn, 1, 1, sealed.row())
    conn.close()
    doc = {"id": 1, "case_id": 1, "revision": 1, "sha256": hashlib.sha256(pdf).hexdigest()}
    return doc, pdf, sealed.name


def _document_row(site: Site) -> dict[str, Any]:
    conn = sqlite3.connect(site.base / "var" / "control.sqlite3")
    conn.row_factory = sqlite3.Row
    row = documents_store.file_of(conn, 1, 1)
    conn.close()
    assert row is not None
    return row


def _material_row(site: Site, material_id: str) -> tuple[str, str]:
    conn = sqlite3.connect(site.base / "var" / "control.sqlite3")
    row = conn.execute(
        "SELECT wrapped_key, kek_fingerprint FROM materials WHERE id = ?", (material_id,)
    ).fetchone()
    conn.close()
    return row[0], row[1]


def _media_hashes(site: Site) -> dict[str, str]:
    return {
        p.relative_to(site.base).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((site.base / "var").rglob("*"))
        if p.is_file() and (p.suffix in (".seg", ".bin") or p.name == "manifest.json")
    }


async def test_kek_rotation_rewraps_everything_without_touching_media(site: Site) -> None:
    old = site.kek()
    material_id, data, sha = _add_material_and_face(site, old)
    doc, pdf, name = _add_document(site, old)
    sealed_before = (site.base / "var" / "documents" / name).read_bytes()
    before = _media_hashes(site)
    code, out = await _keys_cli(site, "--kek")
    assert code == 0, out
    assert "rewrapped 1 recordings, 1 materials, 1 face embeddings, 1 document revisions" in out
    new = site.kek()
    assert new.fingerprint != old.fingerprint
    assert not (site.keys / "recording-kek.key.next").exists()
    assert os.stat(site.keys / "recording-kek.key").st_mode & 0o777 == 0o600
    assert _media_hashes(site) == before, "media, materials and manifests untouched"

    # the old recording decrypts and verifies under the new KEK, and exports
    findings = verify_recording(
        site.recording, site.custody, site.public, new, witness=site.witness_public
    )
    assert failures(findings) == []
    assert any("decrypting at its position" in f.detail for f in findings)
    assert any(f.check == "recording.json" and new.fingerprint in f.detail for f in findings)
    # the sealed (signed) manifest keeps its copy wrapped under the old KEK: a rewrap cannot
    # take back what the old KEK opened (docs/custody.md says so), it retires the key for all else
    assert failures(verify_recording(site.recording, site.custody, site.public, old)) == []
    custody = site.custody_log()
    try:
        export_recording(
            recording_dir=site.recording,
            custody=custody,
            kek=new,
            signing_key=load_or_create_signing_key(site.keys / "custody-ed25519.pem"),
            out=site.base / "package-new-kek",
            actor="sup",
            reason="review",
        )
    finally:
        custody.close()
    assert failures(verify_package(site.base / "package-new-kek", site.public)) == []
    # the material and the face embedding under the new KEK
    wrapped, fingerprint = _material_row(site, material_id)
    assert fingerprint == new.fingerprint
    store = MaterialStore(site.base / "var" / "materials", new)
    assert store.read_all(material_id, wrapped, fingerprint, sha) == data
    with pytest.raises(KeyProblem, match="wrong key-encryption key"):
        MaterialStore(site.base / "var" / "materials", old).read_all(
            material_id, wrapped, fingerprint, sha
        )
    loaded = EnrollmentStore(site.base / "var" / "faces", new).load("custody-room", "driver")
    assert loaded is not None and np.array_equal(loaded[1], np.arange(512, dtype="<f8"))
    entry = next(
        e
        for e in map(json.loads, lines(site.custody / "entries.log"))
        if e["type"] == "keys.kek_rotated"
    )
    assert entry["type"] == "keys.kek_rotated" and entry["old_kek"] == old.fingerprint
    assert entry["documents"] == 1
    # the document's revision: its key rewrapped, its encrypted file untouched
    assert (site.base / "var" / "documents" / name).read_bytes() == sealed_before
    row = _document_row(site)
    assert row["kek_fingerprint"] == new.fingerprint
    assert DocumentDesk(site.base / "var", site.keys, kek=new).read(doc, row) == pdf
    with pytest.raises(IntegrityProblem, match="wrong key-encryption key"):
        DocumentDesk(site.base / "var", site.keys, kek=old).read(doc, row)
    assert (
        entry["recordings"][site.recording_id]
        == json.loads((site.recording / "recording.json").read_bytes())["key"]["wrapped_data_key"]
    )


def test_an_interrupted_kek_rotation_is_refused_at_start_and_finished_by_a_rerun(
    site: Site,
) -> None:
    old = site.kek()
    material_id, data, sha = _add_material_and_face(site, old)
    doc, pdf, _ = _add_document(site, old)

    def crash(_old: KeyEncryptionKey, _new: KeyEncryptionKey) -> int:
        raise OSError("power lost")

    custody = site.custody_log()
    try:
        with pytest.raises(OSError, match="power lost"):
            rotate_kek(
                site.keys, site.base / "var", custody, actor="a", reason="r", rewrap_rows=crash
            )
    finally:
        custody.close()
    # half done: the recording is rewrapped, the material is not, the old KEK is still there
    assert (site.keys / "recording-kek.key.next").exists()
    assert KeyEncryptionKey.load(site.keys / "recording-kek.key").fingerprint == old.fingerprint
    with pytest.raises(KeyProblem, match="interrupted"):
        KeyEncryptionKey.load_or_create(site.keys / "recording-kek.key")
    from control.cli import _rewrap_materials

    custody = site.custody_log()
    try:
        result = rotate_kek(
            site.keys,
            site.base / "var",
            custody,
            actor="a",
            reason="rerun",
            rewrap_rows=_rewrap_materials(site.base / "var" / "control.sqlite3"),
            rewrap_documents=documents_store.rewrap_keys(site.base / "var" / "control.sqlite3"),
        )
    finally:
        custody.close()
    new = site.kek()
    assert result["documents"] == 1
    assert DocumentDesk(site.base / "var", site.keys, kek=new).read(doc, _document_row(site)) == pdf
    assert result["new_kek"] == new.fingerprint != old.fingerprint
    assert failures(verify_recording(site.recording, site.custody, site.public, new)) == []
    wrapped, fingerprint = _material_row(site, material_id)
    assert (
        MaterialStore(site.base / "var" / "materials", new).read_all(
            material_id, wrapped, fingerprint, sha
        )
        == data
    )


def test_rotation_keys_are_published_for_verifiers(site: Site) -> None:
    # the public key file is what the server made, and a PEM any verifier reads
    public = load_public_key((site.keys / "custody-ed25519.pub.pem").read_bytes())
    assert key_id(public) == key_id(
        load_or_create_signing_key(site.keys / "custody-ed25519.pem").public_key()
    )
