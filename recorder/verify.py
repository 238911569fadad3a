"""Offline verification: only public keys, no server, and a named reason for every failure.

``verify_recording(recording_dir, custody_dir, public_key)`` checks a stored recording:

1. the custody log holds (:func:`recorder.custody.audit_log`: every signed tree head verifies
   under the key in force at its size, following signed key rotations, and matches the
   entries; with checkpoints, none was rolled back or rewritten; with the witness key, every head
   is countersigned). Only entries under a signed head that matches are trusted;
2. ``manifest.json`` is what was signed (Ed25519, under the key in force at sealing, which the
   manifest and its envelope must name) and what the ``recording.sealed`` entry hashed, that
   entry is included under the envelope's signed tree head, and that head is in ``heads.log``;
3. the manifest's ``recording.started`` and ``recording.stopped`` entries are trusted log entries
   of this recording; ``recording.json`` agrees with the manifest and with the log (state,
   ``retain_until`` after every logged retention change, the wrapped data key after every
   logged KEK rotation);
4. every segment the manifest lists is on disk, its stored bytes hash to the value the log
   recorded when it was written, and its log entry names the same track, position and hashes;
   no segment is missing from a track's sequence, and no file is on disk that the log never saw;
   media counts as deleted only under a trusted ``recording.deleted`` entry.

With the key-encryption key as well (``kek``), each segment is decrypted (which also proves it
sits at its recorded position: the position is bound in as associated data) and its plaintext
hash checked.

``verify_package(package, public_key)`` checks an export package the same way from the package
alone (its signature, files, custody proofs, seal, export entry and media).

Each check is a function named for what it checks (``check_log``, ``check_seal``,
``check_segments``, ...), taking what the checks before it learned and yielding findings;
:data:`RECORDING_CHECKS` and :data:`PACKAGE_CHECKS` list them in the order they run. A check
that finds the rest cannot run (no manifest, say) halts the run after its finding; one that
raises ends it with a ``verification`` finding, and what was found before stays.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from common.hashing import canonical, sha256_file

from . import merkle
from .custody import ROTATION, KeyChain, LogAudit, TreeHead, audit_log, key_chain
from .keys import (
    PACKAGE_CONTEXT,
    KeyEncryptionKey,
    KeyProblem,
    key_id,
    load_public_key,
    verify_in_context,
    verify_manifest,
)
from .layout import decrypt_segment, gap_cause, note_zh
from .witness import verify_cosignature

PACKAGE_SIG_FORMAT = "remotecase-package-sig/1"
# files of a package that package.sig covers directly (package.json lists all the others)
SIG_COVERS = ("package.json", "custody/entries.jsonl", "custody/proofs.json")


# the checks' names in Chinese; a name with a subject ("file x", "track t segment 3") is
# translated part by part (_check_zh)
CHECKS_ZH = {
    "verification": "校验",
    "custody log": "托管日志",
    "signing keys": "签名密钥",
    "witness": "见证",
    "manifest": "清单",
    "manifest hash": "清单哈希",
    "manifest signature": "清单签名",
    "seal": "封存",
    "seal tree head": "封存树头",
    "tree head": "树头",
    "data key": "数据密钥",
    "segments": "片段",
    "public key": "公钥",
    "package": "导出包",
    "package signature": "导出包签名",
    "custody": "托管",
    "custody entries": "托管条目",
    "consistency": "一致性",
    "checkpoint": "检查点",
    "export": "导出",
    "media": "媒体",
    "recording.json": "recording.json",
    "completeness": "完整性",
    "start": "开始",
    "end": "结束",
    "segment": "片段",
    "frames": "帧数",
    "file": "文件",
    "track": "轨道",
    "custody entry": "托管条目",
}
_SUBJECT = re.compile(r"(custody entry|file|track|segment|frames)\b")


def _check_zh(check: str) -> str:
    if check in CHECKS_ZH:
        return CHECKS_ZH[check]
    return _SUBJECT.sub(lambda m: CHECKS_ZH[m.group(1)], check)


@dataclass
class Finding:
    """One check's verdict: ``detail`` in English (what tools and tests read), ``zh`` the same
    in Chinese; printed by the CLI as one line, Chinese first (``通过 封存：… / ok seal: …``),
    and in the export's REPORT.txt in each language's part. A detail passed through from
    elsewhere (a custody log problem, a key error) has no ``zh`` of its own: the Chinese half
    then marks it as English. ``str()`` is the English line (what tools and tests match),
    :meth:`line` the report's."""

    ok: bool
    check: str
    detail: str = ""
    zh: str = ""

    @property
    def check_zh(self) -> str:
        return _check_zh(self.check)

    @property
    def detail_zh(self) -> str:
        if self.zh or not self.detail:
            return self.zh
        return f"（详见英文）{self.detail}"

    def __str__(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.check}" + (
            f": {self.detail}" if self.detail else ""
        )

    def zh_line(self) -> str:
        """The Chinese line (``通过 封存：…``)."""
        return f"{'通过' if self.ok else '失败'} {self.check_zh}" + (
            f"：{self.detail_zh}" if self.detail else ""
        )

    def line(self) -> str:
        """The report's line: Chinese first (``通过 封存：… / ok   seal: …``)."""
        return f"{self.zh_line()} / {self}"


def package_sig_message(key: str, covers: dict[str, str]) -> bytes:
    """What ``package.sig`` signs (after ``remotecase-package-v1\\0``)."""
    return canonical({"format": PACKAGE_SIG_FORMAT, "key_id": key, "covers": covers})


def current_key_record(manifest: dict[str, Any], meta: dict[str, Any] | None) -> dict[str, Any]:
    """The wrapped data key to use now: ``recording.json``'s (rewrapped by a KEK rotation) or
    the sealed manifest's."""
    if meta and isinstance(meta.get("key"), dict) and meta["key"].get("wrapped_data_key"):
        return dict(meta["key"])
    return dict(manifest["key"])


def recording_data_key(
    kek: KeyEncryptionKey, recording_dir: Path, manifest: dict[str, Any]
) -> bytes:
    """Unwrap a recording's data key with the configured KEK (after any rotation)."""
    meta_path = recording_dir / "recording.json"
    meta = json.loads(meta_path.read_bytes()) if meta_path.exists() else None
    record = current_key_record(manifest, meta)
    if record.get("kek_fingerprint") != kek.fingerprint:
        record = dict(manifest["key"])
    return kek.unwrap(record["wrapped_data_key"], record["kek_fingerprint"])


def track_completeness(manifest: dict[str, Any]) -> list[Finding]:
    """What the manifest says was not recorded (see ``completeness_findings``)."""
    return completeness_findings(manifest)


Check = Callable[[Any], Iterator[Finding]]


class _Halt(Exception):
    """Raised by a check after its last finding: the checks after it cannot run."""


def _run_checks(checks: Sequence[Check], context: Any) -> list[Finding]:
    """Each check in order, its findings kept as they come: a check that halts ends the run;
    one that raises ends it too, with a finding that says so (what was found before stays)."""
    findings: list[Finding] = []
    context.findings = findings
    try:
        for check in checks:
            for finding in check(context):
                findings.append(finding)
    except _Halt:
        pass
    except Exception as exc:
        findings.append(
            Finding(
                False, "verification", f"could not complete: {exc!r}", zh=f"校验未能完成：{exc!r}"
            )
        )
    return findings


def _ok(check: str, detail: str = "", zh: str = "") -> Finding:
    return Finding(True, check, detail, zh)


def _fail(check: str, detail: str, zh: str = "") -> Finding:
    return Finding(False, check, detail, zh)


# -- a stored recording -------------------------------------------------------------------------
@dataclass
class _Stored:
    """What the checks of a stored recording learn and share, in the order they run."""

    recording_dir: Path
    custody_dir: Path
    anchors: list[Ed25519PublicKey]
    kek: KeyEncryptionKey | None
    checkpoints: Sequence[TreeHead]
    witness: Ed25519PublicKey | None
    findings: list[Finding] = field(default_factory=list)
    audit: LogAudit = field(default_factory=LogAudit)
    trusted: dict[int, dict[str, Any]] = field(default_factory=dict)  # under a signed head
    body: bytes = b""
    envelope: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    digest: str = ""
    recording_id: str = ""
    head: TreeHead | None = None
    meta: dict[str, Any] | None = None
    data_key: bytes | None = None


def check_log(c: _Stored) -> Iterator[Finding]:
    """The custody log holds (:func:`recorder.custody.audit_log`); only entries under a signed
    tree head that matches are trusted from here on."""
    audit = c.audit = audit_log(
        c.custody_dir, c.anchors, checkpoints=c.checkpoints, witness=c.witness
    )
    for problem in audit.problems:
        yield _fail("custody log", str(problem))
    if not audit.problems:
        yield _ok(
            "custody log",
            "every signed tree head verifies and matches the entries",
            zh="每个签名树头均验证通过，且与条目相符",
        )
    chain = audit.chain
    yield _ok(
        "signing keys",
        ", ".join(
            f"heads of sizes {_sizes(audit.heads, start, nxt)} signed by key {kid}"
            for (start, kid, _), nxt in zip(
                chain.epochs, [*(e[0] for e in chain.epochs[1:]), None], strict=True
            )
        ),
        zh="，".join(
            f"大小为 {_sizes(audit.heads, start, nxt)} 的树头由密钥 {kid} 签名"
            for (start, kid, _), nxt in zip(
                chain.epochs, [*(e[0] for e in chain.epochs[1:]), None], strict=True
            )
        ),
    )
    for note in audit.notes:
        yield _ok("custody log", note)
    if c.witness is not None and not any(
        p.what.startswith("witness") or "witness" in p.what for p in audit.problems
    ):
        yield _ok(
            "witness",
            f"every head from the first countersigned one on carries witness "
            f"{key_id(c.witness)}'s countersignature",
            zh=f"自第一个带副署的树头起，每个树头均带有见证密钥 {key_id(c.witness)} 的副署",
        )
    for i, line in enumerate(audit.lines[: audit.signed_size]):
        try:
            c.trusted[i] = json.loads(line)
        except ValueError:
            continue


def check_manifest_readable(c: _Stored) -> Iterator[Finding]:
    """``manifest.json`` and its envelope are there, are JSON, and the envelope names a head."""
    try:
        c.body = (c.recording_dir / "manifest.json").read_bytes()
        c.envelope = json.loads((c.recording_dir / "manifest.sig.json").read_bytes())
        c.manifest = json.loads(c.body)
    except FileNotFoundError as exc:
        yield _fail(
            "manifest",
            f"missing {Path(exc.filename).name}: the recording was never sealed",
            zh=f"缺少 {Path(exc.filename).name}：该录像从未封存",
        )
        raise _Halt from None
    except ValueError as exc:
        yield _fail("manifest", f"not JSON: {exc}", zh=f"不是 JSON：{exc}")
        raise _Halt from None
    c.digest = hashlib.sha256(c.body).hexdigest()
    c.recording_id = c.manifest.get("recording_id", "")
    try:
        c.head = TreeHead.from_json(c.envelope["tree_head"])
    except (KeyError, TypeError, ValueError):
        yield _fail("seal", "the envelope carries no readable tree head", zh="封套中没有可读的树头")
        raise _Halt from None


def check_manifest_signature(c: _Stored) -> Iterator[Finding]:
    """The manifest is what was signed, under the key in force at sealing, and what the
    envelope hashed."""
    assert c.head is not None
    sealing_key_id, sealing_key = c.audit.chain.key_for_size(c.head.tree_size)
    yield from _manifest_signature(
        c.audit.chain, sealing_key_id, sealing_key, c.envelope, c.body, c.manifest
    )
    if c.envelope.get("manifest_sha256") != c.digest:
        yield _fail(
            "manifest hash",
            "manifest.json does not hash to the sealed value",
            zh="manifest.json 的哈希值与封存时的值不符",
        )


def check_seal(c: _Stored) -> Iterator[Finding]:
    """The ``recording.sealed`` entry hashed this manifest, is included under the envelope's
    signed tree head, and that head is in ``heads.log`` (and countersigned, with a witness)."""
    head, audit = c.head, c.audit
    assert head is not None
    lines, leaves = audit.lines, audit.leaves
    _, sealing_key = audit.chain.key_for_size(head.tree_size)
    sealed_index = c.envelope.get("sealed_index")
    if sealing_key is None or not head.verify(sealing_key):
        yield _fail(
            "seal",
            "the envelope's tree head signature does not verify",
            zh="封套中树头的签名验证不通过",
        )
    elif not isinstance(sealed_index, int) or not 0 <= sealed_index < min(
        head.tree_size, len(lines)
    ):
        yield _fail(
            "seal",
            f"sealed entry {sealed_index} is not in the log",
            zh=f"封存条目 {sealed_index} 不在日志中",
        )
    else:
        sealed = json.loads(lines[sealed_index])
        proof = (
            merkle.inclusion_proof(sealed_index, leaves[: head.tree_size])
            if head.tree_size <= len(leaves)
            else []
        )
        included = head.tree_size <= len(leaves) and merkle.verify_inclusion(
            leaves[sealed_index], sealed_index, head.tree_size, proof, bytes.fromhex(head.root_hash)
        )
        if sealed.get("type") != "recording.sealed" or sealed.get("manifest_sha256") != c.digest:
            yield _fail(
                "seal",
                f"log entry {sealed_index} does not seal this manifest",
                zh=f"日志条目 {sealed_index} 并未封存此清单",
            )
        elif not included:
            yield _fail(
                "seal",
                f"log entry {sealed_index} is not included under the signed tree head",
                zh=f"日志条目 {sealed_index} 未包含在签名树头之下",
            )
        elif not audit.has_head(head):
            yield _fail(
                "seal",
                f"the tree head that sealed this recording (size "
                f"{head.tree_size}) is not in heads.log: signed heads were "
                "removed (deleted, emptied or truncated)",
                zh=f"封存该录像的树头（大小 {head.tree_size}）不在 heads.log 中："
                "签名树头被删除（删除、清空或截断）",
            )
        else:
            yield _ok(
                "seal",
                f"log entry {sealed_index} seals this manifest; included under "
                f"the tree head of size {head.tree_size} (key {head.key_id})",
                zh=f"日志条目 {sealed_index} 封存了此清单；包含在大小为 {head.tree_size} "
                f"的树头之下（密钥 {head.key_id}）",
            )
        if c.witness is not None:
            cosig_problem = verify_cosignature(head, c.witness)
            if cosig_problem:
                yield _fail(
                    "seal",
                    f"the sealing head's witness countersignature: {cosig_problem}",
                    zh=f"封存树头的见证副署：{cosig_problem}",
                )


def check_bounds(c: _Stored) -> Iterator[Finding]:
    """The manifest's ``recording.started`` and ``recording.stopped`` are trusted entries of
    this recording."""
    yield from _bounds(c.manifest, c.trusted, c.recording_id)


def check_metadata(c: _Stored) -> Iterator[Finding]:
    """``recording.json`` agrees with the manifest and with the log (state, retention after
    every logged change, the wrapped data key after every logged KEK rotation)."""
    findings: list[Finding] = []
    c.meta = _metadata(findings, c.recording_dir, c.manifest, c.trusted, c.recording_id)
    yield from findings


def check_data_key(c: _Stored) -> Iterator[Finding]:
    """With the KEK: the recording's data key unwraps (after any rotation)."""
    if c.kek is None:
        return
    try:
        record = current_key_record(c.manifest, c.meta)
        if record.get("kek_fingerprint") != c.kek.fingerprint:
            record = dict(c.manifest["key"])
        c.data_key = c.kek.unwrap(record["wrapped_data_key"], record["kek_fingerprint"])
    except (KeyProblem, KeyError) as exc:
        yield _fail("data key", str(exc))


def check_segments(c: _Stored) -> Iterator[Finding]:
    """Every segment the manifest lists is on disk, its stored bytes hash to the value logged
    when it was written, and its log entry names the same track, position and hashes; no
    segment is missing from a track's sequence and no file is on disk that the log never saw;
    with the data key, each decrypts at its position to the hash logged at capture. Media
    counts as deleted only under a trusted ``recording.deleted`` entry."""
    recording_dir, recording_id, audit = c.recording_dir, c.recording_id, c.audit
    segment_root = recording_dir / "segments"
    entries_by_index = {}
    for i, line in enumerate(audit.lines):
        try:
            entries_by_index[i] = json.loads(line)
        except ValueError:
            continue
    failed = False
    for index, entry in entries_by_index.items():
        if (
            index >= audit.signed_size
            and entry.get("type") == "recording.deleted"
            and entry.get("recording") == recording_id
        ):
            failed = True
            yield _fail(
                "segments",
                f"log entry {index} says the media was deleted, but no "
                "signed tree head covers it: not trusted (appended without "
                "the key?)",
                zh=f"日志条目 {index} 称媒体已删除，但没有签名树头覆盖它："
                "不可信（是否未用密钥追加？）",
            )
    deleted = next(
        (
            e
            for e in c.trusted.values()
            if e.get("type") == "recording.deleted" and e.get("recording") == recording_id
        ),
        None,
    )
    if deleted is not None:
        yield _ok(
            "segments",
            f"media deleted under retention (log entry {deleted['index']}, "
            f"{deleted.get('actor')}: {deleted.get('reason')})",
            zh=f"媒体已按保存期限删除（日志条目 {deleted['index']}，{deleted.get('actor')}："
            f"{deleted.get('reason')}）",
        )
        return
    listed: set[Path] = set()
    total = 0
    for track in c.manifest.get("tracks", []):
        track_id = track.get("track_id", "?")
        segments = track.get("segments", [])
        positions = [s.get("segment") for s in segments]
        if positions != list(range(len(segments))):
            failed = True
            yield _fail(
                f"track {track_id}",
                f"segment positions {positions} are not 0..n-1",
                zh=f"片段位置 {positions} 不是 0..n-1",
            )
        for seg in segments:
            problem = _segment_problem(c, track_id, seg, entries_by_index, listed)
            total += 1
            if problem is not None:
                failed = True
                yield _fail(f"track {track_id} segment {seg.get('segment')}", *problem)
    if segment_root.exists():
        for path in sorted(segment_root.glob("*/*.seg")):
            if path not in listed:
                failed = True
                yield _fail(
                    "segments",
                    f"{path.relative_to(recording_dir)} is not in the manifest",
                    zh=f"{path.relative_to(recording_dir)} 不在清单中",
                )
    if not failed:
        yield _ok(
            "segments",
            f"{total} segments present, each matching its logged hash"
            + (" and decrypting at its position" if c.data_key is not None else ""),
            zh=f"{total} 个片段齐全，每个都与日志记录的哈希值相符"
            + ("，并可在其位置解密" if c.data_key is not None else ""),
        )


def _segment_problem(
    c: _Stored,
    track_id: str,
    seg: dict[str, Any],
    entries_by_index: dict[int, dict[str, Any]],
    listed: set[Path],
) -> tuple[str, str] | None:
    """What is wrong with one listed segment, if anything: (English, 中文)."""
    index: Any = seg.get("segment")
    path = c.recording_dir / "segments" / track_id / f"{index:06d}.seg"
    listed.add(path)
    entry = entries_by_index.get(seg.get("log_index", -1), {})
    if (
        entry.get("type") != "segment.written"
        or entry.get("track") != track_id
        or entry.get("segment") != index
        or entry.get("sha256") != seg.get("sha256")
        or entry.get("sha256_stored") != seg.get("sha256_stored")
        or entry.get("recording") != c.recording_id
    ):
        return (
            f"the manifest disagrees with custody log entry {seg.get('log_index')}",
            f"清单与托管日志条目 {seg.get('log_index')} 不符",
        )
    try:
        stored = path.read_bytes()
    except FileNotFoundError:
        rel = path.relative_to(c.recording_dir)
        return f"file {rel} is missing (removed)", f"文件 {rel} 缺失（被删除）"
    if hashlib.sha256(stored).hexdigest() != entry["sha256_stored"]:
        rel = path.relative_to(c.recording_dir)
        return (
            f"stored bytes of {rel} differ from what was logged when written (altered or swapped)",
            f"{rel} 存储的字节与写入时记录的不符（被修改或调换）",
        )
    if c.data_key is not None:
        try:
            plain = decrypt_segment(stored, c.data_key, c.recording_id, track_id, index)
        except InvalidTag:
            return (
                "does not decrypt at this position (moved or altered)",
                "无法在此位置解密（被移动或修改）",
            )
        if hashlib.sha256(plain).hexdigest() != entry["sha256"]:
            return (
                "decrypted media differs from the hash logged at capture",
                "解密后的媒体与采集时记录的哈希值不符",
            )
    return None


def check_completeness(c: _Stored | _Package) -> Iterator[Finding]:
    """What the manifest says was not recorded (:func:`completeness_findings`)."""
    yield from track_completeness(c.manifest)


RECORDING_CHECKS: tuple[Check, ...] = (
    check_log,
    check_manifest_readable,
    check_manifest_signature,
    check_seal,
    check_bounds,
    check_metadata,
    check_data_key,
    check_segments,
    check_completeness,
)


def verify_recording(
    recording_dir: Path,
    custody_dir: Path,
    public: Ed25519PublicKey | Sequence[Ed25519PublicKey],
    kek: KeyEncryptionKey | None = None,
    *,
    checkpoints: Sequence[TreeHead] = (),
    witness: Ed25519PublicKey | None = None,
) -> list[Finding]:
    """A stored recording, with its data directory's custody log: :data:`RECORDING_CHECKS`."""
    anchors = [public] if isinstance(public, Ed25519PublicKey) else list(public)
    return _run_checks(
        RECORDING_CHECKS, _Stored(recording_dir, custody_dir, anchors, kek, checkpoints, witness)
    )


# -- an export package --------------------------------------------------------------------------
@dataclass
class _Package:
    """What the checks of an export package learn and share, in the order they run."""

    package: Path
    public: Ed25519PublicKey | Sequence[Ed25519PublicKey] | None
    witness: Ed25519PublicKey | None
    checkpoints: Sequence[TreeHead]
    findings: list[Finding] = field(default_factory=list)
    anchors: list[Ed25519PublicKey] = field(default_factory=list)
    package_bytes: bytes = b""
    listing: dict[str, Any] = field(default_factory=dict)
    sig: dict[str, Any] = field(default_factory=dict)
    covers: dict[str, str] = field(default_factory=dict)
    proofs: dict[str, Any] = field(default_factory=dict)
    lines: list[bytes] = field(default_factory=list)
    head: TreeHead | None = None  # at export
    seal_head: TreeHead | None = None  # at sealing
    parsed: list[tuple[bytes, dict[str, Any] | None]] = field(default_factory=list)
    chain: KeyChain = field(default_factory=KeyChain)
    entries: dict[int, dict[str, Any]] = field(default_factory=dict)  # included under the head
    manifest: dict[str, Any] = field(default_factory=dict)

    def heads(self) -> tuple[TreeHead, TreeHead]:
        assert self.head is not None and self.seal_head is not None
        return self.head, self.seal_head

    def included(self, line: bytes, index: int) -> bool:
        """Whether an entry line is included under the export head, by proofs.json's proof."""
        head, _ = self.heads()
        inclusion_map = self.proofs.get("inclusion")
        export_root = _hex(head.root_hash)
        proof = _hex_list(
            inclusion_map.get(str(index)) if isinstance(inclusion_map, dict) else None
        )
        return (
            proof is not None
            and export_root is not None
            and merkle.verify_inclusion(
                merkle.leaf_hash(line), index, head.tree_size, proof, export_root
            )
        )


def check_public_key(c: _Package) -> Iterator[Finding]:
    """The keys to trust: those given, or (said so) the package's own copy."""
    public = c.public
    if public is None:
        try:
            public = load_public_key((c.package / "public-key.pem").read_bytes())
        except (FileNotFoundError, KeyProblem) as exc:
            yield _fail(
                "public key",
                f"none given and the package's is unusable: {exc}",
                zh=f"未给出公钥，导出包中的公钥也不可用：{exc}",
            )
            raise _Halt from None
        yield _ok(
            "public key",
            f"taken from the package (key id {key_id(public)}): trust it "
            "only if it matches the key the authority published",
            zh=f"取自导出包本身（密钥编号 {key_id(public)}）："
            "仅当它与主管机关公布的公钥一致时才可信",
        )
        c.anchors = [public]
    else:
        c.anchors = [public] if isinstance(public, Ed25519PublicKey) else list(public)
        yield _ok(
            "public key",
            "key id " + ", ".join(key_id(a) for a in c.anchors),
            zh="密钥编号 " + "、".join(key_id(a) for a in c.anchors),
        )


def check_package_readable(c: _Package) -> Iterator[Finding]:
    """``package.json``, ``package.sig`` and the custody proofs and entries can be read."""
    try:
        c.package_bytes = (c.package / "package.json").read_bytes()
        c.listing = json.loads(c.package_bytes)
        c.sig = json.loads((c.package / "package.sig").read_bytes())
        covers = c.sig["covers"]
        if not isinstance(covers, dict):
            raise ValueError("package.sig covers nothing")
        c.covers = covers
    except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
        yield _fail(
            "package",
            f"package.json or package.sig unreadable: {exc}",
            zh=f"package.json 或 package.sig 无法读取：{exc}",
        )
        raise _Halt from None
    try:
        c.proofs = json.loads((c.package / "custody" / "proofs.json").read_bytes())
        c.lines = [
            line
            for line in (c.package / "custody" / "entries.jsonl").read_bytes().split(b"\n")
            if line
        ]
        c.head = TreeHead.from_json(c.proofs["tree_head"])
        c.seal_head = TreeHead.from_json(c.proofs["seal_tree_head"])
    except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
        yield _fail("custody", f"proofs unreadable: {exc}", zh=f"证明无法读取：{exc}")
        raise _Halt from None
    for line in c.lines:
        try:
            entry = json.loads(line)
            int(entry["index"])
            c.parsed.append((line, entry))
        except (ValueError, KeyError, TypeError):
            c.parsed.append((line, None))


def check_signing_keys(c: _Package) -> Iterator[Finding]:
    """The keys that signed the package are the given ones or linked to one by signed
    rotations included under the export head (an altered rotation is named below)."""
    _, seal_head = c.heads()
    rotations = [
        e
        for line, e in c.parsed
        if e is not None and e.get("type") == ROTATION and c.included(line, int(e["index"]))
    ]
    c.chain = chain = key_chain(
        c.anchors, sorted(rotations, key=lambda e: int(e["index"])), seal_head.key_id
    )
    for problem in chain.problems:
        yield _fail("signing keys", str(problem))
    if not chain.trusted:
        yield _fail(
            "signing keys",
            f"the package is signed by {chain.describe()}; none is a "
            f"given key ({', '.join(key_id(a) for a in c.anchors)}) nor "
            "linked to one by a signed rotation in the package (made "
            "before a rotation? give the older published key too)",
            zh=f"导出包由 {chain.describe()} 签名；"
            f"它不是所给的公钥（{'、'.join(key_id(a) for a in c.anchors)}），"
            "包中也没有签名的轮换记录将其与所给公钥相连"
            "（是否在密钥轮换前导出？请同时给出较早公布的公钥）",
        )


def check_package_signature(c: _Package) -> Iterator[Finding]:
    """``package.sig`` signs ``package.json`` and the custody files, under the key in force at
    the export head."""
    head, _ = c.heads()
    chain = c.chain
    signer_id = str(c.sig.get("key_id", ""))
    signer = chain.public(signer_id) if chain.trusted else None
    export_key_id, _ = chain.key_for_size(head.tree_size)
    if (
        signer is not None
        and signer_id == export_key_id
        and verify_in_context(
            signer,
            PACKAGE_CONTEXT,
            str(c.sig.get("signature", "")),
            package_sig_message(signer_id, c.covers),
        )
    ):
        yield _ok(
            "package signature",
            f"key {signer_id}, over package.json and custody/",
            zh=f"密钥 {signer_id}，覆盖 package.json 与 custody/",
        )
    else:
        yield _fail(
            "package signature",
            "package.sig does not verify: package.json or custody/ "
            "is not what was signed (edited, or wrong key)",
            zh="package.sig 验证不通过：package.json 或 custody/ 与签名时不同"
            "（被修改，或密钥不对）",
        )


def check_files(c: _Package) -> Iterator[Finding]:
    """Every file is what ``package.sig`` or ``package.json`` hashed; none missing or added."""
    package, covers = c.package, c.covers
    for rel in SIG_COVERS:
        path = package / rel
        if rel not in covers:
            yield _fail(f"file {rel}", "not covered by package.sig", zh="未被 package.sig 覆盖")
        elif not path.is_file():
            yield _fail(f"file {rel}", "missing", zh="缺失")
        elif sha256_file(path) != covers[rel]:
            yield _fail(
                f"file {rel}",
                "content differs from package.sig (altered)",
                zh="内容与 package.sig 不符（被修改）",
            )
    files: dict[str, str] = c.listing.get("files", {})
    for rel, expected in sorted(files.items()):
        path = package / rel
        if not path.is_file():
            yield _fail(f"file {rel}", "missing", zh="缺失")
        elif sha256_file(path) != expected:
            yield _fail(
                f"file {rel}",
                "content differs from package.json (altered)",
                zh="内容与 package.json 不符（被修改）",
            )
    present = {p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()}
    for rel in sorted(present - set(files) - set(covers) - {"package.sig"}):
        yield _fail(
            f"file {rel}", "not listed in package.json (added)", zh="未列入 package.json（被添加）"
        )


def check_tree_heads(c: _Package) -> Iterator[Finding]:
    """The export head and the sealing head verify under the keys in force at their sizes."""
    head, seal_head = c.heads()
    chain = c.chain
    export_key_id, _ = chain.key_for_size(head.tree_size)
    export_pub = chain.public(head.key_id)
    if export_pub is None or head.key_id != export_key_id or not head.verify(export_pub):
        yield _fail(
            "tree head",
            f"signature does not verify (key {head.key_id})",
            zh=f"签名验证不通过（密钥 {head.key_id}）",
        )
    else:
        yield _ok(
            "tree head",
            f"size {head.tree_size}, signed by key {head.key_id}",
            zh=f"大小 {head.tree_size}，由密钥 {head.key_id} 签名",
        )
    seal_key_id, seal_pub = chain.key_for_size(seal_head.tree_size)
    if seal_pub is None or seal_head.key_id != seal_key_id or not seal_head.verify(seal_pub):
        yield _fail(
            "seal tree head",
            f"signature does not verify (key {seal_head.key_id})",
            zh=f"签名验证不通过（密钥 {seal_head.key_id}）",
        )


def check_package_witness(c: _Package) -> Iterator[Finding]:
    """With the witness key: both heads carry its countersignature."""
    if c.witness is None:
        return
    failed = False
    for name, witnessed in (("tree head", c.heads()[0]), ("seal tree head", c.heads()[1])):
        cosig_problem = verify_cosignature(witnessed, c.witness)
        if cosig_problem:
            failed = True
            yield _fail(
                "witness",
                f"the {name}'s countersignature: {cosig_problem}",
                zh=f"{name} 的见证副署：{cosig_problem}",
            )
    if not failed:
        yield _ok(
            "witness",
            f"both heads countersigned by witness {key_id(c.witness)}: "
            "consistent with every head it countersigned, every published "
            "checkpoint included",
            zh=f"两个树头均由见证密钥 {key_id(c.witness)} 副署：与其副署过的每个树头一致，"
            "已含所有公布的检查点",
        )


def check_checkpoints(c: _Package) -> Iterator[Finding]:
    """A given checkpoint of a head's size has that head's root (no forked history)."""
    for checkpoint in c.checkpoints:
        same = [h for h in c.heads() if h.tree_size == checkpoint.tree_size]
        if same and same[0].root_hash != checkpoint.root_hash:
            yield _fail(
                "checkpoint",
                f"the checkpoint of size {checkpoint.tree_size} has "
                "another root than the package's head of that size: a "
                "forked history",
                zh=f"大小为 {checkpoint.tree_size} 的检查点与导出包中同样大小的树头根值不同："
                "历史已分叉",
            )
        elif not same:
            yield _ok(
                "checkpoint",
                f"size {checkpoint.tree_size}: compared through the "
                "witness countersignatures (a package holds proofs only "
                "between its own heads)",
                zh=f"大小 {checkpoint.tree_size}：经见证副署比对（导出包只含其自身树头之间的证明）",
            )


def check_consistency(c: _Package) -> Iterator[Finding]:
    """The log at sealing is a prefix of the log at export."""
    head, seal_head = c.heads()
    consistency = _hex_list(c.proofs.get("consistency"))
    seal_root, root = _hex(seal_head.root_hash), _hex(head.root_hash)
    if (
        consistency is not None
        and seal_root is not None
        and root is not None
        and merkle.verify_consistency(
            seal_head.tree_size, head.tree_size, seal_root, root, consistency
        )
    ):
        yield _ok(
            "consistency",
            f"the log at sealing (size {seal_head.tree_size}) is a prefix "
            f"of the log at export (size {head.tree_size}): no fork, no "
            "rewrite",
            zh=f"封存时的日志（大小 {seal_head.tree_size}）是导出时日志（大小 {head.tree_size}）"
            "的前缀：无分叉，无改写",
        )
    else:
        yield _fail(
            "consistency",
            "the log at export does not extend the log that sealed the "
            "recording (forked or rewritten)",
            zh="导出时的日志并未延续封存该录像时的日志（分叉或被改写）",
        )


def check_custody_entries(c: _Package) -> Iterator[Finding]:
    """Every entry in the package is included under the export head, and every entry that
    proofs.json lists is there; only included entries are used from here on."""
    bad_entries = 0
    for line, entry in c.parsed:
        if entry is None:
            yield _fail(
                "custody entries",
                "an entry is not JSON with an index",
                zh="有条目不是带编号的 JSON",
            )
            bad_entries += 1
            continue
        index = int(entry["index"])
        if not c.included(line, index):
            yield _fail(
                f"custody entry {index}",
                "not included under the signed tree head (altered, or proof wrong)",
                zh="未包含在签名树头之下（被修改，或证明有误）",
            )
            bad_entries += 1
            continue
        c.entries[index] = entry
    listed_entries = c.proofs.get("entries")
    if isinstance(listed_entries, dict):
        for index_text, kind in sorted(listed_entries.items(), key=lambda kv: int(kv[0])):
            if int(index_text) not in c.entries and not any(
                e is not None and str(e.get("index")) == index_text for _, e in c.parsed
            ):
                yield _fail(
                    f"custody entry {index_text}",
                    f"the {kind} entry proofs.json lists is missing from entries.jsonl (removed)",
                    zh=f"proofs.json 列出的 {kind} 条目在 entries.jsonl 中缺失（被删除）",
                )
                bad_entries += 1
    else:
        yield _fail(
            "custody entries",
            "proofs.json does not list the package's entries",
            zh="proofs.json 未列出导出包的条目",
        )
    if c.lines and not bad_entries:
        yield _ok(
            "custody entries",
            f"{len(c.entries)} entries included under the tree head",
            zh=f"{len(c.entries)} 个条目均包含在树头之下",
        )


def check_package_seal(c: _Package) -> Iterator[Finding]:
    """The manifest is what was signed, and an included ``recording.sealed`` entry under the
    sealing head (the one in ``manifest.sig.json``) seals it; its bounds are included entries
    of this recording."""
    _, seal_head = c.heads()
    try:
        body = (c.package / "manifest.json").read_bytes()
        c.manifest = manifest = json.loads(body)
        envelope = json.loads((c.package / "manifest.sig.json").read_bytes())
    except (FileNotFoundError, ValueError) as exc:
        yield _fail("manifest", f"unreadable: {exc}", zh=f"无法读取：{exc}")
        raise _Halt from None
    digest = hashlib.sha256(body).hexdigest()
    seal_key_id, seal_pub = c.chain.key_for_size(seal_head.tree_size)
    yield from _manifest_signature(c.chain, seal_key_id, seal_pub, envelope, body, manifest)
    try:
        envelope_head = TreeHead.from_json(envelope["tree_head"])
    except (KeyError, TypeError, ValueError):
        envelope_head = None
    sealed_index = envelope.get("sealed_index", -1)
    sealed = c.entries.get(sealed_index, {}) if isinstance(sealed_index, int) else {}
    if (
        envelope_head is None
        or not envelope_head.same_head(seal_head)
        or envelope_head.witness != seal_head.witness
    ):
        yield _fail(
            "seal",
            "proofs.json's seal tree head is not the one in manifest.sig.json "
            f"(proofs say size {seal_head.tree_size}, the envelope "
            f"{envelope_head.tree_size if envelope_head else '?'})",
            zh=f"proofs.json 中的封存树头与 manifest.sig.json 中的不同（证明为大小 "
            f"{seal_head.tree_size}，封套为 "
            f"{envelope_head.tree_size if envelope_head else '?'}）",
        )
    elif not isinstance(sealed_index, int) or sealed_index >= seal_head.tree_size:
        yield _fail(
            "seal",
            f"the sealing entry {sealed_index} is not under the sealing head",
            zh=f"封存条目 {sealed_index} 不在封存树头之下",
        )
    elif sealed.get("type") == "recording.sealed" and sealed.get("manifest_sha256") == digest:
        yield _ok(
            "seal",
            f"log entry {sealed_index} seals this manifest, under the head of "
            f"size {seal_head.tree_size} (key {seal_head.key_id})",
            zh=f"日志条目 {sealed_index} 封存了此清单，位于大小为 {seal_head.tree_size} "
            f"的树头之下（密钥 {seal_head.key_id}）",
        )
    else:
        yield _fail(
            "seal", "no included log entry seals this manifest", zh="没有已包含的日志条目封存此清单"
        )
    yield from _bounds(manifest, c.entries, str(manifest.get("recording_id", "")))


def check_export(c: _Package) -> Iterator[Finding]:
    """An included ``recording.exported`` entry records this ``package.json``."""
    exported = c.entries.get(c.proofs.get("export_index", -1), {})
    if (
        exported.get("type") == "recording.exported"
        and exported.get("package_sha256") == hashlib.sha256(c.package_bytes).hexdigest()
    ):
        yield _ok(
            "export",
            f"log entry {c.proofs['export_index']} records this package "
            f"({exported.get('actor')}: {exported.get('reason')})",
            zh=f"日志条目 {c.proofs['export_index']} 记录了本导出包（{exported.get('actor')}："
            f"{exported.get('reason')}）",
        )
    else:
        yield _fail(
            "export",
            "no included log entry records this package.json",
            zh="没有已包含的日志条目记录此 package.json",
        )


def check_media(c: _Package) -> Iterator[Finding]:
    """Each media file re-hashes, segment by segment, to what was logged at capture."""
    package = c.package
    by_segment = {
        (e.get("track"), e.get("segment")): e
        for e in c.entries.values()
        if e.get("type") == "segment.written"
    }
    media: dict[str, str] = c.listing.get("media", {})
    checked = 0
    failed = False
    for track in c.manifest.get("tracks", []):
        track_id = str(track.get("track_id"))
        segments = track.get("segments", [])
        if not segments:
            continue
        media_rel = media.get(track_id)
        if media_rel is None or not (package / media_rel).is_file():
            failed = True
            yield _fail(
                f"track {track_id}",
                "its media file is missing from the package",
                zh="其媒体文件在导出包中缺失",
            )
            continue
        data = (package / media_rel).read_bytes()
        offset = 0
        for seg in segments:
            part = data[offset : offset + int(seg.get("bytes", 0))]
            offset += int(seg.get("bytes", 0))
            logged = by_segment.get((track_id, seg.get("segment")))
            digest_part = hashlib.sha256(part).hexdigest()
            if logged is None:
                failed = True
                yield _fail(
                    f"track {track_id} segment {seg.get('segment')}",
                    f"its segment.written entry {seg.get('log_index')} is not in the package",
                    zh=f"其 segment.written 条目 {seg.get('log_index')} 不在导出包中",
                )
            elif digest_part != seg.get("sha256") or digest_part != logged.get("sha256"):
                failed = True
                yield _fail(
                    f"track {track_id} segment {seg.get('segment')}",
                    f"bytes {offset - len(part)}..{offset} of {media_rel} differ from "
                    "the hash logged when the segment was written",
                    zh=f"{media_rel} 的第 {offset - len(part)}..{offset} "
                    "字节与写入片段时记录的哈希值不符",
                )
            else:
                checked += 1
        if offset != len(data):
            failed = True
            yield _fail(
                f"track {track_id}",
                f"{media_rel} is {len(data)} bytes, the segments add up to {offset}",
                zh=f"{media_rel} 为 {len(data)} 字节，片段合计 {offset} 字节",
            )
    if checked and not failed:
        yield _ok(
            "media",
            f"{checked} segments re-hash to their values logged at capture",
            zh=f"{checked} 个片段重新计算的哈希值与采集时记录的值相符",
        )


PACKAGE_CHECKS: tuple[Check, ...] = (
    check_public_key,
    check_package_readable,
    check_signing_keys,
    check_package_signature,
    check_files,
    check_tree_heads,
    check_package_witness,
    check_checkpoints,
    check_consistency,
    check_custody_entries,
    check_package_seal,
    check_export,
    check_media,
    check_completeness,
)


def verify_package(
    package: Path,
    public: Ed25519PublicKey | Sequence[Ed25519PublicKey] | None,
    *,
    witness: Ed25519PublicKey | None = None,
    checkpoints: Sequence[TreeHead] = (),
) -> list[Finding]:
    """An export package, with only public keys (the package's own copy if none is given):
    :data:`PACKAGE_CHECKS`.

    Several keys may be given: the keys of a rotation chain, when the package was made before
    a rotation and only the newer key is at hand along with the older published one."""
    return _run_checks(PACKAGE_CHECKS, _Package(package, public, witness, checkpoints))


# -- shared by both -----------------------------------------------------------------------------
def _sizes(heads: list[TreeHead], start: int, end: int | None) -> str:
    sizes = [
        h.tree_size
        for h in heads
        if h.tree_size - 1 >= start and (end is None or h.tree_size - 1 < end)
    ]
    if not sizes:
        return "(none)"
    return f"{sizes[0]}..{sizes[-1]}" if len(sizes) > 1 else str(sizes[0])


def _manifest_signature(
    chain: KeyChain,
    sealing_key_id: str,
    sealing_key: Ed25519PublicKey | None,
    envelope: dict[str, Any],
    body: bytes,
    manifest: dict[str, Any],
) -> Iterator[Finding]:
    """The manifest's Ed25519 signature, under the key that signed the sealing head (which
    the manifest and its envelope must name)."""
    named = {
        "manifest.sig.json": envelope.get("signing_key_id"),
        "manifest.json": (manifest.get("custody") or {}).get("signing_key_id"),
    }
    for where, value in named.items():
        if value is not None and value != sealing_key_id:
            yield (
                Finding(
                    False,
                    "manifest signature",
                    f"{where} names signing key {value}, but key "
                    f"{sealing_key_id} signed the sealing tree head",
                    zh=f"{where} 写明的签名密钥为 {value}，但签署封存树头的是密钥 {sealing_key_id}",
                )
            )
    how = (
        verify_manifest(sealing_key, str(envelope.get("signature", "")), body)
        if sealing_key is not None
        else None
    )
    if how is None:
        yield (
            Finding(
                False,
                "manifest signature",
                "manifest.json is not what was signed (edited, or wrong key)",
                zh="manifest.json 与签名时不同（被修改，或密钥不对）",
            )
        )
    else:
        yield (
            Finding(
                True,
                "manifest signature",
                f"key {sealing_key_id}"
                + (
                    ""
                    if how == "context"
                    else ", signed without a context string (recordings sealed "
                    "before manifests had one; nothing else is signed bare)"
                ),
                zh=f"密钥 {sealing_key_id}"
                + (
                    ""
                    if how == "context"
                    else "，签名时未带上下文字符串（清单带上下文之前封存的录像；"
                    "此外没有任何内容不带上下文签名）"
                ),
            )
        )


def _bounds(
    manifest: dict[str, Any], trusted: dict[int, dict[str, Any]], recording_id: str
) -> Iterator[Finding]:
    """The manifest's recording.started / recording.stopped are trusted entries of it."""
    custody = manifest.get("custody") or {}
    for name, kind in (
        ("started_index", "recording.started"),
        ("stopped_index", "recording.stopped"),
    ):
        index = custody.get(name)
        if index is None:
            if kind == "recording.started" and manifest.get("status") == "incomplete":
                continue  # a recovered recording whose start entry was never logged
            yield (
                Finding(
                    False, kind, f"the manifest names no {kind} entry", zh=f"清单中没有 {kind} 条目"
                )
            )
            continue
        entry = trusted.get(index) if isinstance(index, int) else None
        if entry is None:
            yield (
                Finding(
                    False,
                    kind,
                    f"log entry {index} is missing or not under a signed tree head",
                    zh=f"日志条目 {index} 缺失或不在签名树头之下",
                )
            )
        elif entry.get("type") != kind or entry.get("recording") != recording_id:
            yield (
                Finding(
                    False,
                    kind,
                    f"log entry {index} is a {entry.get('type')} "
                    f"of {entry.get('recording')}, not this "
                    f"recording's {kind}",
                    zh=f"日志条目 {index} 是 {entry.get('recording')} 的 {entry.get('type')}，"
                    f"而非本录像的 {kind}",
                )
            )
        else:
            yield (
                Finding(
                    True,
                    kind,
                    f"log entry {index} ({entry.get('actor')}, {entry.get('time')})",
                    zh=f"日志条目 {index}（{entry.get('actor')}，{entry.get('time')}）",
                )
            )


def _metadata(
    findings: list[Finding],
    recording_dir: Path,
    manifest: dict[str, Any],
    trusted: dict[int, dict[str, Any]],
    recording_id: str,
) -> dict[str, Any] | None:
    """recording.json against the manifest and the log; returns it when readable."""

    def fail(detail: str, zh: str) -> None:
        findings.append(Finding(False, "recording.json", detail, zh))

    try:
        meta: dict[str, Any] = json.loads((recording_dir / "recording.json").read_bytes())
    except FileNotFoundError:
        fail("missing", "缺失")
        return None
    except ValueError as exc:
        fail(f"not JSON: {exc}", f"不是 JSON：{exc}")
        return None
    before = len([f for f in findings if not f.ok])
    for name in ("recording_id", "case", "room", "started_at", "started_by"):
        if name in manifest and meta.get(name) != manifest.get(name):
            fail(
                f"{name} is {meta.get(name)!r}, the sealed manifest says {manifest.get(name)!r}",
                f"{name} 为 {meta.get(name)!r}，封存的清单写的是 {manifest.get(name)!r}",
            )
    mine = [e for _, e in sorted(trusted.items()) if e.get("recording") == recording_id]
    deleted = any(e.get("type") == "recording.deleted" for e in mine)
    state = meta.get("state")
    if state not in ("sealed", "deleted"):
        fail(
            f"state is {state!r}, but the recording is sealed",
            f"状态为 {state!r}，但该录像已封存",
        )
    elif (state == "deleted") != deleted:
        fail(
            f"state is {state!r}, but the log {'does' if deleted else 'does not'} record a "
            "deletion",
            f"状态为 {state!r}，但日志{'记录了' if deleted else '没有记录'}删除",
        )
    started = next((e for e in mine if e.get("type") == "recording.started"), None)
    retain = started.get("retain_until") if started else None
    for entry in mine:
        if entry.get("type") == "recording.retention_changed":
            retain = entry.get("new")
        if (
            entry.get("type") == "recording.deleted"
            and retain
            and str(entry.get("time", ""))[:10] <= str(retain)
        ):
            fail(
                f"log entry {entry['index']} deleted the media on "
                f"{str(entry.get('time'))[:10]}, while it was retained until {retain}",
                f"日志条目 {entry['index']} 于 {str(entry.get('time'))[:10]} 删除了媒体，"
                f"而其保存期限至 {retain}",
            )
    if retain is not None and meta.get("retain_until") != retain:
        fail(
            f"retain_until is {meta.get('retain_until')!r}, the log says {retain!r} (changed "
            "outside the custody log)",
            f"retain_until 为 {meta.get('retain_until')!r}，日志写的是 {retain!r}"
            "（在托管日志之外被修改）",
        )
    sealed_key = manifest.get("key") or {}
    key = meta.get("key") or {}
    rewrapped = [
        e
        for e in trusted.values()
        if e.get("type") == "keys.kek_rotated" and recording_id in (e.get("recordings") or {})
    ]
    allowed = [
        {
            "kek_fingerprint": sealed_key.get("kek_fingerprint"),
            "wrapped_data_key": sealed_key.get("wrapped_data_key"),
        }
    ]
    allowed += [
        {"kek_fingerprint": e.get("new_kek"), "wrapped_data_key": e["recordings"][recording_id]}
        for e in rewrapped
    ]
    if {
        "kek_fingerprint": key.get("kek_fingerprint"),
        "wrapped_data_key": key.get("wrapped_data_key"),
    } not in allowed:
        fail(
            "its wrapped data key is neither the sealed one nor one a logged KEK rotation wrote",
            "其加密的数据密钥既不是封存时的，也不是日志记录的密钥加密密钥轮换所写的",
        )
    if len([f for f in findings if not f.ok]) == before:
        findings.append(
            Finding(
                True,
                "recording.json",
                f"state {state}, retained until "
                f"{meta.get('retain_until')}, data key under KEK "
                f"{key.get('kek_fingerprint')}, as the log says",
                zh=f"状态 {state}，保存至 {meta.get('retain_until')}，数据密钥由密钥加密密钥 "
                f"{key.get('kek_fingerprint')} 加密，与日志相符",
            )
        )
    return meta


def verify_path(
    path: Path,
    *,
    public_key: Ed25519PublicKey | Sequence[Ed25519PublicKey] | None,
    custody_dir: Path | None,
    kek: KeyEncryptionKey | None,
    checkpoints: Sequence[TreeHead] = (),
    witness: Ed25519PublicKey | None = None,
) -> list[Finding]:
    """A stored recording directory (with its data directory's custody log) or a package."""
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory")
    if (path / "package.json").exists():
        return verify_package(path, public_key, witness=witness, checkpoints=checkpoints)
    if (path / "recording.json").exists():
        if public_key is None:
            raise FileNotFoundError("no public key: pass --public-key")
        custody = custody_dir or path.parent.parent / "custody"
        return verify_recording(
            path, custody, public_key, kek, checkpoints=checkpoints, witness=witness
        )
    raise FileNotFoundError(f"{path} is neither a stored recording nor an export package")


def _hex(value: object) -> bytes | None:
    try:
        return bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _hex_list(values: object) -> list[bytes] | None:
    if not isinstance(values, list):
        return None
    out = [_hex(v) for v in values]
    return None if any(v is None for v in out) else [v for v in out if v is not None]


def completeness_findings(manifest: dict[str, Any]) -> list[Finding]:
    """What the manifest says was not recorded: its status, each track's failure, its gaps
    by cause, and whether its counts add up (forwarded = recorded + in gaps + late + cut off).

    An authentic recording that says it is incomplete verifies (its findings say what is
    missing); counts that do not add up fail, since then something is unaccounted for.
    """
    out: list[Finding] = []
    gaps = [g for g in manifest.get("gaps") or [] if isinstance(g, dict)]
    tracks = [t for t in manifest.get("tracks") or [] if isinstance(t, dict)]
    failed = [t for t in tracks if t.get("failure")]
    if manifest.get("status") == "complete" and not failed:
        out.append(
            Finding(
                True,
                "completeness",
                "complete; " + (f"{len(gaps)} gap(s) listed below" if gaps else "no gaps"),
                zh="完整；" + (f"下列 {len(gaps)} 处缺口" if gaps else "无缺口"),
            )
        )
    else:
        out.append(
            Finding(
                True,
                "completeness",
                f"INCOMPLETE (status {manifest.get('status')}): "
                f"{manifest.get('note') or 'no note'}",
                zh=f"不完整（状态 {manifest.get('status')}）："
                f"{note_zh(str(manifest.get('note') or '')) or '无说明'}",
            )
        )
    for track in tracks:
        track_id = track.get("track_id", "?")
        mine = [g for g in gaps if g.get("track") == track_id]
        failure = track.get("failure")
        if isinstance(failure, dict):
            out.append(
                Finding(
                    True,
                    f"track {track_id}",
                    f"FAILED at {failure.get('time')}: "
                    f"{failure.get('error')}; recorded up to then only",
                    zh=f"于 {failure.get('time')} 失败：{failure.get('error')}；仅录至该时刻",
                )
            )
        forwarded, recorded = track.get("forwarded_frames"), track.get("frames")
        if not isinstance(forwarded, int) or not isinstance(recorded, int):
            continue  # a manifest from before these counts, or recovered after a crash
        in_gaps = sum(int(g.get("frames") or 0) for g in mine)
        late, cut = int(track.get("late_frames") or 0), int(track.get("cut_frames") or 0)
        in_segments = sum(int(s.get("frames") or 0) for s in track.get("segments", []))
        causes: dict[str, int] = {}
        for gap in mine:
            causes[str(gap.get("cause"))] = causes.get(str(gap.get("cause")), 0) + 1
        if in_segments != recorded:
            out.append(
                Finding(
                    False,
                    f"track {track_id} frames",
                    f"the manifest says {recorded} recorded, its segments hold {in_segments}",
                    zh=f"清单记录 {recorded} 帧，其片段含 {in_segments} 帧",
                )
            )
        elif recorded + in_gaps + late + cut != forwarded:
            out.append(
                Finding(
                    False,
                    f"track {track_id} frames",
                    f"{forwarded} forwarded but {recorded} recorded + {in_gaps} in "
                    f"gaps + {late} late + {cut} cut off: "
                    f"{forwarded - recorded - in_gaps - late - cut} unaccounted for",
                    zh=f"SFU 转发 {forwarded} 帧，但录制 {recorded} + 缺口中 {in_gaps} + 迟到 "
                    f"{late} + 截断 {cut}：{forwarded - recorded - in_gaps - late - cut} "
                    "帧无法解释",
                )
            )
        else:
            seconds = sum(float(g.get("duration") or 0) for g in mine)
            detail = ", ".join(f"{n} {cause}" for cause, n in sorted(causes.items()))
            detail_zh = "，".join(
                f"{gap_cause(cause)} {n} 处" for cause, n in sorted(causes.items())
            )
            out.append(
                Finding(
                    True,
                    f"track {track_id} frames",
                    f"{forwarded} forwarded by the SFU, {recorded} recorded"
                    + (f", {in_gaps} in gaps" if in_gaps else "")
                    + (f", {late} late" if late else "")
                    + (f", {cut} cut off at the end" if cut else "")
                    + (f"; gaps: {detail} ({seconds:.1f} s)" if mine else ""),
                    zh=f"SFU 转发 {forwarded} 帧，录制 {recorded} 帧"
                    + (f"，缺口中 {in_gaps} 帧" if in_gaps else "")
                    + (f"，迟到 {late} 帧" if late else "")
                    + (f"，结尾截断 {cut} 帧" if cut else "")
                    + (f"；缺口：{detail_zh}（{seconds:.1f} 秒）" if mine else ""),
                )
            )
    return out
