"""Offline verification of a case package (:mod:`.package`): only the package and the public
keys, no server and no database. Every file is re-hashed (streamed), the package's signature
checked, every custody entry proved under the signed head, the ``case.exported`` entry matched
to manifest.json, each document and material bound to the custody entry that recorded its hash,
and each recording's export package verified as ``remotecase custody verify`` does. A changed,
missing or extra file is named.

Each finding is a :class:`recorder.verify.Finding` whose detail is Chinese first, then English.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from common.hashing import sha256_file
from recorder import merkle
from recorder.custody import TreeHead
from recorder.keys import key_id, verify_in_context
from recorder.verify import Finding, verify_package
from recorder.witness import verify_cosignature

from .package import CASEFILE_CONTEXT, EXPORTED, FORMAT, SIG_COVERS, SIG_FORMAT, sig_message

OWN = ("manifest.json", "package.sig", *SIG_COVERS)


def _ok(check: str, detail: str = "") -> Finding:
    return Finding(True, check, detail)


def _fail(check: str, detail: str) -> Finding:
    return Finding(False, check, detail)


def _load(path: Path) -> Any:
    return json.loads(path.read_bytes())


def _inside(root: Path, rel: str) -> Path | None:
    """``rel`` as a path inside ``root`` (None for ``..``, absolute or odd names)."""
    if (
        not rel
        or rel.startswith("/")
        or "\\" in rel
        or any(p in ("", ".", "..") for p in rel.split("/"))
    ):
        return None
    return root / rel


def check_files(root: Path, files: dict[str, str]) -> list[Finding]:
    """Every listed file is there with its hash; nothing else is (but the package's own)."""
    out: list[Finding] = []
    for rel, expected in sorted(files.items()):
        path = _inside(root, rel)
        if path is None:
            out.append(_fail("files", f"清单中的路径无效 / a bad path in the manifest: {rel!r}"))
        elif not path.is_file():
            out.append(_fail("files", f"文件缺失 / missing: {rel}"))
        elif sha256_file(path) != expected:
            out.append(_fail("files", f"文件被改动 / changed: {rel}"))
    listed = set(files) | set(OWN)
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if (path.is_file() or path.is_symlink()) and rel not in listed:
            out.append(_fail("files", f"多出的文件 / extra file: {rel}"))
    if not out:
        out.append(_ok("files", f"{len(files)} 个文件哈希一致 / {len(files)} files match"))
    return out


def _entries(data: bytes) -> list[dict[str, Any]]:
    out = [json.loads(line) for line in data.splitlines()]
    if not all(isinstance(e, dict) for e in out):
        raise ValueError("an entry is not an object")
    return out


def _signature(root: Path, sig: dict[str, Any], keys: dict[str, Ed25519PublicKey]) -> list[Finding]:
    """package.sig: by one of the keys given, over the hashes of the files it covers."""
    signer = str(sig.get("key_id", ""))
    covers = sig.get("covers") if isinstance(sig.get("covers"), dict) else {}
    assert isinstance(covers, dict)
    if signer not in keys:
        return [
            _fail(
                "signature",
                f"package.sig 的签名密钥 {signer} 不是给定的公钥 / package.sig is signed by key "
                f"{signer}, not a key given ({', '.join(keys)})",
            )
        ]
    if set(covers) != set(SIG_COVERS) or not verify_in_context(
        keys[signer], CASEFILE_CONTEXT, str(sig.get("signature", "")), sig_message(signer, covers)
    ):
        return [_fail("signature", "package.sig 签名无效 / package.sig does not verify")]
    changed = [
        rel
        for rel in SIG_COVERS
        if (root / rel).is_file() and sha256_file(root / rel) != covers[rel]
    ]
    if changed:
        return [_fail("signature", f"文件被改动 / changed: {rel}") for rel in changed]
    return [_ok("signature", f"package.sig 由密钥 {signer} 签署 / signed by key {signer}")]


def verify_case_package(
    root: Path,
    public_keys: Sequence[Ed25519PublicKey],
    witness: Ed25519PublicKey | None = None,
) -> list[Finding]:
    """Every check, in order; a package too damaged to go on ends with a finding saying so."""
    findings: list[Finding] = []
    try:
        _verify(root, public_keys, witness, findings)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        findings.append(
            _fail(
                "verification", f"卷宗已损坏，无法继续核验 / damaged, verification stopped: {exc!r}"
            )
        )
    return findings


def _verify(
    root: Path,
    public_keys: Sequence[Ed25519PublicKey],
    witness: Ed25519PublicKey | None,
    findings: list[Finding],
) -> None:

    def read(rel: str, parse: Any) -> Any:
        path = root / rel
        if not path.is_file():
            findings.append(_fail("package", f"文件缺失 / missing: {rel}"))
            return None
        try:
            return parse(path.read_bytes())
        except (ValueError, UnicodeDecodeError) as exc:
            findings.append(
                _fail("package", f"文件无法读取（被改动？）/ unreadable (changed?): {rel}: {exc}")
            )
            return None

    manifest_bytes = read("manifest.json", bytes)
    manifest = None if manifest_bytes is None else read("manifest.json", json.loads)
    sig = read("package.sig", json.loads)
    proofs = read("custody/proofs.json", json.loads)
    lines = read("custody/entries.jsonl", bytes.splitlines)
    entries = None if lines is None else read("custody/entries.jsonl", _entries)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        if manifest is not None:
            findings.append(_fail("package", "manifest.json 不是卷宗清单 / not a case manifest"))
        return
    if not isinstance(sig, dict) or sig.get("format") != SIG_FORMAT:
        if sig is not None:
            findings.append(_fail("signature", "package.sig 格式不符 / package.sig: bad format"))
        sig = None
    files_value = manifest.get("files")
    files: dict[str, str] = dict(files_value) if isinstance(files_value, dict) else {}

    # the signature over manifest.json and custody/, by one of the keys given
    keys = {key_id(k): k for k in public_keys}
    if sig is not None:
        findings.extend(_signature(root, sig, keys))
    findings.extend(check_files(root, files))
    if not isinstance(proofs, dict) or entries is None or lines is None:
        return

    # the custody entries under the signed head
    try:
        head = TreeHead.from_json(proofs["tree_head"])
        kinds: dict[str, str] = dict(proofs["entries"])
        inclusion: dict[str, list[str]] = dict(proofs["inclusion"])
        export_index = int(proofs["export_index"])
    except (KeyError, TypeError, ValueError) as exc:
        findings.append(_fail("custody", f"proofs.json 无法读取 / unreadable proofs: {exc}"))
        return
    public = keys.get(head.key_id)
    if public is None or not head.verify(public):
        findings.append(
            _fail(
                "tree head",
                f"树头签名无效 / the tree head (size {head.tree_size}) does not "
                f"verify under the keys given",
            )
        )
    else:
        findings.append(
            _ok(
                "tree head",
                f"树头 {head.tree_size} 由密钥 {head.key_id} 签署 / tree head of size "
                f"{head.tree_size} signed by key {head.key_id}",
            )
        )
    if witness is not None:
        problem = verify_cosignature(head, witness)
        if problem:
            findings.append(_fail("witness", f"见证联署无效 / countersignature: {problem}"))
        else:
            findings.append(_ok("witness", f"见证方 {key_id(witness)} 已联署 / countersigned"))
    root_hash = bytes.fromhex(head.root_hash)
    seen: dict[int, dict[str, Any]] = {}
    bad = 0
    for line, entry in zip(lines, entries, strict=True):
        index = entry.get("index")
        proof = inclusion.get(str(index))
        if (
            not isinstance(index, int)
            or proof is None
            or kinds.get(str(index)) != entry.get("type")
        ):
            bad += 1
            findings.append(
                _fail(
                    "custody entries",
                    f"条目 {index} 未列入证明 / entry {index} is not the one proofs.json lists",
                )
            )
            continue
        ok = merkle.verify_inclusion(
            merkle.leaf_hash(line),
            index,
            head.tree_size,
            [bytes.fromhex(p) for p in proof],
            root_hash,
        )
        if not ok:
            bad += 1
            findings.append(
                _fail(
                    "custody entries",
                    f"条目 {index}（{entry.get('type')}）不在签名"
                    f"树头下 / entry {index} is not included under the signed head",
                )
            )
            continue
        seen[index] = entry
    for index_text, kind in sorted(kinds.items(), key=lambda kv: int(kv[0])):
        if int(index_text) not in seen and not any(
            e.get("index") == int(index_text) for e in entries
        ):
            bad += 1
            findings.append(
                _fail(
                    "custody entries",
                    f"条目 {index_text}（{kind}）缺失 / entry "
                    f"{index_text} ({kind}) is missing from entries.jsonl",
                )
            )
    if not bad:
        findings.append(
            _ok(
                "custody entries",
                f"{len(seen)} 条均有包含证明 / {len(seen)} entries included under the head",
            )
        )

    # the log recorded this very package
    exported = seen.get(export_index)
    case_id = str((manifest.get("case") or {}).get("id"))
    if (
        exported is None
        or exported.get("type") != EXPORTED
        or exported.get("case") != case_id
        or exported.get("manifest_sha256") != hashlib.sha256(manifest_bytes).hexdigest()
    ):
        findings.append(
            _fail(
                "export",
                "监管日志中没有记载本卷宗的 case.exported 条目 / no trusted "
                "case.exported entry records this manifest",
            )
        )
    else:
        findings.append(
            _ok(
                "export",
                f"监管日志条目 {export_index} 记载本卷宗 / custody entry "
                f"{export_index} records this package",
            )
        )

    # each document and material is the one the custody log recorded
    logged = {(e.get("type"), str(e.get("sha256"))) for e in seen.values()}
    logged_hashes = {str(e.get("sha256")) for e in seen.values()}
    unbound = [
        f"文书 {d['number']} / document {d['number']}"
        for d in manifest.get("documents", [])
        if d.get("sha256") not in logged_hashes
    ] + [
        f"材料 {m['id']} / material {m['id']}"
        for m in manifest.get("materials", [])
        if ("material.received", str(m.get("sha256"))) not in logged
    ]
    for what in unbound:
        findings.append(
            _fail(
                "bindings", f"{what}：监管日志中无此哈希 / its hash is in no trusted custody entry"
            )
        )
    for listed in (*manifest.get("documents", []), *manifest.get("materials", [])):
        if files.get(str(listed.get("file"))) != listed.get("sha256"):
            findings.append(
                _fail(
                    "bindings",
                    f"{listed.get('file')}：与记载的哈希不符 / not the "
                    "recorded document or material",
                )
            )
            unbound.append(str(listed.get("file")))
    if not unbound:
        findings.append(
            _ok(
                "bindings",
                "每份文书与材料的哈希均见于监管日志 / every document and "
                "material is the one the custody log recorded",
            )
        )

    # each recording's own export package
    packages = {
        str(e.get("package_sha256")) for e in seen.values() if e.get("type") == "recording.exported"
    }
    for rec in manifest.get("recordings", []):
        if rec.get("deleted"):
            findings.append(
                _ok(
                    f"recording {rec.get('recording_id')}",
                    "录像已按期删除（日志保留）/ "
                    "deleted after its retention (its log entries stay)",
                )
            )
            continue
        sub = _inside(root, str(rec.get("package", "")))
        name = f"recording {rec.get('recording_id')}"
        if sub is None or not (sub / "package.json").is_file():
            findings.append(
                _fail(name, f"录像导出包缺失 / its package is missing: {rec.get('package')}")
            )
            continue
        if sha256_file(sub / "package.json") not in packages:
            findings.append(
                _fail(
                    name,
                    "本卷宗的监管日志未记载该录像导出包 / no custody entry of "
                    "this case file records that recording package",
                )
            )
        for f in verify_package(sub, list(public_keys), witness=witness):
            findings.append(Finding(f.ok, f"{name}: {f.check}", f.detail))


def report(findings: list[Finding]) -> tuple[str, bool]:
    failed = [f for f in findings if not f.ok]
    passed = len(findings) - len(failed)
    if failed:
        head = (
            f"卷宗核验未通过：{len(failed)} 项失败，{passed} 项通过 / the case file does NOT "
            f"verify: {len(failed)} checks failed, {passed} passed"
        )
    else:
        head = (
            f"卷宗核验通过：{len(findings)} 项检查 / the case file verifies: {len(findings)} checks"
        )
    return "\n".join([*(str(f) for f in findings), head]), not failed
