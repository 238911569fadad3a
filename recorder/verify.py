"""Offline verification: only the public key, no server, and a named reason for every failure.

``verify_recording(recording_dir, custody_dir, public_key)`` checks a stored recording:

1. the custody log holds (every signed tree head verifies and matches the entries);
2. ``manifest.json`` is what was signed (Ed25519) and what the ``recording.sealed`` entry
   hashed, and that entry is included under the envelope's signed tree head (RFC 9162
   inclusion proof, recomputed from the log);
3. every segment the manifest lists is on disk, its stored bytes hash to the value the log
   recorded when it was written, and its log entry names the same track, position and hashes;
4. no segment is missing from a track's sequence, and no file is on disk that the log never saw.

With the key-encryption key as well (``kek``), each segment is decrypted (which also proves it
sits at its recorded position: the position is bound in as associated data) and its plaintext
hash checked.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import merkle
from .custody import TreeHead, sha256_file, verify_log
from .keys import KeyEncryptionKey, KeyProblem, key_id, load_public_key, verify_signature
from .recording import decrypt_segment


@dataclass
class Finding:
    ok: bool
    check: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.check}" + (f": {self.detail}"
                                                                 if self.detail else "")


def _read_log(custody_dir: Path) -> list[bytes]:
    path = custody_dir / "entries.log"
    return [line for line in path.read_bytes().split(b"\n") if line] if path.exists() else []


def verify_recording(recording_dir: Path, custody_dir: Path, public: Ed25519PublicKey,
                     kek: KeyEncryptionKey | None = None) -> list[Finding]:
    findings: list[Finding] = []
    try:
        _verify_recording(findings, recording_dir, custody_dir, public, kek)
    except Exception as exc:
        findings.append(Finding(False, "verification", f"could not complete: {exc!r}"))
    return findings


def _verify_recording(findings: list[Finding], recording_dir: Path, custody_dir: Path,
                      public: Ed25519PublicKey, kek: KeyEncryptionKey | None) -> list[Finding]:

    def fail(check: str, detail: str) -> None:
        findings.append(Finding(False, check, detail))

    def ok(check: str, detail: str = "") -> None:
        findings.append(Finding(True, check, detail))

    # 1. the log itself
    problems = verify_log(custody_dir, public)
    for problem in problems:
        fail("custody log", str(problem))
    if not problems:
        ok("custody log", "every signed tree head verifies and matches the entries")
    lines = _read_log(custody_dir)
    leaves = [merkle.leaf_hash(line) for line in lines]

    # 2. manifest, signature, seal
    try:
        body = (recording_dir / "manifest.json").read_bytes()
        envelope = json.loads((recording_dir / "manifest.sig.json").read_bytes())
        manifest: dict[str, Any] = json.loads(body)
    except FileNotFoundError as exc:
        fail("manifest", f"missing {Path(exc.filename).name}: the recording was never sealed")
        return findings
    except ValueError as exc:
        fail("manifest", f"not JSON: {exc}")
        return findings
    digest = hashlib.sha256(body).hexdigest()
    if not verify_signature(public, str(envelope.get("signature", "")), body):
        fail("manifest signature", "manifest.json is not what was signed (edited, or wrong key)")
    else:
        ok("manifest signature")
    if envelope.get("manifest_sha256") != digest:
        fail("manifest hash", "manifest.json does not hash to the sealed value")
    sealed_index = envelope.get("sealed_index")
    try:
        head = TreeHead.from_json(envelope["tree_head"])
    except (KeyError, TypeError, ValueError):
        fail("seal", "the envelope carries no readable tree head")
        return findings
    if not head.verify(public):
        fail("seal", "the envelope's tree head signature does not verify")
    elif not isinstance(sealed_index, int) or not 0 <= sealed_index < min(head.tree_size,
                                                                           len(lines)):
        fail("seal", f"sealed entry {sealed_index} is not in the log")
    else:
        sealed = json.loads(lines[sealed_index])
        proof = merkle.inclusion_proof(sealed_index, leaves[:head.tree_size]) \
            if head.tree_size <= len(leaves) else []
        included = head.tree_size <= len(leaves) and merkle.verify_inclusion(
            leaves[sealed_index], sealed_index, head.tree_size, proof,
            bytes.fromhex(head.root_hash))
        if sealed.get("type") != "recording.sealed" or sealed.get("manifest_sha256") != digest:
            fail("seal", f"log entry {sealed_index} does not seal this manifest")
        elif not included:
            fail("seal", f"log entry {sealed_index} is not included under the signed tree head")
        else:
            ok("seal", f"log entry {sealed_index} seals this manifest; included under the "
                       f"tree head of size {head.tree_size}")
    findings.extend(completeness_findings(manifest))  # status, gaps, failures, counts

    # 3-4. segments
    entries_by_index = {}
    for i, line in enumerate(lines):
        try:
            entries_by_index[i] = json.loads(line)
        except ValueError:
            continue
    data_key: bytes | None = None
    if kek is not None:
        try:
            data_key = kek.unwrap(manifest["key"]["wrapped_data_key"],
                                  manifest["key"]["kek_fingerprint"])
        except (KeyProblem, KeyError) as exc:
            fail("data key", str(exc))
    recording_id = manifest.get("recording_id", "")
    segment_root = recording_dir / "segments"
    deleted = next((e for e in entries_by_index.values()
                    if e.get("type") == "recording.deleted"
                    and e.get("recording") == recording_id), None)
    if deleted is not None:
        ok("segments", f"media deleted under retention (log entry {deleted['index']}, "
                       f"{deleted.get('actor')}: {deleted.get('reason')})")
        return findings
    listed: set[Path] = set()
    total = 0
    for track in manifest.get("tracks", []):
        track_id = track.get("track_id", "?")
        segments = track.get("segments", [])
        positions = [s.get("segment") for s in segments]
        if positions != list(range(len(segments))):
            fail(f"track {track_id}", f"segment positions {positions} are not 0..n-1")
        for seg in segments:
            index = seg.get("segment")
            name = f"track {track_id} segment {index}"
            path = segment_root / track_id / f"{index:06d}.seg"
            listed.add(path)
            total += 1
            entry = entries_by_index.get(seg.get("log_index", -1), {})
            if (entry.get("type") != "segment.written" or entry.get("track") != track_id
                    or entry.get("segment") != index or entry.get("sha256") != seg.get("sha256")
                    or entry.get("sha256_stored") != seg.get("sha256_stored")
                    or entry.get("recording") != recording_id):
                fail(name, f"the manifest disagrees with custody log entry {seg.get('log_index')}")
                continue
            try:
                stored = path.read_bytes()
            except FileNotFoundError:
                fail(name, f"file {path.relative_to(recording_dir)} is missing (removed)")
                continue
            if hashlib.sha256(stored).hexdigest() != entry["sha256_stored"]:
                fail(name, f"stored bytes of {path.relative_to(recording_dir)} differ from "
                           "what was logged when written (altered or swapped)")
                continue
            if data_key is not None:
                try:
                    plain = decrypt_segment(stored, data_key, recording_id, track_id, index)
                except InvalidTag:
                    fail(name, "does not decrypt at this position (moved or altered)")
                    continue
                if hashlib.sha256(plain).hexdigest() != entry["sha256"]:
                    fail(name, "decrypted media differs from the hash logged at capture")
                    continue
    if segment_root.exists():
        for path in sorted(segment_root.glob("*/*.seg")):
            if path not in listed:
                fail("segments", f"{path.relative_to(recording_dir)} is not in the manifest")
    if all(f.ok for f in findings if f.check.startswith("track ") or f.check == "segments"):
        ok("segments", f"{total} segments present, each matching its logged hash"
           + (" and decrypting at its position" if data_key is not None else ""))
    return findings


def verify_path(path: Path, *, public_key: Ed25519PublicKey | None, custody_dir: Path | None,
                kek: KeyEncryptionKey | None) -> list[Finding]:
    """A stored recording directory (with its data directory's custody log)."""
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory")
    if (path / "package.json").exists():
        return verify_package(path, public_key)
    if (path / "recording.json").exists():
        if public_key is None:
            raise FileNotFoundError("no public key: pass --public-key")
        custody = custody_dir or path.parent.parent / "custody"
        return verify_recording(path, custody, public_key, kek)
    raise FileNotFoundError(f"{path} is neither a stored recording nor an export package")


def verify_package(package: Path, public: Ed25519PublicKey | None) -> list[Finding]:
    """An export package, with only the public key (the package's own copy if none is given)."""
    findings: list[Finding] = []
    try:
        _verify_package(findings, package, public)
    except Exception as exc:
        findings.append(Finding(False, "verification", f"could not complete: {exc!r}"))
    return findings


def _verify_package(findings: list[Finding], package: Path,
                    public: Ed25519PublicKey | None) -> list[Finding]:

    def fail(check: str, detail: str) -> None:
        findings.append(Finding(False, check, detail))

    def ok(check: str, detail: str = "") -> None:
        findings.append(Finding(True, check, detail))

    if public is None:
        try:
            public = load_public_key((package / "public-key.pem").read_bytes())
        except (FileNotFoundError, KeyProblem) as exc:
            fail("public key", f"none given and the package's is unusable: {exc}")
            return findings
        ok("public key", f"taken from the package (key id {key_id(public)}): trust it only "
                         "if it matches the key the authority published")
    else:
        ok("public key", f"key id {key_id(public)}")

    # package.json and its signature: every file the package lists
    try:
        package_bytes = (package / "package.json").read_bytes()
        listing = json.loads(package_bytes)
        signature = (package / "package.sig").read_text().strip()
    except (FileNotFoundError, ValueError) as exc:
        fail("package", f"package.json or package.sig unreadable: {exc}")
        return findings
    if verify_signature(public, signature, package_bytes):
        ok("package signature")
    else:
        fail("package signature", "package.json is not what was signed (edited, or wrong key)")
    files: dict[str, str] = listing.get("files", {})
    for rel, expected in sorted(files.items()):
        path = package / rel
        if not path.is_file():
            fail(f"file {rel}", "missing")
        elif sha256_file(path) != expected:
            fail(f"file {rel}", "content differs from package.json (altered)")
    present = {p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()}
    extra = sorted(present - set(files) - {"package.json", "package.sig"}
                   - {p for p in present if p.startswith("custody/")})
    for rel in extra:
        fail(f"file {rel}", "not listed in package.json (added)")

    # the custody proofs
    try:
        proofs = json.loads((package / "custody" / "proofs.json").read_bytes())
        lines = [line for line in
                 (package / "custody" / "entries.jsonl").read_bytes().split(b"\n") if line]
        head = TreeHead.from_json(proofs["tree_head"])
        seal_head = TreeHead.from_json(proofs["seal_tree_head"])
    except (FileNotFoundError, ValueError, KeyError) as exc:
        fail("custody", f"proofs unreadable: {exc}")
        return findings
    if not head.verify(public):
        fail("tree head", "signature does not verify")
    else:
        ok("tree head", f"size {head.tree_size}, signed")
    if not seal_head.verify(public):
        fail("seal tree head", "signature does not verify")
    consistency = _hex_list(proofs.get("consistency"))
    seal_root, root = _hex(seal_head.root_hash), _hex(head.root_hash)
    if consistency is not None and seal_root is not None and root is not None and \
            merkle.verify_consistency(seal_head.tree_size, head.tree_size, seal_root, root,
                                      consistency):
        ok("consistency", f"the log at sealing (size {seal_head.tree_size}) is a prefix of the "
                          f"log at export (size {head.tree_size}): no fork, no rewrite")
    else:
        fail("consistency", "the log at export does not extend the log that sealed the "
                            "recording (forked or rewritten)")
    entries: dict[int, dict[str, Any]] = {}
    bad_entries = 0
    for line in lines:
        try:
            entry = json.loads(line)
            index = int(entry["index"])
        except (ValueError, KeyError, TypeError):
            fail("custody entries", "an entry is not JSON with an index")
            bad_entries += 1
            continue
        inclusion = proofs.get("inclusion")
        proof = _hex_list(inclusion.get(str(index)) if isinstance(inclusion, dict) else None)
        if proof is None or root is None or not merkle.verify_inclusion(
                merkle.leaf_hash(line), index, head.tree_size, proof, root):
            fail(f"custody entry {index}", "not included under the signed tree head "
                                           "(altered, or proof wrong)")
            bad_entries += 1
            continue
        entries[index] = entry
    if lines and not bad_entries:
        ok("custody entries", f"{len(entries)} entries included under the tree head")

    # manifest, seal, export entry
    try:
        body = (package / "manifest.json").read_bytes()
        manifest = json.loads(body)
        envelope = json.loads((package / "manifest.sig.json").read_bytes())
    except (FileNotFoundError, ValueError) as exc:
        fail("manifest", f"unreadable: {exc}")
        return findings
    digest = hashlib.sha256(body).hexdigest()
    if verify_signature(public, str(envelope.get("signature", "")), body):
        ok("manifest signature")
    else:
        fail("manifest signature", "manifest.json is not what was signed (edited, or wrong key)")
    sealed = entries.get(envelope.get("sealed_index", -1), {})
    if sealed.get("type") == "recording.sealed" and sealed.get("manifest_sha256") == digest:
        ok("seal", f"log entry {envelope['sealed_index']} seals this manifest")
    else:
        fail("seal", "no included log entry seals this manifest")
    findings.extend(completeness_findings(manifest))  # status, gaps, failures, counts
    exported = entries.get(proofs.get("export_index", -1), {})
    if exported.get("type") == "recording.exported" and exported.get(
            "package_sha256") == hashlib.sha256(package_bytes).hexdigest():
        ok("export", f"log entry {proofs['export_index']} records this package "
                     f"({exported.get('actor')}: {exported.get('reason')})")
    else:
        fail("export", "no included log entry records this package.json")

    # media: each file re-hashes, segment by segment, to what was logged at capture
    by_segment = {(e.get("track"), e.get("segment")): e for e in entries.values()
                  if e.get("type") == "segment.written"}
    media: dict[str, str] = listing.get("media", {})
    checked = 0
    for track in manifest.get("tracks", []):
        track_id = str(track.get("track_id"))
        segments = track.get("segments", [])
        if not segments:
            continue
        media_rel = media.get(track_id)
        if media_rel is None or not (package / media_rel).is_file():
            fail(f"track {track_id}", "its media file is missing from the package")
            continue
        data = (package / media_rel).read_bytes()
        offset = 0
        for seg in segments:
            part = data[offset:offset + int(seg.get("bytes", 0))]
            offset += int(seg.get("bytes", 0))
            logged = by_segment.get((track_id, seg.get("segment")), {})
            digest_part = hashlib.sha256(part).hexdigest()
            if digest_part != seg.get("sha256") or digest_part != logged.get("sha256"):
                fail(f"track {track_id} segment {seg.get('segment')}",
                     f"bytes {offset - len(part)}..{offset} of {media_rel} differ from the hash "
                     "logged when the segment was written")
            else:
                checked += 1
        if offset != len(data):
            fail(f"track {track_id}", f"{media_rel} is {len(data)} bytes, the segments add up to "
                                      f"{offset}")
    if checked and all(f.ok for f in findings if f.check.startswith("track ")):
        ok("media", f"{checked} segments re-hash to their values logged at capture")
    return findings


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
        out.append(Finding(True, "completeness", "complete; "
                           + (f"{len(gaps)} gap(s) listed below" if gaps else "no gaps")))
    else:
        out.append(Finding(True, "completeness", f"INCOMPLETE (status {manifest.get('status')}): "
                           f"{manifest.get('note') or 'no note'}"))
    for track in tracks:
        track_id = track.get("track_id", "?")
        mine = [g for g in gaps if g.get("track") == track_id]
        failure = track.get("failure")
        if isinstance(failure, dict):
            out.append(Finding(True, f"track {track_id}", f"FAILED at {failure.get('time')}: "
                               f"{failure.get('error')}; recorded up to then only"))
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
            out.append(Finding(False, f"track {track_id} frames",
                               f"the manifest says {recorded} recorded, its segments hold "
                               f"{in_segments}"))
        elif recorded + in_gaps + late + cut != forwarded:
            out.append(Finding(False, f"track {track_id} frames",
                               f"{forwarded} forwarded but {recorded} recorded + {in_gaps} in "
                               f"gaps + {late} late + {cut} cut off: "
                               f"{forwarded - recorded - in_gaps - late - cut} unaccounted for"))
        else:
            seconds = sum(float(g.get("duration") or 0) for g in mine)
            detail = ", ".join(f"{n} {cause}" for cause, n in sorted(causes.items()))
            out.append(Finding(True, f"track {track_id} frames",
                               f"{forwarded} forwarded by the SFU, {recorded} recorded"
                               + (f", {in_gaps} in gaps" if in_gaps else "")
                               + (f", {late} late" if late else "")
                               + (f", {cut} cut off at the end" if cut else "")
                               + (f"; gaps: {detail} ({seconds:.1f} s)" if mine else "")))
    return out
