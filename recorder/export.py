"""Export for court: a package that someone with only the public key can check, offline.

``export_recording`` writes (see ``docs/custody.md``):

* ``media/``: each track decrypted and reassembled, exactly the bytes that were hashed when
  they were written (no transcoding), playable as WebM/Matroska;
* ``composite.mp4``: every video side by side with its participant's name and a burnt-in clock
  (Beijing time and UTC), and the tracks' mixed audio, a single transcode made here (H.264 +
  AAC), for viewing;
* ``manifest.json`` and ``manifest.sig.json`` as sealed; ``public-key.pem``;
* ``custody/entries.jsonl``: the log entries of this recording and every signing-key rotation,
  byte for byte, and ``custody/proofs.json``: their indices and types, their inclusion proofs
  under a signed tree head taken after the export was logged, the tree head that sealed the
  recording (the one in ``manifest.sig.json``) and a consistency proof from it;
* ``package.json`` (the SHA-256 of every file outside ``custody/``) and ``package.sig`` (JSON:
  the SHA-256 of ``package.json``, ``custody/entries.jsonl`` and ``custody/proofs.json``, signed
  with the context ``remotecase-package-v1\\0``): together they cover every file;
* ``REPORT.txt``: what was checked at export and how to check it again.

The export itself is a custody event (``recording.exported``) naming the actor, the reason and
the hash of ``package.json``.
"""

from __future__ import annotations

import datetime
import fractions
import hashlib
import heapq
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np

from common.hashing import canonical, sha256_file

from .custody import ROTATION, CustodyLog
from .keys import PACKAGE_CONTEXT, KeyEncryptionKey, key_id, public_key_pem, sign_in_context
from .labels import LabelPainter
from .layout import GAP_DETAILS, decrypt_segment, gap_cause, load_json
from .verify import SIG_COVERS, package_sig_message, recording_data_key, verify_recording

TILE_W, TILE_H = 480, 360
FPS = 15
AUDIO_RATE = 48000


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    return (
        datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
        .replace(tzinfo=datetime.UTC)
        .timestamp()
    )


def _clock(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 100000} UTC"


BEIJING = datetime.timezone(datetime.timedelta(hours=8))


def _clock_label(seconds: float) -> str:
    """The clock burnt into the composite: Beijing time first (the reader's), then UTC (the
    time every record of the recording is in), to a tenth of a second."""
    here = datetime.datetime.fromtimestamp(seconds, BEIJING)
    utc = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return f"{here:%Y-%m-%d %H:%M:%S}.{here.microsecond // 100000} 北京时间  {utc:%H:%M:%S} UTC"


def decrypt_track(
    recording_dir: Path, manifest: dict[str, Any], track: dict[str, Any], data_key: bytes
) -> bytes:
    parts = []
    for seg in track["segments"]:
        stored = (
            recording_dir / "segments" / track["track_id"] / f"{seg['segment']:06d}.seg"
        ).read_bytes()
        plain = decrypt_segment(
            stored, data_key, manifest["recording_id"], track["track_id"], seg["segment"]
        )
        if hashlib.sha256(plain).hexdigest() != seg["sha256"]:
            raise ValueError(
                f"轨道 {track['track_id']} 第 {seg['segment']} 段：解密后的媒体与记录的哈希不符 / "
                f"track {track['track_id']} segment {seg['segment']}: "
                "decrypted media differs from its logged hash"
            )
        parts.append(plain)
    return b"".join(parts)


def _open(data: bytes) -> Any:
    return av.open(io.BytesIO(data))


def _decoded(data: bytes, kind: str, skipped: dict[int, int], index: int) -> Iterator[Any]:
    """Every frame that decodes; a frame that does not (or a file that does not open) is
    counted in ``skipped`` and left out, so one bad frame or track never stops an export."""
    try:
        container = _open(data)
    except av.error.FFmpegError:
        skipped[index] = skipped.get(index, 0) + 1
        return
    with container:
        stream = container.streams.video[0] if kind == "video" else container.streams.audio[0]
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                skipped[index] = skipped.get(index, 0) + 1
                continue
            for frame in frames:
                if frame.pts is not None:
                    yield float(frame.pts * stream.time_base), frame


def _video_frames(
    data: bytes, anchor: float, index: int, skipped: dict[int, int]
) -> Iterator[tuple[float, int, Any]]:
    for t, frame in _decoded(data, "video", skipped, index):
        yield anchor + t, index, frame


def _audio_frames(
    data: bytes, anchor: float, index: int, skipped: dict[int, int]
) -> Iterator[tuple[float, int, Any]]:
    resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
    for t, frame in _decoded(data, "audio", skipped, index):
        for out in resampler.resample(frame):
            yield anchor + t, index, out.to_ndarray().reshape(-1)


HEADER_H = 40  # the band above the tiles that holds the clock


def make_composite(
    path: Path,
    videos: list[tuple[str, float, bytes]],
    audios: list[tuple[float, bytes]],
    *,
    label_font: Path | None = None,
) -> dict[str, Any]:
    """Side-by-side video with each participant's name and a burnt-in clock; mixed audio.
    Streams through the tracks. The words are drawn with a Chinese TrueType font
    (:mod:`recorder.labels`; ``label_font`` instead of the standard paths when given)."""
    if not videos:
        return {"video_tracks": 0}
    painter = LabelPainter(label_font)
    columns = min(3, len(videos))
    rows = (len(videos) + columns - 1) // columns
    width, height = TILE_W * columns, TILE_H * rows + HEADER_H
    starts = [anchor for _, anchor, _ in videos] + [anchor for anchor, _ in audios]
    t0 = min(starts)
    container = av.open(str(path), "w", format="mp4")
    vstream = container.add_stream("libx264", rate=FPS)
    vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
    vstream.options = {"preset": "veryfast", "crf": "23"}
    astream = container.add_stream("aac", rate=AUDIO_RATE) if audios else None
    if astream is not None:
        astream.layout = "mono"
    latest: list[np.ndarray | None] = [None] * len(videos)
    labels = [label for label, _, _ in videos]
    # each name rendered once, shortened to its tile; pasted into every frame
    names = [painter.stamp(painter.fit(label, TILE_W - 16)) for label in labels]
    clock_y = max(0, (HEADER_H - painter.height) // 2)
    frames_out = 0

    def emit_until(t_limit: float) -> None:
        nonlocal frames_out
        while t0 + frames_out / FPS <= t_limit:
            canvas = np.zeros((height, width, 3), dtype=np.uint8)
            for i, image in enumerate(latest):
                x, y = (i % columns) * TILE_W, HEADER_H + (i // columns) * TILE_H
                if image is not None:
                    canvas[y : y + TILE_H, x : x + TILE_W] = image
                names[i].paste(canvas, x + 8, y + TILE_H - names[i].height - 6)
            moment = t0 + frames_out / FPS
            # without the Chinese font (or in a font too wide for one tile): UTC alone
            clock = painter.clock_stamp(_clock_label(moment)) if painter.font else None
            if clock is None or clock.width > width - 16:
                clock = painter.clock_stamp(_clock(moment))
            clock.paste(canvas, 8, clock_y)
            frame = av.VideoFrame.from_ndarray(canvas, format="rgb24")
            frame.pts = frames_out
            frame.time_base = fractions.Fraction(1, FPS)
            for packet in vstream.encode(frame):
                container.mux(packet)
            frames_out += 1

    skipped: dict[int, int] = {}
    merged = heapq.merge(
        *(_video_frames(data, anchor, i, skipped) for i, (_, anchor, data) in enumerate(videos)),
        key=lambda x: x[0],
    )
    end = t0
    for t, i, frame in merged:
        emit_until(t - 1e-6)
        latest[i] = frame.reformat(width=TILE_W, height=TILE_H, format="rgb24").to_ndarray()
        end = max(end, t)
    emit_until(end)
    for packet in vstream.encode(None):
        container.mux(packet)

    audio_samples = 0
    skipped_audio: dict[int, int] = {}
    if astream is not None:
        audio_samples = _mix_audio(container, astream, audios, t0, skipped_audio)
    container.close()
    undecodable = {labels[i]: n for i, n in skipped.items()}
    undecodable.update({f"audio {i + 1}": n for i, n in skipped_audio.items()})
    return {
        "video_tracks": len(videos),
        "frames": frames_out,
        "start": _clock(t0),
        "audio_samples": audio_samples,
        "undecodable_frames": undecodable,
        "label_font": Path(painter.font_file).name if painter.font_file else None,
        # for the report (not kept in package.json): why the labels are not in Chinese
        **({"label_note": painter.note} if painter.note else {}),
    }


def _mix_audio(
    container: Any,
    stream: Any,
    audios: list[tuple[float, bytes]],
    t0: float,
    skipped: dict[int, int],
) -> int:
    """Sum the tracks in one-second blocks, written once no later frame can touch them."""
    blocks: dict[int, np.ndarray] = {}
    written = 0
    next_block = 0

    def flush(until_block: int) -> None:
        nonlocal written, next_block
        while next_block < until_block:
            block = blocks.pop(next_block, np.zeros(AUDIO_RATE, dtype=np.int32))
            pcm = np.clip(block, -32768, 32767).astype(np.int16).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            frame.sample_rate = AUDIO_RATE
            frame.pts = written
            frame.time_base = fractions.Fraction(1, AUDIO_RATE)
            for packet in stream.encode(frame):
                container.mux(packet)
            written += pcm.shape[1]
            next_block += 1

    merged = heapq.merge(
        *(_audio_frames(data, anchor, i, skipped) for i, (anchor, data) in enumerate(audios)),
        key=lambda x: x[0],
    )
    last = 0
    for t, _, samples in merged:
        position = max(0, round((t - t0) * AUDIO_RATE))
        flush(max(0, position // AUDIO_RATE - 1))
        for offset in range(0, len(samples), AUDIO_RATE):
            chunk = samples[offset : offset + AUDIO_RATE].astype(np.int32)
            start = position + offset
            block, inner = divmod(start, AUDIO_RATE)
            first = min(len(chunk), AUDIO_RATE - inner)
            blocks.setdefault(block, np.zeros(AUDIO_RATE, dtype=np.int32))[
                inner : inner + first
            ] += chunk[:first]
            if first < len(chunk):
                blocks.setdefault(block + 1, np.zeros(AUDIO_RATE, dtype=np.int32))[
                    : len(chunk) - first
                ] += chunk[first:]
        last = max(last, position + len(samples))
    flush(-(-last // AUDIO_RATE))
    for packet in stream.encode(None):
        container.mux(packet)
    return written


def _not_recorded(
    manifest: dict[str, Any], composite: dict[str, Any]
) -> tuple[list[str], list[str]]:
    """What the recording does not hold, as the manifest says, and what did not decode: the
    report's lines in Chinese and in English (the manifest keeps its codes; they are put in
    words here)."""
    gaps = len(manifest.get("gaps", [])) + sum(
        1 for t in manifest.get("tracks", []) if t.get("failure")
    )
    zh = [f"录像中缺失或失败的片段：{gaps} 处（出自 manifest.json）："]
    en = ["What is not in this recording (from manifest.json):"]
    for track in manifest.get("tracks", []):
        failure = track.get("failure")
        if failure:
            zh.append(
                f"  轨道 {track['track_id']}：于 {failure.get('time')} 录制失败"
                f"（{failure.get('error')}），只录到该时刻"
            )
            en.append(
                f"  track {track['track_id']}: FAILED at {failure.get('time')} "
                f"({failure.get('error')}); recorded up to then"
            )
    for gap in manifest.get("gaps", []):
        cause = str(gap.get("cause"))
        detail = str(gap.get("detail") or "")
        words = GAP_DETAILS.get(detail)
        zh_detail = (words[0] if words else detail) if cause != "failure" else ""
        en_detail = (words[1] if words else detail) if cause != "failure" else ""
        zh.append(
            f"  轨道 {gap['track']}：{gap_cause(cause)}，自 {gap.get('start_time', '?')} 起 "
            f"{gap['duration']} 秒（{gap['frames']} 个已转发的帧未录入，"
            f"{gap['packets_missing']} 个数据包从未收到）" + (f"；{zh_detail}" if zh_detail else "")
        )
        en.append(
            f"  track {gap['track']}: {gap_cause(cause, 'en')} [{cause}] from "
            f"{gap.get('start_time', '?')} for {gap['duration']} s ({gap['frames']} forwarded "
            f"frames not recorded, {gap['packets_missing']} packets never received)"
            + (f"; {en_detail}" if en_detail else "")
        )
    for label, n in (composite.get("undecodable_frames") or {}).items():
        zh.append(f"  composite.mp4：{label} 有 {n} 帧无法解码，已略去")
        en.append(f"  composite.mp4: {n} frame(s) of {label} did not decode; left out")
    if len(zh) == 1:
        zh.append("  无：没有缺口，也没有失败")
        en.append("  nothing: no gaps, no failures")
    return [*zh, ""], [*en, ""]


def _fsync_tree(root: Path) -> None:
    """Make the package private (files 0600, directories 0700: it holds decrypted media) and
    durable: every file, then every directory (not the whole machine)."""
    for path in [*sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True), root]:
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:40] or "x"


def export_recording(
    *,
    recording_dir: Path,
    custody: CustodyLog,
    kek: KeyEncryptionKey,
    signing_key: Any,
    out: Path,
    actor: str,
    reason: str,
    label_font: Path | None = None,
) -> dict[str, Any]:
    """Write the package into ``out`` (which must not exist) and log the export. The
    composite's labels use ``label_font`` (a .ttf or .ttc) instead of the standard paths'
    Chinese font when given (:mod:`recorder.labels`)."""
    custody.refresh()
    findings = verify_recording(recording_dir, custody.directory, custody.public_key, kek)
    failed = [str(f) for f in findings if not f.ok]
    if failed:
        raise ValueError(
            "录像核验未通过，不予导出："
            + "；".join(f.zh_line() for f in findings if not f.ok)
            + " / the recording does not verify; not exporting: "
            + "; ".join(failed)
        )
    manifest_bytes = (recording_dir / "manifest.json").read_bytes()
    manifest = json.loads(manifest_bytes)
    envelope = load_json(recording_dir / "manifest.sig.json")
    data_key = recording_data_key(kek, recording_dir, manifest)

    out.mkdir(parents=True, exist_ok=False, mode=0o700)
    (out / "media").mkdir(mode=0o700)
    (out / "custody").mkdir(mode=0o700)
    media_files: dict[str, str] = {}
    videos: list[tuple[str, float, bytes]] = []
    audios: list[tuple[float, bytes]] = []
    participants = {p["id"]: p.get("name") or p["id"] for p in manifest.get("participants", [])}
    for n, track in enumerate(manifest["tracks"]):
        if not track["segments"]:
            continue
        data = decrypt_track(recording_dir, manifest, track, data_key)
        extension = "webm" if track.get("container") == "webm" else "mkv"
        name = (
            f"media/{n:02d}-{_safe(track['participant'])}-{track['kind']}-"
            f"{_safe(track['track_id'])}.{extension}"
        )
        (out / name).write_bytes(data)
        media_files[track["track_id"]] = name
        anchor = (
            _parse_time(track.get("first_packet_time"))
            or _parse_time(manifest.get("started_at"))
            or 0.0
        )
        if track["kind"] == "video":
            videos.append(
                (participants.get(track["participant"], track["participant"]), anchor, data)
            )
        else:
            audios.append((anchor, data))
    composite = (
        make_composite(out / "composite.mp4", videos, audios, label_font=label_font)
        if videos
        else {}
    )
    missing_zh, missing_en = _not_recorded(manifest, composite)
    label_zh, label_en = composite.pop("label_note", None) or ("", "")

    (out / "manifest.json").write_bytes(manifest_bytes)
    (out / "manifest.sig.json").write_bytes(canonical(envelope))
    (out / "public-key.pem").write_bytes(public_key_pem(custody.public_key))
    # Chinese first (the reader is a Chinese court's), then the same in English
    exported_at = datetime.datetime.now(datetime.UTC).isoformat()
    report_lines = [
        f"remotecase 录像导出包：录像 {manifest['recording_id']}",
        f"案件 {manifest.get('case') or '-'}，房间 {manifest['room']}，状态 {manifest['status']}",
        f"录制时间 {manifest['started_at']} 至 {manifest['stopped_at']}（UTC）",
        f"导出时间 {exported_at}，导出人 {actor}，理由：{reason}",
        f"监管日志签名密钥编号 {key_id(custody.public_key)}（public-key.pem）；"
        f"录像封存时的密钥编号 {envelope['tree_head'].get('key_id')}",
        f"导出前已对照服务器的监管日志完成 {len(findings)} 项检查：",
        *[f"  {f.zh_line()}" for f in findings],
        "文件：media/ 下每个文件是一条轨道的原始录制字节，未作改动；composite.mp4 为导出时合成的"
        "观看副本（所有画面并排，附各参与人姓名及时钟：北京时间与 UTC；音频混合，经转码），"
        "由 package.sig 覆盖。",
        *([f"注意：{label_zh}"] if label_zh else []),
        *missing_zh,
        "仅凭本导出包（及公布的公钥）核验：",
        "  remotecase custody verify 本目录 --public-key 公布的公钥.pem \\",
        "      --witness-key 公布的见证公钥.pem",
        "custody/proofs.json 中见证方对两个树头的联署证明二者位于见证方所见的同一历史上；"
        "package.sig 覆盖 package.json 与 custody/。每个媒体文件由其分段依次拼接而成，每段的 "
        "SHA-256 记载于 manifest.json 及一条监管日志条目中，其包含证明见 custody/proofs.json"
        "（RFC 9162）。全部检查见 docs/custody.md。",
        "",
        "---- English ----",
        f"remotecase export of recording {manifest['recording_id']}",
        f"case {manifest.get('case') or '-'}, room {manifest['room']}, status {manifest['status']}",
        f"recorded {manifest['started_at']} to {manifest['stopped_at']}",
        f"exported {exported_at} by {actor}: {reason}",
        f"custody signing key id {key_id(custody.public_key)} (public-key.pem); the recording "
        f"was sealed under key {envelope['tree_head'].get('key_id')}",
        "",
        "Checked before export, against the server's custody log:",
        *[f"  {f}" for f in findings],
        "",
        "Files:",
        *[
            f"  {name}: track {tid}, the recorded bytes unchanged"
            for tid, name in media_files.items()
        ],
        "  composite.mp4: all video side by side with each participant's name and a clock "
        "(Beijing time and UTC), mixed audio; a viewing copy made at export (transcoded), "
        "covered by package.sig",
        "",
        *([f"Note: {label_en}", ""] if label_en else []),
        *missing_en,
        "To check this package with nothing but it (and the published public key):",
        "  remotecase custody verify THIS_DIRECTORY --public-key PUBLISHED_KEY.pem \\",
        "      --witness-key PUBLISHED_WITNESS_KEY.pem",
        "(the witness's countersignature on both tree heads in custody/proofs.json shows they lie",
        "on the one history the witness saw; package.sig covers package.json and custody/).",
        "Each media file is the concatenation of its segments; every segment's SHA-256 is in",
        "manifest.json and in a custody log entry whose inclusion under the signed tree head",
        "custody/proofs.json proves (RFC 9162). docs/custody.md describes every check.",
    ]
    (out / "REPORT.txt").write_text("\n".join(report_lines) + "\n", encoding="utf-8")

    files = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if path.is_file() and not rel.startswith("custody/"):
            files[rel] = sha256_file(path)
    package = {
        "format": "remotecase-export/1",
        "recording_id": manifest["recording_id"],
        "files": files,
        "media": media_files,
        "composite": composite,
    }
    package_bytes = canonical(package)
    (out / "package.json").write_bytes(package_bytes)

    exported = custody.append(
        "recording.exported",
        actor=actor,
        reason=reason,
        case=manifest.get("case", ""),
        room=manifest["room"],
        recording=manifest["recording_id"],
        package_sha256=hashlib.sha256(package_bytes).hexdigest(),
    )
    head = custody.sign_head()
    indices, kinds = [], {}
    for i in range(head.tree_size):
        entry = json.loads(custody.entry_line(i))
        if entry.get("recording") == manifest["recording_id"] or entry.get("type") == ROTATION:
            indices.append(i)
            kinds[str(i)] = entry.get("type")
    with open(out / "custody" / "entries.jsonl", "wb") as fh:
        for i in indices:
            fh.write(custody.entry_line(i) + b"\n")
    seal_head = envelope["tree_head"]
    proofs = {
        "tree_head": head.to_json(),
        "entries": kinds,
        "inclusion": {str(i): custody.inclusion_proof(i, head.tree_size) for i in indices},
        "seal_tree_head": seal_head,
        "consistency": custody.consistency_proof(int(seal_head["tree_size"]), head.tree_size),
        "export_index": exported["index"],
    }
    (out / "custody" / "proofs.json").write_bytes(canonical(proofs))
    covers = {rel: sha256_file(out / rel) for rel in SIG_COVERS}
    signer = key_id(signing_key.public_key())
    (out / "package.sig").write_bytes(
        canonical(
            {
                "format": "remotecase-package-sig/1",
                "key_id": signer,
                "covers": covers,
                "signature": sign_in_context(
                    signing_key, PACKAGE_CONTEXT, package_sig_message(signer, covers)
                ),
            }
        )
        + b"\n"
    )
    _fsync_tree(out)
    return {
        "package": str(out),
        "files": files,
        "export_index": exported["index"],
        "tree_size": head.tree_size,
    }
