"""The tamper campaign's holes, each closed: every change that needs no key is caught and
named; a rewrite by whoever holds the signing key, or a rollback, is caught with the witness
and its checkpoints."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from common.hashing import canonical
from control import i18n
from recorder import merkle
from recorder.custody import CustodyLog, TreeHead
from recorder.keys import (
    MANIFEST_CONTEXT,
    PACKAGE_CONTEXT,
    ROTATION_CONTEXT,
    STH_CONTEXT,
    WITNESS_CONTEXT,
    load_or_create_signing_key,
    sign,
    sign_in_context,
)
from recorder.verify import verify_package, verify_recording
from recorder.witness import WitnessRefused, load_checkpoints
from tests.custody_helpers import Site, failures, lines, load, make_site, write_lines


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return make_site(tmp_path_factory.mktemp("custody") / "site")


@pytest.fixture
def site(golden: Site, tmp_path: Path) -> Site:
    return golden.copy(tmp_path / "site")


def test_the_untouched_site_verifies_with_witness_and_checkpoints(site: Site) -> None:
    checkpoints = load_checkpoints(site.base / "checkpoints")
    findings = verify_recording(
        site.recording,
        site.custody,
        site.public,
        site.kek(),
        checkpoints=checkpoints,
        witness=site.witness_public,
    )
    assert failures(findings) == []
    checks = {f.check for f in findings}
    assert {
        "recording.started",
        "recording.stopped",
        "recording.json",
        "witness",
        "signing keys",
    } <= checks
    assert any("consistent with the checkpoint" in f.detail for f in findings)
    findings = verify_package(site.package, site.public, witness=site.witness_public)
    assert failures(findings) == []


@pytest.mark.parametrize("kind", ["recording.started", "recording.stopped"])
def test_an_entry_removed_from_a_package_is_named(site: Site, kind: str) -> None:
    path = site.package / "custody" / "entries.jsonl"
    kept = [line for line in lines(path) if json.loads(line)["type"] != kind]
    assert len(kept) == len(lines(path)) - 1
    write_lines(path, kept)
    fails = failures(verify_package(site.package, site.public))
    assert "FAIL file custody/entries.jsonl: content differs from package.sig (altered)" in fails
    assert any(f.startswith(f"FAIL {kind}: log entry") and "missing" in f for f in fails), fails
    assert any(f"the {kind} entry proofs.json lists is missing" in f for f in fails), fails


def test_the_seal_head_cannot_be_swapped_for_the_export_head(site: Site) -> None:
    path = site.package / "custody" / "proofs.json"
    proofs = load(path)
    proofs["seal_tree_head"] = proofs["tree_head"]
    proofs["consistency"] = []
    path.write_bytes(canonical(proofs))
    fails = failures(verify_package(site.package, site.public))
    assert "FAIL file custody/proofs.json: content differs from package.sig (altered)" in fails
    assert any(
        f.startswith("FAIL seal: proofs.json's seal tree head is not the one in manifest.sig.json")
        for f in fails
    ), fails


def test_an_unsigned_deletion_does_not_excuse_missing_segments(site: Site) -> None:
    for seg in sorted(site.recording.glob("segments/*/*.seg")):
        seg.unlink()
    meta = load(site.recording / "recording.json")
    meta["state"] = "deleted"
    (site.recording / "recording.json").write_bytes(canonical(meta))
    log = site.custody / "entries.log"
    index = len(lines(log))
    forged = {
        "index": index,
        "type": "recording.deleted",
        "time": "2030-01-01T00:00:00.000Z",
        "actor": "supervisor:zhao",
        "case": "CASE-7",
        "room": "custody-room",
        "reason": "retention ended",
        "recording": site.recording_id,
        "segments_removed": 4,
    }
    write_lines(log, [*lines(log), canonical(forged)])
    fails = failures(verify_recording(site.recording, site.custody, site.public))
    assert any(
        f"log entry {index} says the media was deleted, but no signed tree head covers it" in f
        for f in fails
    ), fails
    assert any("is missing (removed)" in f for f in fails)
    assert any(f.startswith("FAIL recording.json: state is 'deleted'") for f in fails), fails


def test_a_real_deletion_is_signed_at_once_and_verifies(site: Site) -> None:
    from recorder.recording import Recorder

    custody = site.custody_log()
    try:
        recorder = Recorder(
            data_dir=site.base / "var",
            custody=custody,
            kek=site.kek(),
            signing_key=load_or_create_signing_key(site.keys / "custody-ed25519.pem"),
        )
        import datetime

        meta = load(site.recording / "recording.json")
        later = datetime.date.fromisoformat(meta["retain_until"]) + datetime.timedelta(days=1)
        # retention shortened (logged), then deleted once passed: both under signed heads
        recorder.set_retention(
            site.recording_id, datetime.date(2020, 1, 1), actor="sup", reason="court order 9"
        )
        entry = recorder.delete_media(site.recording_id, actor="sup", reason="expired", today=later)
        head = custody.latest_head()
        assert head is not None and head.tree_size == entry["index"] + 1
    finally:
        custody.close()
    findings = verify_recording(
        site.recording, site.custody, site.public, witness=site.witness_public
    )
    assert failures(findings) == []
    assert any("deleted under retention" in f.detail for f in findings)


@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_heads_log_removed_is_named_and_later_edits_are_caught(site: Site, how: str) -> None:
    heads = site.custody / "heads.log"
    if how == "deleted":
        heads.unlink()
    else:
        heads.write_bytes(b"")
    fails = failures(verify_recording(site.recording, site.custody, site.public))
    assert any(f"heads.log: {'missing' if how == 'deleted' else 'empty'}" in f for f in fails), (
        fails
    )
    assert any("is not in heads.log: signed heads were removed" in f for f in fails), fails
    # and an entry after the seal rewritten (the export's reason) is caught as well
    log = site.custody / "entries.log"
    items = lines(log)
    last = json.loads(items[-1])
    last["reason"] = "routine"
    items[-1] = canonical(last)
    write_lines(log, items)
    assert failures(verify_recording(site.recording, site.custody, site.public))


def test_a_rollback_is_caught_with_the_checkpoints(site: Site) -> None:
    # back to the head that sealed the recording: the export's entries and head are gone
    envelope = load(site.recording / "manifest.sig.json")
    size = envelope["tree_head"]["tree_size"]
    write_lines(site.custody / "entries.log", lines(site.custody / "entries.log")[:size])
    heads = [h for h in lines(site.custody / "heads.log") if json.loads(h)["tree_size"] <= size]
    write_lines(site.custody / "heads.log", heads)
    # the log alone cannot tell (documented): every head that is left still holds
    assert failures(verify_recording(site.recording, site.custody, site.public)) == []
    checkpoints = load_checkpoints(site.base / "checkpoints")
    fails = failures(
        verify_recording(site.recording, site.custody, site.public, checkpoints=checkpoints)
    )
    assert any("rolled back (entries removed from the end)" in f for f in fails), fails
    # the server's own witness refuses to countersign the rolled-back log
    custody = site.custody_log()
    try:
        with pytest.raises(WitnessRefused, match="rolled back or rewritten"):
            custody.sign_head()
    finally:
        custody.close()


def _resign(site: Site) -> None:
    """What someone holding the signing key (but not the witness key) can do: rewrite the
    reason of recording.started and sign every head and the envelope again."""
    key = load_or_create_signing_key(site.keys / "custody-ed25519.pem")
    log = site.custody / "entries.log"
    items = lines(log)
    first = json.loads(items[0])
    assert first["type"] == "recording.started"
    first["reason"] = "routine check"
    items[0] = canonical(first)
    write_lines(log, items)
    leaves = [merkle.leaf_hash(line) for line in items]

    def resigned(old: TreeHead) -> TreeHead:
        head = TreeHead(
            old.tree_size,
            old.timestamp_ms,
            merkle.root(leaves[: old.tree_size]).hex(),
            old.key_id,
            "",
        )
        return TreeHead(
            head.tree_size,
            head.timestamp_ms,
            head.root_hash,
            head.key_id,
            sign(key, head.signed_bytes()),
        )

    heads = [resigned(TreeHead.from_json(json.loads(h))) for h in lines(site.custody / "heads.log")]
    write_lines(site.custody / "heads.log", [canonical(h.to_json()) for h in heads])
    envelope = load(site.recording / "manifest.sig.json")
    envelope["tree_head"] = resigned(TreeHead.from_json(envelope["tree_head"])).to_json()
    (site.recording / "manifest.sig.json").write_bytes(canonical(envelope))


def test_a_rewrite_with_the_signing_key_is_caught_by_the_witness(site: Site) -> None:
    _resign(site)
    # with the signing key alone the rewrite is consistent (that is what the witness is for)
    assert failures(verify_recording(site.recording, site.custody, site.public)) == []
    fails = failures(
        verify_recording(site.recording, site.custody, site.public, witness=site.witness_public)
    )
    assert any("carries no witness countersignature" in f for f in fails), fails
    assert any("sealing head's witness countersignature: missing" in f for f in fails)
    checkpoints = load_checkpoints(site.base / "checkpoints")
    fails = failures(
        verify_recording(site.recording, site.custody, site.public, checkpoints=checkpoints)
    )
    assert any("are not those the checkpoint signed: history rewritten" in f for f in fails)
    custody = site.custody_log()
    try:
        with pytest.raises(WitnessRefused):
            custody.sign_head()
    finally:
        custody.close()


def test_key_ids_are_signed_and_checked(site: Site) -> None:
    heads = lines(site.custody / "heads.log")
    head = json.loads(heads[0])
    head["key_id"] = "0123456789abcdef"
    write_lines(site.custody / "heads.log", [canonical(head), *heads[1:]])
    fails = failures(verify_recording(site.recording, site.custody, site.public))
    assert any("names key 0123456789abcdef" in f for f in fails), fails

    other = site.copy(site.base.parent / "other")
    envelope = load(other.recording / "manifest.sig.json")
    envelope["signing_key_id"] = "fedcba9876543210"
    (other.recording / "manifest.sig.json").write_bytes(canonical(envelope))
    fails = failures(verify_recording(other.recording, other.custody, other.public))
    assert any("manifest.sig.json names signing key fedcba9876543210" in f for f in fails)
    package_sig = load(other.package / "package.sig")
    package_sig["key_id"] = "fedcba9876543210"
    (other.package / "package.sig").write_bytes(canonical(package_sig))
    fails = failures(verify_package(other.package, other.public))
    assert any(f.startswith("FAIL package signature") for f in fails)


@pytest.mark.parametrize("change", ["retain_until", "state", "key", "case"])
def test_recording_json_is_checked(site: Site, change: str) -> None:
    path = site.recording / "recording.json"
    meta = load(path)
    if change == "retain_until":
        meta["retain_until"] = "2020-01-01"
    elif change == "state":
        meta["state"] = "recording"
    elif change == "key":
        meta["key"]["wrapped_data_key"] = meta["key"]["wrapped_data_key"][::-1]
    else:
        meta["case"] = "CASE-8"
    path.write_bytes(canonical(meta))
    fails = failures(verify_recording(site.recording, site.custody, site.public))
    assert fails and all(f.startswith("FAIL recording.json") for f in fails), fails
    expected = {
        "retain_until": "changed outside the custody log",
        "state": "but the recording is sealed",
        "key": "neither the sealed one",
        "case": "the sealed manifest says",
    }
    assert expected[change] in fails[0]


@pytest.mark.parametrize("rel", ["custody/notes.txt", "media/extra.webm", "stray.bin"])
def test_stray_files_in_a_package_are_reported(site: Site, rel: str) -> None:
    (site.package / rel).write_bytes(b"slipped in")
    assert failures(verify_package(site.package, site.public)) == [
        f"FAIL file {rel}: not listed in package.json (added)"
    ]


def test_every_signed_object_has_its_own_context(site: Site) -> None:
    contexts = [STH_CONTEXT, MANIFEST_CONTEXT, PACKAGE_CONTEXT, ROTATION_CONTEXT, WITNESS_CONTEXT]
    assert len(set(contexts)) == len(contexts)
    assert all(c.endswith(b"\x00") and c.count(b"\x00") == 1 for c in contexts)
    # a package.sig signed under another context (here: a manifest's) does not verify
    from recorder.verify import package_sig_message

    key = load_or_create_signing_key(site.keys / "custody-ed25519.pem")
    sig = load(site.package / "package.sig")
    sig["signature"] = sign_in_context(
        key, MANIFEST_CONTEXT, package_sig_message(sig["key_id"], sig["covers"])
    )
    (site.package / "package.sig").write_bytes(canonical(sig))
    fails = failures(verify_package(site.package, site.public))
    assert any(f.startswith("FAIL package signature") for f in fails)
    # a tree head's signature is over its own context and its key ID
    head = TreeHead.from_json(json.loads(lines(site.custody / "heads.log")[0]))
    assert head.signed_bytes().startswith(STH_CONTEXT)
    assert head.signed_bytes().endswith(head.key_id.encode())


async def _cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "control.cli",
        "custody",
        "verify",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _chinese_first(out: str) -> None:
    """Every line of the report: Chinese, then `` / ``, then the same in English."""
    for line in out.strip().splitlines():
        halves = i18n.split(line)
        assert halves is not None, line
        zh, en = halves
        assert any("\u4e00" <= ch <= "\u9fff" for ch in zh.split("：")[0]), line
        assert en.isascii(), line


async def test_the_cli_needs_a_key_and_checks_checkpoints(site: Site) -> None:
    env = site.config_env()
    code, _, err = await _cli(str(site.recording), env=env)
    assert code == 2 and "--public-key" in err and "key id" in err
    code, out, _ = await _cli(str(site.package), env=env)
    assert code == 2
    public = str(site.keys / "custody-ed25519.pub.pem")
    witness = str(site.base / "witness" / "witness-ed25519.pub.pem")
    code, out, err = await _cli(
        str(site.recording),
        "--public-key",
        public,
        "--checkpoint",
        str(site.base / "checkpoints" / "latest.json"),
        "--witness-key",
        witness,
        env=env,
    )
    assert code == 0, out + err
    assert out.startswith("公钥：密钥编号 ") and "public key: key id " in out
    assert "0 项失败 / " in out and "0 failed" in out
    _chinese_first(out)
    code, out, err = await _cli(
        str(site.package), "--public-key", public, "--witness-key", witness, env=env
    )
    assert code == 0, out + err
    _chinese_first(out)
    # rolled back: the CLI with the published checkpoints says so
    size = load(site.recording / "manifest.sig.json")["tree_head"]["tree_size"]
    write_lines(site.custody / "entries.log", lines(site.custody / "entries.log")[:size])
    write_lines(
        site.custody / "heads.log",
        [h for h in lines(site.custody / "heads.log") if json.loads(h)["tree_size"] <= size],
    )
    code, out, _ = await _cli(
        str(site.recording),
        "--public-key",
        public,
        "--checkpoint",
        str(site.base / "checkpoints"),
        env=env,
    )
    assert code == 1 and "rolled back" in out


def test_custody_log_without_witness_still_writes_plain_heads(tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path / "k" / "custody-ed25519.pem")
    log = CustodyLog(tmp_path / "c", key)
    log.append("x", actor="a")
    head = log.sign_head()
    log.close()
    assert head.witness is None and head.verify(key.public_key())


# written to be published, so 0644 by design: the documents CA's root certificate and CRL
# (documents/ca.py), public keys; and the recording's empty owner lock
PUBLIC_FILES = frozenset({"owner.lock", "ca-root.pem", "crl.der"})


def test_files_are_0600_and_directories_0700(golden: Site) -> None:
    """What docs/custody.md promises, for everything the custody side writes."""
    wrong = []
    roots = [
        golden.keys,
        golden.custody,
        golden.recording,
        golden.package,
        golden.base / "witness",
        golden.base / "checkpoints",
    ]
    for root in roots:
        for path in [root, *root.rglob("*")]:
            if path.name in PUBLIC_FILES or path.name.endswith(".pub.pem"):
                continue  # recording.py's empty lock file; what is published (0644)
            mode = path.stat().st_mode & 0o777
            if mode != (0o700 if path.is_dir() else 0o600):
                wrong.append(f"{oct(mode)} {path.relative_to(golden.base)}")
    assert wrong == [], "\n".join(wrong)


def test_manifest_signatures_with_and_without_context(site: Site) -> None:
    from recorder.keys import sign_manifest

    key = load_or_create_signing_key(site.keys / "custody-ed25519.pem")
    path = site.recording / "manifest.sig.json"
    envelope = load(path)
    body = (site.recording / "manifest.json").read_bytes()
    from recorder.keys import sign

    findings = verify_recording(site.recording, site.custody, site.public)
    sealed = next(f for f in findings if f.check == "manifest signature")
    assert sealed.ok and "without a context" not in sealed.detail  # the recorder's own
    # a manifest sealed before manifests had a context string still verifies, and says so
    envelope["signature"] = sign(key, body)
    path.write_bytes(canonical(envelope))
    findings = verify_recording(site.recording, site.custody, site.public)
    legacy = next(f for f in findings if f.check == "manifest signature")
    assert legacy.ok and "without a context string" in legacy.detail
    envelope["signature"] = sign_manifest(key, body)
    path.write_bytes(canonical(envelope))
    findings = verify_recording(site.recording, site.custody, site.public)
    assert failures(findings) == []
    signed = next(f for f in findings if f.check == "manifest signature")
    assert "without a context" not in signed.detail
    # the same bytes signed under another object's context are not a manifest signature
    envelope["signature"] = sign_in_context(key, PACKAGE_CONTEXT, body)
    path.write_bytes(canonical(envelope))
    fails = failures(verify_recording(site.recording, site.custody, site.public))
    assert (
        "FAIL manifest signature: manifest.json is not what was signed (edited, or wrong "
        "key)" in fails
    )


def test_the_witness_follows_only_signed_rotations(site: Site, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    # someone with a key of their own (and the data directory) cannot get a head countersigned
    stranger = CustodyLog(site.custody, Ed25519PrivateKey.generate(), witness=site.witness())
    try:
        stranger.append("verification.verdict", actor="mallory")
        with pytest.raises(WitnessRefused, match="not by key"):
            stranger.sign_head()
    finally:
        stranger.close()


def test_the_witness_lives_outside_the_data_and_keys(tmp_path: Path) -> None:
    from control.config import ConfigError, load_config

    base = {"storage": {"data_dir": str(tmp_path / "var")}, "keys": {"dir": str(tmp_path / "k")}}
    config = load_config(None, environ={}, overrides=base)
    assert config.custody.witness == "key"
    assert config.custody.witness_path(config.keys_dir) == (tmp_path / "witness").resolve()
    assert config.custody.checkpoints_path(config.keys_dir) == (tmp_path / "checkpoints").resolve()
    for custody in (
        {"witness_dir": str(tmp_path / "var" / "w")},
        {"checkpoints_dir": str(tmp_path / "k" / "c")},
        {"witness": "tsa"},
        {"witness": "maybe"},
    ):
        with pytest.raises(ConfigError, match=r"custody\."):
            load_config(None, environ={}, overrides={**base, "custody": custody})
