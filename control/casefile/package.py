"""The case package (卷宗): ``remotecase case export CASE --out DIR`` writes one directory that
a court checks offline with ``remotecase case verify DIR --public-key K`` (:mod:`.verify`).

::

    REPORT.txt               what is in it and how to check it (Chinese first, then English)
    public-key.pem           the custody public key (compare with the published one)
    timeline.json            the case's timeline (control/casefile/timeline.py), as data
    timeline.txt             the same, readable: China time, label, actor, reference
    documents/<id>-<kind>-<number>.pdf   every document's current revision, decrypted
    materials/<id>-<name>    every material, decrypted (streamed, checked against its hash)
    recordings/<REC_id>/     each sealed recording's export package (recorder/export.py,
                             itself verifiable with ``remotecase custody verify``)
    manifest.json            the case, the lists above with their hashes, and ``files``: the
                             SHA-256 of every file outside custody/ but manifest.json and
                             package.sig
    custody/entries.jsonl    the case's custody entries (naming the case, one of its rooms or
                             recordings) and the signing-key rotations, byte for byte as logged
    custody/proofs.json      the head signed right after ``case.exported``, each entry's
                             RFC 9162 inclusion proof under it, ``export_index``
    package.sig              Ed25519 by the custody key over ``remotecase-casefile-v1\\0`` and
                             the canonical JSON of format, key_id and covers (the SHA-256 of
                             manifest.json, custody/entries.jsonl, custody/proofs.json)

The ``case.exported`` entry holds manifest.json's SHA-256 and is included under the signed head:
the log says this very package was made. Files are 0600 and directories 0700 (the package holds
decrypted evidence). Blocking throughout: the CLI runs it, never the event loop.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.hashing import canonical, sha256_file
from recorder.custody import ROTATION, CustodyLog
from recorder.export import export_recording
from recorder.keys import KeyEncryptionKey, KeyProblem, key_id, public_key_pem, sign_in_context

from ..deadlines.rules import Rules
from ..documents.desk import MAGIC
from ..documents.desk import _aad as document_aad
from ..materials.store import MaterialStore
from .timeline import Item, build, case_entries, case_rooms, china, read_manifests, ref_text

FORMAT = "remotecase-casefile/1"
SIG_FORMAT = "remotecase-casefile-sig/1"
CASEFILE_CONTEXT = b"remotecase-casefile-v1\x00"
SIG_COVERS = ("manifest.json", "custody/entries.jsonl", "custody/proofs.json")
EXPORTED = "case.exported"


class CaseFileError(Exception):
    """Why a case cannot be exported (a message, Chinese first)."""


def sig_message(signer: str, covers: dict[str, str]) -> bytes:
    return canonical({"format": SIG_FORMAT, "key_id": signer, "covers": covers})


def safe(text: str, limit: int = 60) -> str:
    """A file name part: letters (Chinese ones too), digits, ``-_.``; never ``..``."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:limit]
    return cleaned.strip(".") or "x"


def _private_file(path: Path) -> Any:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb")


def _write(path: Path, data: bytes) -> None:
    with _private_file(path) as fh:
        fh.write(data)


def document_pdf(
    documents_dir: Path, kek: KeyEncryptionKey, doc: sqlite3.Row, sealed: Any
) -> bytes:
    """A document's current revision, decrypted and checked against the hash the database
    holds (as control/documents/desk.py reads it, without the desk's CA and templates)."""
    document_id, revision, sha = int(doc["id"]), int(doc["revision"]), str(doc["sha256"])
    what = f"文书 {doc['number']}（第 {revision} 版）/ document {doc['number']} revision {revision}"
    try:
        if sealed is None:  # a revision from before encryption at rest
            pdf = (
                documents_dir / f"case-{doc['case_id']}" / f"doc-{document_id}-r{revision}-"
                f"{sha[:16]}.pdf"
            ).read_bytes()
        else:
            blob = (documents_dir / str(sealed["file"])).read_bytes()
            key = kek.unwrap(str(sealed["wrapped_key"]), str(sealed["kek_fingerprint"]))
            nonce = blob[len(MAGIC) : len(MAGIC) + 12]
            if not blob.startswith(MAGIC):
                raise CaseFileError(f"{what}：文件已损坏 / {what}: the file is damaged")
            pdf = AESGCM(key).decrypt(
                nonce, blob[len(MAGIC) + 12 :], document_aad(document_id, revision, sha)
            )
    except FileNotFoundError:
        raise CaseFileError(f"{what}：文件缺失 / {what}: the file is missing") from None
    except (InvalidTag, KeyProblem) as exc:
        raise CaseFileError(f"{what}：无法解密 / {what}: does not decrypt ({exc})") from None
    if hashlib.sha256(pdf).hexdigest() != sha:
        raise CaseFileError(f"{what}：哈希不符 / {what}: its hash is not the recorded one")
    return pdf


def _material(store: MaterialStore, row: sqlite3.Row, path: Path) -> int:
    """Decrypt one material into ``path``, chunk by chunk, checked against its hash."""
    digest, size = hashlib.sha256(), 0
    try:
        with _private_file(path) as fh:
            for chunk in store.chunks(row["id"], row["wrapped_key"], row["kek_fingerprint"]):
                digest.update(chunk)
                size += len(chunk)
                fh.write(chunk)
    except (OSError, ValueError, KeyProblem) as exc:
        raise CaseFileError(
            f"材料 {row['id']} 无法读取 / material {row['id']} cannot be read: {exc}"
        ) from None
    if digest.hexdigest() != row["sha256"]:
        raise CaseFileError(
            f"材料 {row['id']} 的哈希与收到时不符 / material {row['id']}: its SHA-256 is not "
            "the one taken on receipt"
        )
    return size


def timeline_text(case: dict[str, Any], items: list[Item], labels: dict[str, str]) -> str:
    lines = [
        f"案件 {case['id']}（{case['kind']}）{case['title']}，{case['brigade']}",
        "时间为北京时间 / times are China time (UTC+8)",
        "",
    ]
    for it in items:
        index = "" if it["custody_index"] is None else f" [监管日志 #{it['custody_index']}]"
        label = labels.get(it["kind"], it["kind"])
        lines.append(f"{china(it['at'])}  {label}（{it['kind']}）  {it['actor'] or '-'}{index}")
        if it["ref"]:
            lines.append(f"    {ref_text(it['ref'])}")
    return "\n".join(lines) + "\n"


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path


def export_case(
    *,
    conn: sqlite3.Connection,
    case_id: int,
    data_dir: Path,
    custody: CustodyLog,
    kek: KeyEncryptionKey,
    signing_key: Ed25519PrivateKey,
    rules: Rules | None,
    today: date,
    labels: dict[str, str],
    out: Path,
    actor: str,
    reason: str,
    label_font: Path | None = None,
) -> dict[str, Any]:
    """Write the package into ``out`` (which must not exist) and log the export; its
    recordings' composites label with ``label_font`` when given (``recording.label_font``)."""
    case_row = conn.execute("SELECT * FROM cases WHERE id = ?", (case_id,)).fetchone()
    if case_row is None:
        raise CaseFileError(f"案件 {case_id} 不存在 / there is no case {case_id}")
    case = {k: case_row[k] for k in ("id", "kind", "title", "brigade", "status", "created_at")}
    if out.exists():
        raise CaseFileError(f"{out} 已存在 / {out} exists already")
    out.mkdir(parents=True, mode=0o700)
    for sub in ("documents", "materials", "recordings", "custody"):
        (out / sub).mkdir(mode=0o700)

    documents: list[dict[str, Any]] = []
    for doc in conn.execute(
        "SELECT * FROM documents WHERE case_id = ? ORDER BY id", (case_id,)
    ).fetchall():
        sealed = conn.execute(
            "SELECT * FROM document_files WHERE document_id = ? AND revision = ?",
            (doc["id"], doc["revision"]),
        ).fetchone()
        pdf = document_pdf(data_dir / "documents", kek, doc, sealed)
        name = f"documents/{doc['id']:05d}-{safe(doc['kind'])}-{safe(doc['number'])}.pdf"
        _write(out / name, pdf)
        documents.append(
            {
                "id": doc["id"],
                "kind": doc["kind"],
                "number": doc["number"],
                "revision": doc["revision"],
                "sha256": doc["sha256"],
                "file": name,
                "signatures": json.loads(doc["signatures"]),
                "refusals": json.loads(doc["refusals"]),
                "created_at": doc["created_at"],
            }
        )

    store = MaterialStore(data_dir / "materials", kek)
    materials: list[dict[str, Any]] = []
    for row in conn.execute(
        "SELECT * FROM materials WHERE case_id = ? ORDER BY created_at, id", (case_id,)
    ).fetchall():
        name = f"materials/{safe(row['id'])}-{safe(row['name'])}"
        size = _material(store, row, out / name)
        materials.append(
            {
                "id": row["id"],
                "name": row["name"],
                "origin": row["origin"],
                "media_type": row["media_type"],
                "size": size,
                "sha256": row["sha256"],
                "custody_index": row["custody_index"],
                "file": name,
                "received_at": row["created_at"],
            }
        )

    recordings: list[dict[str, Any]] = []
    found = read_manifests(data_dir / "recordings", case_id)
    for directory, manifest in found:
        rec = str(manifest["recording_id"])
        meta = json.loads((directory / "recording.json").read_bytes())
        entry: dict[str, Any] = {
            "recording_id": rec,
            "room": manifest.get("room"),
            "status": manifest.get("status"),
            "started_at": manifest.get("started_at"),
            "stopped_at": manifest.get("stopped_at"),
            "gaps": len(manifest.get("gaps", [])),
        }
        if meta.get("state") == "deleted":
            entry["deleted"] = True  # its manifest and log entries stay; the media went
        else:
            try:
                exported = export_recording(
                    recording_dir=directory,
                    custody=custody,
                    kek=kek,
                    signing_key=signing_key,
                    out=out / "recordings" / safe(rec),
                    actor=actor,
                    reason=f"卷宗导出 case file of case {case_id}: {reason}",
                    label_font=label_font,
                )
            except ValueError as exc:
                raise CaseFileError(
                    f"录像 {rec} 核验未通过，不导出 / recording {rec} does not verify: {exc}"
                ) from None
            entry["package"] = f"recordings/{safe(rec)}"
            entry["export_index"] = exported["export_index"]
        recordings.append(entry)

    custody.refresh()
    manifests = [m for _, m in found]
    items = build(conn, case_id, custody.entries(), manifests, rules, today)
    exported_at = datetime.now(UTC).isoformat()
    _write(
        out / "timeline.json",
        json.dumps(
            {"case": case, "made_at": exported_at, "items": items},
            ensure_ascii=False,
            indent=1,
        ).encode()
        + b"\n",
    )
    _write(out / "timeline.txt", timeline_text(case, items, labels).encode())
    _write(out / "public-key.pem", public_key_pem(signing_key.public_key()))
    signer = key_id(signing_key.public_key())
    _write(
        out / "REPORT.txt",
        _report(
            case, documents, materials, recordings, items, signer, actor, reason, exported_at
        ).encode(),
    )

    files = {
        path.relative_to(out).as_posix(): sha256_file(path)
        for path in _files(out)
        if not path.relative_to(out).as_posix().startswith("custody/")
    }
    manifest_bytes = canonical(
        {
            "format": FORMAT,
            "case": case,
            "exported_at": exported_at,
            "actor": actor,
            "reason": reason,
            "documents": documents,
            "materials": materials,
            "recordings": recordings,
            "files": files,
        }
    )
    _write(out / "manifest.json", manifest_bytes)

    logged = custody.append(
        EXPORTED,
        actor=actor,
        reason=reason,
        case=str(case_id),
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        files=len(files),
    )
    head = custody.sign_head()
    rooms = case_rooms(conn, case_id)
    recs = {str(m["recording_id"]) for m in manifests}
    wanted = {
        int(e["index"])
        for e in case_entries(
            (json.loads(custody.entry_line(i)) for i in range(head.tree_size)), case_id, rooms, recs
        )
    }
    kinds: dict[str, str] = {}
    with _private_file(out / "custody" / "entries.jsonl") as fh:
        for i in range(head.tree_size):
            line = custody.entry_line(i)
            entry = json.loads(line)
            if i in wanted or entry.get("type") == ROTATION:
                fh.write(line + b"\n")
                kinds[str(i)] = str(entry.get("type"))
    proofs = {
        "tree_head": head.to_json(),
        "entries": kinds,
        "inclusion": {i: custody.inclusion_proof(int(i), head.tree_size) for i in kinds},
        "export_index": logged["index"],
    }
    _write(out / "custody" / "proofs.json", canonical(proofs))
    covers = {rel: sha256_file(out / rel) for rel in SIG_COVERS}
    signature = sign_in_context(signing_key, CASEFILE_CONTEXT, sig_message(signer, covers))
    _write(
        out / "package.sig",
        canonical(
            {"format": SIG_FORMAT, "key_id": signer, "covers": covers, "signature": signature}
        )
        + b"\n",
    )
    for path in [*_files(out), out]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return {
        "package": str(out),
        "files": len(files),
        "documents": len(documents),
        "materials": len(materials),
        "recordings": len(recordings),
        "timeline": len(items),
        "export_index": logged["index"],
        "tree_size": head.tree_size,
    }


def _report(
    case: dict[str, Any],
    documents: list[dict[str, Any]],
    materials: list[dict[str, Any]],
    recordings: list[dict[str, Any]],
    items: list[Item],
    signer: str,
    actor: str,
    reason: str,
    exported_at: str,
) -> str:
    lines = [
        f"remotecase 卷宗：案件 {case['id']}（{case['kind']}）{case['title']}，{case['brigade']}",
        f"导出时间 {china(exported_at)}（北京时间），导出人 {actor}，理由：{reason}",
        f"监管日志签名密钥编号 {signer}（public-key.pem，请与主管机关公布的公钥核对）",
        f"时间线 {len(items)} 项（timeline.txt、timeline.json）；文书 {len(documents)} 份"
        f"（documents/，现行版本，已解密）；材料 {len(materials)} 件（materials/，已解密）；"
        f"录像 {len(recordings)} 段（recordings/，每段为一个录像导出包）。",
        "manifest.json 记载每个文件的 SHA-256；package.sig 以监管日志签名密钥签署 manifest.json 与"
        " custody/；custody/entries.jsonl 为本案的监管日志条目，custody/proofs.json 为其在签名"
        "树头下的包含证明（RFC 9162），其中 case.exported 条目记载 manifest.json 的哈希。",
        "离线核验（无需服务器和数据库）：",
        "  remotecase case verify 本目录 --public-key 公布的公钥.pem [--witness-key 见证公钥.pem]",
        "任何被改动、缺失或多出的文件都会被指名。各录像导出包也可单独以 remotecase custody "
        "verify 核验。",
        "",
        "---- English ----",
        f"remotecase case file: case {case['id']} ({case['kind']}) {case['title']}, "
        f"{case['brigade']}",
        f"exported {exported_at} by {actor}: {reason}",
        f"custody signing key id {signer} (public-key.pem; compare with the published key)",
        f"timeline of {len(items)} items; {len(documents)} documents (current revisions, "
        f"decrypted); {len(materials)} materials (decrypted); {len(recordings)} recordings "
        "(each an export package of its own)",
        "manifest.json holds every file's SHA-256; package.sig signs manifest.json and custody/ "
        "with the custody key; custody/proofs.json proves each entry of custody/entries.jsonl "
        "under a signed tree head (RFC 9162), the case.exported entry holding manifest.json's "
        "hash.",
        "Check it offline (no server, no database):",
        "  remotecase case verify THIS_DIRECTORY --public-key PUBLISHED_KEY.pem",
        "A changed, missing or extra file is named. docs/casefile.md describes every check.",
    ]
    return "\n".join(lines) + "\n"
