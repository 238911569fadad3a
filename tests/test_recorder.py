"""Recording a real call: bit-exact, encrypted, hashed, sealed, checkable with the public key."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from control.appkeys import CUSTODY, RECORDER
from recorder.keys import KeyEncryptionKey, KeyProblem, load_public_key
from recorder.layout import decrypt_segment
from recorder.verify import verify_package, verify_recording
from tests.conftest import Server, join, make_config, start_server, wait_until


def _keys(tmp_path: Path) -> tuple[Any, KeyEncryptionKey]:
    public = load_public_key((tmp_path / "keys" / "custody-ed25519.pub.pem").read_bytes())
    kek = KeyEncryptionKey.load_or_create(tmp_path / "keys" / "recording-kek.key")
    return public, kek


def _decrypt_track(
    recording_dir: Path, manifest: dict[str, Any], track: dict[str, Any], kek: KeyEncryptionKey
) -> bytes:
    key = kek.unwrap(manifest["key"]["wrapped_data_key"], manifest["key"]["kek_fingerprint"])
    out = b""
    for seg in track["segments"]:
        stored = (
            recording_dir / "segments" / track["track_id"] / f"{seg['segment']:06d}.seg"
        ).read_bytes()
        out += decrypt_segment(
            stored, key, manifest["recording_id"], track["track_id"], seg["segment"]
        )
    return out


def _demux(data: bytes) -> tuple[list[bytes], int]:
    """(packets, decoded frame count) of a recorded track."""
    container = av.open(io.BytesIO(data), mode="r")
    stream = container.streams[0]
    packets = [bytes(p) for p in container.demux(stream) if p.size]
    container.close()
    container = av.open(io.BytesIO(data), mode="r")
    decoded = sum(1 for _ in container.decode(container.streams[0]))
    container.close()
    return packets, decoded


async def _record_call(
    server: Server, clients: list[PeerClient], seconds: float
) -> tuple[dict[str, Any], Path, list[PeerClient]]:
    names = ["officer", "driver", "insurer"]
    parties = [await join(server, clients, "mediation", n, record_payloads=True) for n in names]
    for i, party in enumerate(parties[:2]):
        await party.publish(
            PatternVideoTrack(fps=15), ToneAudioTrack(300 + 100 * i), video_codec="video/VP8"
        )
    room = server.sfu.rooms["mediation"]
    await wait_until(lambda: len(room.up_tracks()) == 4, what="four tracks published")
    recorder = server.app[RECORDER]
    recording = await recorder.start(room, actor="officer", reason="inquiry", case="CASE-1")
    await asyncio.sleep(seconds / 2)
    # a late publisher joins the recording mid-way
    await parties[2].publish(PatternVideoTrack(fps=15))
    await asyncio.sleep(seconds / 2)
    manifest = await recorder.stop("mediation", actor="officer", reason="inquiry finished")
    return manifest, recording.directory, parties


# The server, the manifest, the recording's directory and the parties of a five-second call.
Recorded = tuple[Server, dict[str, Any], Path, list[PeerClient]]


@pytest.fixture
async def recorded(tmp_path: Path) -> AsyncIterator[Recorded]:
    server = await start_server(make_config(tmp_path, recording={"segment_seconds": 1.0}))
    clients: list[PeerClient] = []
    try:
        manifest, directory, parties = await _record_call(server, clients, 5.0)
        yield server, manifest, directory, parties
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()


async def test_call_is_recorded_bit_exact_and_verifies(recorded: Recorded, tmp_path: Path) -> None:
    server, manifest, directory, parties = recorded
    public, kek = _keys(tmp_path)
    custody_dir = tmp_path / "var" / "custody"
    assert manifest["status"] == "complete"
    assert {p["id"] for p in manifest["participants"]} == {"officer", "driver", "insurer"}
    assert len(manifest["tracks"]) == 5  # 2 x (video + audio) + the late video

    for track in manifest["tracks"]:
        assert track["dropped_frames"] == 0
        assert len(track["segments"]) >= 2
        data = _decrypt_track(directory, manifest, track, kek)
        packets, decoded = _demux(data)
        assert len(packets) == track["frames"] > 0
        if track["kind"] == "video":
            assert decoded == len(packets), "every recorded video frame decodes"
        # every frame the publisher sent from the recording's first frame on is there
        publisher = next(
            p
            for p in parties
            if p.joined is not None and p.joined["participant"]["id"] == track["participant"]
        )
        assert publisher.publisher_pc is not None
        ssrc = next(
            t.sender._ssrc
            for t in publisher.publisher_pc.getTransceivers()
            if t.kind == track["kind"]
        )
        sent = publisher.sent_timestamps[ssrc]
        start = sent.index(track["first_rtp_timestamp"])
        frames_sent: list[int] = []
        for ts in sent[start:]:
            if not frames_sent or frames_sent[-1] != ts:
                frames_sent.append(ts)
        recorded_span = track["segments"][-1]["last_timestamp"]
        in_span = [
            ts
            for ts in frames_sent
            if (ts - track["first_rtp_timestamp"]) & 0xFFFFFFFF <= recorded_span
        ]
        assert len(in_span) == track["frames"], "zero loss between first and last frame"

    # the video payloads are the publisher's own bytes: compare one frame's data
    findings = verify_recording(directory, custody_dir, public)
    assert all(f.ok for f in findings), [str(f) for f in findings]
    findings = verify_recording(directory, custody_dir, public, kek)
    assert all(f.ok for f in findings), [str(f) for f in findings]
    assert any("decrypting at its position" in f.detail for f in findings)

    custody = server.app[CUSTODY]
    types = [e["type"] for e in custody.entries()]
    assert types[0] == "recording.started" and types[-2:] == [
        "recording.stopped",
        "recording.sealed",
    ]
    assert types.count("segment.written") == sum(len(t["segments"]) for t in manifest["tracks"])
    # the custody log is what the manifest says
    assert manifest["custody"]["started_index"] == 0


def _copy(tmp_path: Path, directory: Path, name: str) -> tuple[Path, Path]:
    base = tmp_path / name
    shutil.copytree(directory, base / "recording")
    shutil.copytree(tmp_path / "var" / "custody", base / "custody")
    return base / "recording", base / "custody"


def _failures(findings: list[Any]) -> list[str]:
    return [str(f) for f in findings if not f.ok]


async def test_every_tampering_is_detected_and_named(recorded: Recorded, tmp_path: Path) -> None:
    _, manifest, directory, _ = recorded
    public, _ = _keys(tmp_path)
    video = next(t for t in manifest["tracks"] if t["kind"] == "video")
    track_id = video["track_id"]

    # a flipped byte in a stored segment
    rec, cus = _copy(tmp_path, directory, "flip")
    seg = rec / "segments" / track_id / "000001.seg"
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0x01
    seg.write_bytes(bytes(data))
    fails = _failures(verify_recording(rec, cus, public))
    assert fails == [
        f"FAIL track {track_id} segment 1: stored bytes of segments/{track_id}/"
        "000001.seg differ from what was logged when written (altered or swapped)"
    ]

    # a removed segment
    rec, cus = _copy(tmp_path, directory, "removed")
    (rec / "segments" / track_id / "000000.seg").unlink()
    fails = _failures(verify_recording(rec, cus, public))
    assert len(fails) == 1 and f"track {track_id} segment 0" in fails[0] and "missing" in fails[0]

    # two segments swapped on disk
    rec, cus = _copy(tmp_path, directory, "swapped")
    a, b = (rec / "segments" / track_id / "000000.seg", rec / "segments" / track_id / "000001.seg")
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes)
    b.write_bytes(a_bytes)
    fails = _failures(verify_recording(rec, cus, public))
    assert len(fails) == 2 and all("altered or swapped" in f for f in fails)

    # an edited manifest (a segment dropped from the list)
    rec, cus = _copy(tmp_path, directory, "manifest")
    edited = json.loads((rec / "manifest.json").read_bytes())
    edited["tracks"][0]["segments"].pop()
    (rec / "manifest.json").write_text(json.dumps(edited))
    fails = _failures(verify_recording(rec, cus, public))
    assert any(f.startswith("FAIL manifest signature") for f in fails)
    assert any("not in the manifest" in f for f in fails)

    # a truncated custody log
    rec, cus = _copy(tmp_path, directory, "truncated")
    lines = (cus / "entries.log").read_bytes().split(b"\n")
    (cus / "entries.log").write_bytes(b"\n".join(lines[:5]) + b"\n")
    fails = _failures(verify_recording(rec, cus, public))
    assert any("truncated" in f for f in fails)

    # an edited log entry (a segment hash rewritten to match a forged file)
    rec, cus = _copy(tmp_path, directory, "edited-log")
    lines = (cus / "entries.log").read_bytes().split(b"\n")
    entry = json.loads(lines[1])
    entry["reason"] = "nothing to see"
    lines[1] = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
    (cus / "entries.log").write_bytes(b"\n".join(lines))
    fails = _failures(verify_recording(rec, cus, public))
    assert any("entries do not match the signed root" in f for f in fails)

    # a forked log: a second history signed with the same key
    rec, cus = _copy(tmp_path, directory, "fork")
    from recorder.custody import CustodyLog
    from recorder.keys import load_or_create_signing_key

    key = load_or_create_signing_key(tmp_path / "keys" / "custody-ed25519.pem")
    other = CustodyLog(tmp_path / "fork-other", key)
    other.append("recording.started", actor="mallory", recording="fake")
    forged = other.sign_head()
    other.close()
    heads = cus / "heads.log"
    heads.write_bytes(heads.read_bytes() + json.dumps(forged.to_json()).encode() + b"\n")
    fails = _failures(verify_recording(rec, cus, public))
    assert any("do not match the signed root" in f or "tree shrank" in f for f in fails)

    # the wrong public key
    rec, cus = _copy(tmp_path, directory, "wrong-key")
    stranger = Ed25519PrivateKey.generate().public_key()
    fails = _failures(verify_recording(rec, cus, stranger))
    assert any("signature does not verify" in f for f in fails)
    assert any(f.startswith("FAIL manifest signature") for f in fails)


async def test_wrong_key_encryption_key_gives_a_clear_error(
    recorded: Recorded, tmp_path: Path
) -> None:
    _, manifest, directory, _ = recorded
    public, _ = _keys(tmp_path)
    wrong = KeyEncryptionKey(bytes(32))
    with pytest.raises(KeyProblem, match="wrong key-encryption key"):
        wrong.unwrap(manifest["key"]["wrapped_data_key"], manifest["key"]["kek_fingerprint"])
    findings = verify_recording(directory, tmp_path / "var" / "custody", public, wrong)
    assert any(
        not f.ok and f.check == "data key" and "wrong key-encryption key" in f.detail
        for f in findings
    )


async def test_export_package_verifies_offline_and_names_any_change(
    recorded: Recorded, tmp_path: Path
) -> None:
    _, manifest, _directory, _ = recorded
    out = tmp_path / "package"
    env = {
        **os.environ,
        "REMOTECASE_STORAGE__DATA_DIR": str(tmp_path / "var"),
        "REMOTECASE_KEYS__DIR": str(tmp_path / "keys"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "control.cli",
        "custody",
        "export",
        manifest["recording_id"],
        "--out",
        str(out),
        "--actor",
        "supervisor-zhao",
        "--reason",
        "court request 17",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    assert "exported to" in stdout.decode()

    # the command-line verifier agrees, with only the package and the public key
    verify = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "control.cli",
        "custody",
        "verify",
        str(out),
        "--public-key",
        str(tmp_path / "keys" / "custody-ed25519.pub.pem"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, _ = await verify.communicate()
    assert verify.returncode == 0, stdout.decode()

    # the in-process checks read, decode and re-verify the package many times: a thread's
    # work, not the event loop's (the blocking check counts a test's own steps too)
    await asyncio.to_thread(_check_package, out, manifest, tmp_path)


def _check_package(out: Path, manifest: dict[str, Any], tmp_path: Path) -> None:
    public, _ = _keys(tmp_path)
    findings = verify_package(out, public)
    assert all(f.ok for f in findings), [str(f) for f in findings]
    assert {f.check for f in findings} >= {
        "package signature",
        "consistency",
        "seal",
        "export",
        "media",
        "manifest signature",
        "custody entries",
    }

    # the media files are the recorded tracks, decodable, frame for frame
    listing = json.loads((out / "package.json").read_bytes())
    for track in manifest["tracks"]:
        packets, _decoded = _demux((out / listing["media"][track["track_id"]]).read_bytes())
        assert len(packets) == track["frames"]
    # the composite plays: all videos side by side, with audio
    with av.open(str(out / "composite.mp4")) as composite:
        video = composite.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == (3 * 480, 360 + 40)
        assert composite.streams.audio
        frames = sum(1 for _ in composite.decode(video=0))
    assert frames >= 4 * 15  # about 5 s at 15 fps
    report = (out / "REPORT.txt").read_text(encoding="utf-8")
    assert "court request 17" in report
    # Chinese first, then the same in English
    assert report.startswith("remotecase 录像导出包") and "理由：court request 17" in report
    assert report.index("---- English ----") < report.index("remotecase export of recording")
    chinese = report[: report.index("---- English ----")]
    assert "  通过 封存：日志条目 " in chinese and "FAIL" not in chinese  # the checks, in Chinese

    def tampered(name: str) -> Path:
        copy = tmp_path / f"pkg-{name}"
        shutil.copytree(out, copy)
        return copy

    # a flipped byte in a media file is located to its segment
    copy = tampered("media")
    video = next(t for t in manifest["tracks"] if t["kind"] == "video")
    media = copy / listing["media"][video["track_id"]]
    data = bytearray(media.read_bytes())
    position = video["segments"][0]["bytes"] + 10  # inside segment 1
    data[position] ^= 0x80
    media.write_bytes(bytes(data))
    fails = _failures(verify_package(copy, public))
    assert (
        f"FAIL file {listing['media'][video['track_id']]}: content differs from package.json"
        " (altered)" in fails
    )
    assert any(f"track {video['track_id']} segment 1" in f for f in fails)

    # a flipped byte in the composite
    copy = tampered("composite")
    composite_path = copy / "composite.mp4"
    data = bytearray(composite_path.read_bytes())
    data[-100] ^= 0x01
    composite_path.write_bytes(bytes(data))
    assert _failures(verify_package(copy, public)) == [
        "FAIL file composite.mp4: content differs from package.json (altered)"
    ]

    # an edited manifest, an edited log entry, a rewritten consistency proof
    copy = tampered("manifest")
    edited = json.loads((copy / "manifest.json").read_bytes())
    edited["stopped_by"] = "nobody"
    (copy / "manifest.json").write_text(json.dumps(edited))
    fails = _failures(verify_package(copy, public))
    assert any(f.startswith("FAIL manifest signature") for f in fails)
    assert any(f.startswith("FAIL seal") for f in fails)

    copy = tampered("entries")
    lines = (copy / "custody" / "entries.jsonl").read_bytes().split(b"\n")
    lines[0] = lines[0].replace(b'"reason":"inquiry"', b'"reason":"routine"')
    (copy / "custody" / "entries.jsonl").write_bytes(b"\n".join(lines))
    fails = _failures(verify_package(copy, public))
    assert any("not included under the signed tree head" in f for f in fails)

    copy = tampered("consistency")
    proofs = json.loads((copy / "custody" / "proofs.json").read_bytes())
    proofs["consistency"] = proofs["consistency"][::-1] or ["00" * 32]
    (copy / "custody" / "proofs.json").write_text(json.dumps(proofs))
    fails = _failures(verify_package(copy, public))
    assert any(f.startswith("FAIL consistency") for f in fails)

    # a file slipped in, and the wrong key
    copy = tampered("added")
    (copy / "media" / "extra.webm").write_bytes(b"not evidence")
    assert _failures(verify_package(copy, public)) == [
        "FAIL file media/extra.webm: not listed in package.json (added)"
    ]
    stranger = Ed25519PrivateKey.generate().public_key()
    fails = _failures(verify_package(out, stranger))
    assert any(f.startswith("FAIL package signature") for f in fails)

    # any single-byte change anywhere in the package is caught
    copy = tmp_path / "anywhere"
    shutil.copytree(out, copy)
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        original = path.read_bytes()
        for position in {0, len(original) // 3, len(original) // 2, len(original) - 2}:
            data = bytearray(original)
            data[position] ^= 0x04
            (copy / rel).write_bytes(bytes(data))
            fails = _failures(verify_package(copy, public))
            assert fails, f"a flipped byte at {position} of {rel} went unnoticed"
        (copy / rel).write_bytes(original)
    assert _failures(verify_package(copy, public)) == []


async def test_h264_is_recorded_in_matroska_without_transcoding(tmp_path: Path) -> None:
    server = await start_server(make_config(tmp_path, recording={"segment_seconds": 1.0}))
    clients: list[PeerClient] = []
    try:
        party = await join(server, clients, "h264-room", "driver", record_payloads=True)
        await party.publish(PatternVideoTrack(fps=15), video_codec="video/H264")
        room = server.sfu.rooms["h264-room"]
        await wait_until(lambda: len(room.up_tracks()) == 1, what="track published")
        recorder = server.app[RECORDER]
        recording = await recorder.start(room, actor="officer", reason="h264")
        await asyncio.sleep(3)
        manifest = await recorder.stop("h264-room", actor="officer", reason="done")
        (track,) = manifest["tracks"]
        assert track["codec"].lower() == "video/h264" and track["container"] == "matroska"
        public, kek = _keys(tmp_path)
        data = _decrypt_track(recording.directory, manifest, track, kek)
        packets, decoded = _demux(data)
        assert len(packets) == track["frames"] > 20
        assert decoded == len(packets)
        findings = verify_recording(recording.directory, tmp_path / "var" / "custody", public, kek)
        assert all(f.ok for f in findings), [str(f) for f in findings]
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()


async def test_stop_is_idempotent_and_leaves_nothing_running(
    server: Server, clients: list[PeerClient]
) -> None:
    party = await join(server, clients, "twice", "driver")
    await party.publish(ToneAudioTrack(440))
    room = server.sfu.rooms["twice"]
    await wait_until(lambda: len(room.up_tracks()) == 1, what="track published")
    recorder = server.app[RECORDER]
    recording = await recorder.start(room, actor="officer", reason="inquiry")
    await wait_until(lambda: recorder.dump()["pumps"] == 1, what="the track recorded")
    # two stops at once (an officer's and the room's closing), and one more afterwards
    first, second = await asyncio.gather(
        recording.stop(actor="officer", reason="done"),
        recording.stop(actor="server", reason="room closed"),
    )
    third = await recording.stop(actor="server", reason="shutdown")
    assert first == second == third
    assert first["stopped_by"] == "officer"
    mine = [
        e["type"]
        for e in server.app[CUSTODY].entries()
        if e.get("recording") == recording.recording_id
    ]
    assert mine.count("recording.stopped") == mine.count("recording.sealed") == 1
    assert recording.dump() == {"tasks": 0, "pumps": 0, "subscribers": 0}
    # still listed as active (stopped behind the recorder's back): closing the server stops
    # it once more, which returns at once, and the fixture finds nothing left running


def test_sender_reports_are_kept_every_30_s_and_at_every_clock_jump() -> None:
    """A publisher reports its NTP/RTP mapping about once a second; a track keeps the first,
    one per 30 s on the same line, and every report off that line by more than 10 ms (its clock
    was set or restarted), so recording.json no longer grows by a pair per track and second."""
    from recorder.pump import keep_sender_report

    ntp0, rate = 3_900_000_000 << 32, 90000

    def report(second: float, rtp_offset: float = 0.0) -> tuple[int, int]:
        rtp = int((second + rtp_offset) * rate) & 0xFFFFFFFF
        return ntp0 + int(second * 2**32), (0xFFFF0000 + rtp) & 0xFFFFFFFF  # RTP wraps

    kept = [report(0)]
    reports = [report(s) for s in range(1, 121)]
    reports += [report(s, rtp_offset=0.5) for s in range(121, 125)]  # the clock jumped
    for r in reports:
        if keep_sender_report(kept[-1], r, rate):
            kept.append(r)
    seconds = [round((n - ntp0) / 2**32) for n, _ in kept]
    assert seconds == [0, 30, 60, 90, 120, 121]
    # 5 ms of drift in a second is on the line; a step back in NTP time is kept
    assert not keep_sender_report(report(0), report(1, rtp_offset=0.005), rate)
    assert keep_sender_report(report(10), report(9), rate)
    assert not keep_sender_report(report(3), report(3), rate)
