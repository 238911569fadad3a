"""The recorder under loss, reordering, retransmission, an outage, a mute and a failure.

How: a real VP8 (libvpx through aiortc's encoder) or Opus stream, packetized exactly as aiortc
sends it, enters a real :class:`~mediaserver.forwarding.ForwardedUpTrack` in a real SFU room,
and reaches the real recorder through its :class:`~mediaserver.local.LocalSubscriber`. Between
the encoder and the up-track the test plays the network: it drops, delays and reorders packets,
and answers a NACK by delivering a lost packet again later (what the SFU's receiver does with
the publisher's RTX packet: unwrapped, it reaches the up-track as the original packet). A
keyframe request from the recorder reaches this publisher as a PLI and makes the encoder's next
frame a keyframe. Why not a real impaired call: this kernel has no netem, and here every
packet's fate is known, so the test can assert that every frame the SFU forwarded is either in
the recording, decodable, or accounted for in a gap with a cause. A real call with
retransmissions through the whole stack is in ``test_recorder_sessions.py``.
"""

from __future__ import annotations

import asyncio
import fractions
import io
import itertools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import pytest
from aiortc.codecs import depayload
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtp import RtpPacket
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.peer import tone_frame
from mediaserver.forwarding import ForwardedUpTrack
from mediaserver.options import MediaOptions
from mediaserver.protocols import CloseReason, Packet, TrackInfo
from mediaserver.room import Sfu
from recorder.custody import CustodyLog
from recorder.export import export_recording, make_composite
from recorder.keys import KeyEncryptionKey
from recorder.layout import GAP_CAUSES, decrypt_segment, gap_cause, note_zh
from recorder.media import EncodedFrame, TrackMuxer, codec_parameters
from recorder.recording import Recorder
from recorder.recovery import NOTE
from recorder.verify import verify_package, verify_recording
from tests.samples import pattern

ROOM = "case-9-0a1b2c3d"
VIDEO = TrackInfo("TR_video", "party-1", "video", "video/VP8", 90000, None, ())
AUDIO = TrackInfo("TR_audio", "party-1", "audio", "audio/opus", 48000, 2, ())
H264 = TrackInfo(
    "TR_h264",
    "party-1",
    "video",
    "video/H264",
    90000,
    None,
    (("packetization-mode", "1"), ("profile-level-id", "42e01f")),
)

# A plan gives each packet (frame index, packet index in frame, size in bytes) its delivery
# delays in seconds: [] lost for good, [d] delivered after d, [d1, d2] delivered twice.
Plan = Callable[[int, int, int], list[float]]


class Source:
    """The publisher side of the up-track: counts keyframe requests (PLI)."""

    def __init__(self) -> None:
        self.sink: Any = None
        self.keyframe_wanted = False
        self.plis = 0

    def attach_sink(self, sink: Any) -> None:
        self.sink = sink

    def detach_sink(self) -> None:
        self.sink = None

    async def send_pli(self, media_ssrc: int) -> None:
        self.plis += 1
        self.keyframe_wanted = True


@dataclass
class Witness:
    """A second down-track of the same up-track: sees every packet the SFU forwarded."""

    packets: list[Packet] = field(default_factory=list)
    down_id: str = "witness"

    def write(self, packet: Packet) -> None:
        self.packets.append(packet)

    def resume(self) -> None:
        pass  # it keeps every packet anyway

    def close(self, reason: CloseReason) -> None:
        pass


class Encoder:
    def __init__(self, info: TrackInfo) -> None:
        self.info = info
        self.video = info.kind == "video"
        self._encoder: Any = OpusEncoder()
        if info.mime_type == "video/H264":
            self._encoder = H264Encoder()  # FU-A fragments, SPS and PPS in a STAP-A
        elif self.video:
            self._encoder = Vp8Encoder()
            self._encoder.target_bitrate = 900_000  # several packets per frame
        self.seq = 40000  # wraps during the test

    def encode(self, i: int, keyframe: bool) -> list[RtpPacket]:
        frame: Any
        if self.video:
            frame = av.VideoFrame.from_ndarray(pattern(i), format="rgb24")
            frame.pts, frame.time_base = i * 6000, fractions.Fraction(1, 90000)
        else:
            frame = tone_frame(i)
            frame.time_base = fractions.Fraction(1, 48000)
        payloads, timestamp = self._encoder.encode(frame, keyframe)
        out = []
        for j, payload in enumerate(payloads):
            out.append(
                RtpPacket(
                    payload_type=96,
                    marker=int(self.video and j == len(payloads) - 1),
                    sequence_number=self.seq,
                    timestamp=timestamp,
                    ssrc=1234,
                    payload=payload,
                )
            )
            self.seq = (self.seq + 1) & 0xFFFF
        return out


@dataclass
class Result:
    manifest: dict[str, Any]
    track: dict[str, Any]
    witness: Witness
    source: Source
    media: bytes
    events: list[tuple[str, dict[str, Any]]]
    directory: Path
    custody_dir: Path
    public: Any
    kek: KeyEncryptionKey
    package: Path | None = None


async def run(
    tmp_path: Path,
    info: TrackInfo,
    plan: Plan,
    *,
    frames: int = 150,
    interval: float = 0.02,
    mute: tuple[int, int] | None = None,
    reorder_wait: float = 0.3,
    export: bool = False,
    tamper: Callable[[Recorder], None] | None = None,
) -> Result:
    loop = asyncio.get_running_loop()
    sfu = Sfu(MediaOptions(pli_min_interval=0.1))
    room = sfu.room(ROOM)
    source = Source()
    up = ForwardedUpTrack(info, source, pli_min_interval=0.1, log_extra={})
    witness = Witness()
    up.add_down_track(witness)
    room.add_server_track(up)
    key = Ed25519PrivateKey.generate()
    custody = CustodyLog(tmp_path / "custody", key)
    kek = KeyEncryptionKey.load_or_create(tmp_path / "kek.key")
    recorder = Recorder(
        data_dir=tmp_path,
        custody=custody,
        kek=kek,
        signing_key=key,
        segment_seconds=1.0,
        reorder_wait=reorder_wait,
    )
    events: list[tuple[str, dict[str, Any]]] = []
    recorder.listeners.append(lambda room_id, event, **f: events.append((event, f)))
    encoder = Encoder(info)
    handles: list[asyncio.TimerHandle] = []
    try:
        recording = await recorder.start(room, actor="officer", reason="test", case="9")
        if tamper is not None:
            tamper(recorder)
        for i in range(frames):
            if mute is not None and i == mute[0]:
                up.set_muted(True)
            if mute is not None and i == mute[1]:
                up.set_muted(False)
            wanted, source.keyframe_wanted = source.keyframe_wanted or i == 0, False
            packets = await asyncio.to_thread(encoder.encode, i, wanted)
            for j, packet in enumerate(packets):
                for delay in plan(i, j, len(packet.payload)):
                    if delay <= 0:
                        up.on_rtp(packet)
                    else:
                        handles.append(loop.call_later(delay, up.on_rtp, packet))
            await asyncio.sleep(interval)
        await asyncio.sleep(0.4)  # the last retransmissions land
        manifest = await recorder.stop(ROOM, actor="officer", reason="done")
        package = None
        if export:
            package = tmp_path / "package"
            await asyncio.to_thread(
                export_recording,
                recording_dir=recording.directory,
                custody=custody,
                kek=kek,
                signing_key=key,
                out=package,
                actor="supervisor",
                reason="court request",
            )
    finally:
        for handle in handles:
            handle.cancel()
        await sfu.close()
        custody.close()
    (track,) = manifest["tracks"]
    data_key = kek.unwrap(manifest["key"]["wrapped_data_key"], manifest["key"]["kek_fingerprint"])
    media = b"".join(
        decrypt_segment(
            (
                recording.directory / "segments" / track["track_id"] / f"{seg['segment']:06d}.seg"
            ).read_bytes(),
            data_key,
            manifest["recording_id"],
            track["track_id"],
            seg["segment"],
        )
        for seg in track["segments"]
    )
    return Result(
        manifest,
        track,
        witness,
        source,
        media,
        events,
        recording.directory,
        tmp_path / "custody",
        key.public_key(),
        kek,
        package,
    )


def forwarded_frames(result: Result) -> int:
    """Frames of which the SFU forwarded a packet to the recorder: from its first frame on."""
    first = result.track["first_rtp_timestamp"]
    packets = result.witness.packets
    start = next(i for i, p in enumerate(packets) if p.timestamp == first and p.keyframe)
    return len({p.timestamp for p in packets[start:]})


def decode(result: Result) -> tuple[int, int, list[int]]:
    """(packets in the file, frames decoded without error, packet timestamps) of the track."""
    container: Any
    with av.open(io.BytesIO(result.media)) as container:
        stream = container.streams[0]
        stamps, decoded = [], 0
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            stamps.append(int(packet.pts or 0))
            decoded += len(packet.decode())  # raises on a frame that does not decode
    return len(stamps), decoded, stamps


def check_accounting(result: Result) -> list[dict[str, Any]]:
    """Nothing forwarded is lost: every frame is in the file or in a gap with a cause."""
    track, manifest = result.track, result.manifest
    gaps = [g for g in manifest["gaps"] if g["track"] == track["track_id"]]
    assert all(g["cause"] in ("loss", "outage", "muted", "left", "failure") for g in gaps)
    assert track["forwarded_frames"] == forwarded_frames(result)
    assert track["forwarded_frames"] == (
        track["recorded_frames"]
        + sum(g["frames"] for g in gaps)
        + track["late_frames"]
        + track["cut_frames"]
    )
    count, decoded, stamps = decode(result)
    assert count == track["recorded_frames"] == sum(s["frames"] for s in track["segments"])
    assert all(b > a for a, b in itertools.pairwise(stamps)), "timestamps go back"
    if track["kind"] == "video":
        assert decoded == count, "every recorded video frame decodes"
    for gap in gaps:
        assert gap["duration"] >= 0 and gap["end_timestamp"] >= gap["start_timestamp"]
        if track["kind"] == "video":  # the frames it lost lie inside it (15 fps: 6000 ticks)
            assert gap["end_timestamp"] - gap["start_timestamp"] >= (gap["frames"] - 1) * 6000
    findings = verify_recording(result.directory, result.custody_dir, result.public, result.kek)
    assert all(f.ok for f in findings), [str(f) for f in findings if not f.ok]
    return gaps


def reordering(seed: int) -> Plan:
    rng = random.Random(seed)
    return lambda i, j, n: [rng.uniform(0, 0.08)]  # up to 80 ms of jitter: arrival order scrambled


def loss(seed: int, rate: float, answered: float) -> Plan:
    """``rate`` of packets lost; a share ``answered`` of them retransmitted 60-200 ms later."""
    rng = random.Random(seed)

    def plan(i: int, j: int, n: int) -> list[float]:
        if i == 0 or rng.random() >= rate:
            return [0.0]
        return [rng.uniform(0.06, 0.2)] if rng.random() < answered else []

    return plan


def bottleneck(bits_per_second: float, queue_seconds: float, interval: float) -> Plan:
    """A rate-limited uplink: a queue served at ``bits_per_second`` that drops a packet when
    it holds more than ``queue_seconds``; two of three dropped packets are retransmitted (a
    NACK answered 50 ms later) through the same queue."""
    state = {"free_at": 0.0}

    def plan(i: int, j: int, n: int) -> list[float]:
        now = i * interval
        start = max(now, state["free_at"])
        if start - now > queue_seconds:
            if (i + j) % 3 == 0:
                return []
            start = max(start, now + 0.05)
        state["free_at"] = start + n * 8 / bits_per_second
        return [state["free_at"] - now]

    return plan


@pytest.mark.parametrize("info", [VIDEO, AUDIO, H264], ids=["vp8", "opus", "h264"])
async def test_reordered_packets_lose_nothing(tmp_path: Path, info: TrackInfo) -> None:
    # up to 80 ms of jitter against a 1 s reordering wait: a loaded machine's loop stall
    # (the final CI run: one 0.3 s wait ran out before the late packet's turn) is not a loss
    result = await run(tmp_path, info, reordering(1), reorder_wait=1.0)
    gaps = check_accounting(result)
    assert gaps == []
    track = result.track
    assert track["late_frames"] == 0 and track["cut_frames"] <= 1
    assert track["recorded_frames"] == track["forwarded_frames"] - track["cut_frames"] > 100
    assert result.manifest["status"] == "complete"


@pytest.mark.parametrize("info", [VIDEO, AUDIO, H264], ids=["vp8", "opus", "h264"])
async def test_five_percent_loss_retransmitted_loses_nothing(
    tmp_path: Path, info: TrackInfo
) -> None:
    result = await run(tmp_path, info, loss(2, 0.05, answered=1.0))
    gaps = check_accounting(result)
    assert gaps == [], gaps
    track = result.track
    assert track["recorded_frames"] == track["forwarded_frames"] - track["cut_frames"]
    assert track["packets_missing"] == 0


async def test_unanswered_loss_is_gaps_and_video_recovers_at_keyframes(tmp_path: Path) -> None:
    # 5% loss, a third of it never retransmitted
    result = await run(tmp_path, VIDEO, loss(3, 0.05, answered=0.66), frames=200, export=True)
    gaps = check_accounting(result)
    track = result.track
    assert gaps and {g["cause"] for g in gaps} == {"loss"}
    assert track["packets_missing"] == sum(g["packets_missing"] for g in gaps) > 0
    # the recorder asked for keyframes and the recording went on after every gap
    assert track["keyframes_requested"] > 0 and result.source.plis > 0
    last = track["segments"][-1]["last_timestamp"]
    assert all(g["end_timestamp"] <= last for g in gaps)
    assert track["recorded_frames"] > track["forwarded_frames"] // 2
    assert result.manifest["status"] == "complete"
    # the export carries every recorded frame and says what the recording does not hold
    assert result.package is not None
    assert all(f.ok for f in verify_package(result.package, result.public))
    report = (result.package / "REPORT.txt").read_text()
    assert report.count(f"track {track['track_id']}: packet loss [loss] from") == len(gaps)
    assert report.count(f"轨道 {track['track_id']}：网络丢包，自") == len(gaps)
    with av.open(str(result.package / "composite.mp4")) as composite:
        assert sum(1 for _ in composite.decode(video=0)) > 100


async def test_h264_unanswered_loss_recovers_at_idr_frames(tmp_path: Path) -> None:
    result = await run(tmp_path, H264, loss(3, 0.05, answered=0.66))
    gaps = check_accounting(result)  # which decodes every recorded frame
    assert gaps and result.track["keyframes_requested"] > 0
    assert result.track["container"] == "matroska" and result.track["recorded_frames"] > 30


async def test_audio_loss_unanswered_is_gaps_of_the_lost_packets(tmp_path: Path) -> None:
    result = await run(tmp_path, AUDIO, loss(4, 0.05, answered=0.0), frames=200)
    gaps = check_accounting(result)
    track = result.track
    assert gaps and all(g["cause"] == "loss" and g["frames"] == 0 for g in gaps)
    assert track["packets_missing"] == sum(g["packets_missing"] for g in gaps) > 0
    # audio needs no keyframe: everything that arrived is recorded
    assert track["recorded_frames"] == track["forwarded_frames"] - track["cut_frames"]
    assert all(abs(g["duration"] - 0.02 * g["packets_missing"]) < 0.001 for g in gaps)


async def test_outage_is_one_gap_with_its_duration(tmp_path: Path) -> None:
    # frames 60-104 (3 s of media at 15 fps) never reach the SFU
    result = await run(tmp_path, VIDEO, lambda i, j, n: [] if 60 <= i < 105 else [0.0], frames=160)
    gaps = check_accounting(result)
    outages = [g for g in gaps if g["cause"] == "outage"]
    assert len(outages) == 1 and len(gaps) == 1
    # the outage, then the deltas until a keyframe: the SFU asks for one as soon as media is
    # back with packets missing, the recorder itself once its wait runs out (the test's clock
    # runs 3.3 times faster than the media's, so that wait is a second of media)
    assert 3.0 <= outages[0]["duration"] <= 4.5, outages
    assert result.source.plis >= 1
    assert result.track["recorded_frames"] > 90


async def test_a_slow_uplink_keeps_every_frame_that_got_through(tmp_path: Path) -> None:
    # the stream needs about 1.3 Mbit/s of the test's clock; the link carries 1.0
    result = await run(tmp_path, VIDEO, bottleneck(1_000_000, 0.15, 0.02), frames=150)
    gaps = check_accounting(result)
    track = result.track
    assert gaps and {g["cause"] for g in gaps} <= {"loss", "outage"}
    assert track["keyframes_requested"] > 0
    assert track["recorded_frames"] > 10  # it recovers at keyframes, not 18 frames in all


async def test_mute_is_a_muted_gap(tmp_path: Path) -> None:
    result = await run(tmp_path, VIDEO, lambda i, j, n: [0.0], frames=160, mute=(50, 90))
    gaps = check_accounting(result)
    assert [g["cause"] for g in gaps] == ["muted"]
    assert 2.5 <= gaps[0]["duration"] <= 3.3


async def test_late_frames_never_reach_the_muxer(tmp_path: Path) -> None:
    # every 20th audio packet arrives 0.6 s late: past the wait, older than what was muxed
    result = await run(
        tmp_path,
        AUDIO,
        lambda i, j, n: [0.6] if i % 20 == 10 else [0.0],
        frames=150,
        reorder_wait=0.15,
    )
    gaps = check_accounting(result)
    track = result.track
    assert track["late_frames"] >= 5
    assert len(gaps) == track["late_frames"]
    assert result.manifest["status"] == "complete"


async def test_duplicates_are_ignored(tmp_path: Path) -> None:
    result = await run(tmp_path, VIDEO, lambda i, j, n: [0.0, 0.03] if j == 0 else [0.0])
    assert check_accounting(result) == []
    assert result.track["packets_late"] > 100


async def test_a_muxer_failure_marks_the_recording_incomplete_and_says_what_was_lost(
    tmp_path: Path,
) -> None:
    from recorder import media

    original = media.TrackMuxer.add

    def failing(self: media.TrackMuxer, frame: media.EncodedFrame) -> None:
        if self.frames == 40:  # as av.error.ArgumentError did from mux() in the field
            raise av.error.ArgumentError(22, "Invalid argument")
        original(self, frame)

    def tamper(_: Recorder) -> None:
        media.TrackMuxer.add = failing  # type: ignore[method-assign]

    try:
        result = await run(
            tmp_path, VIDEO, lambda i, j, n: [0.0], frames=120, tamper=tamper, export=True
        )
    finally:
        media.TrackMuxer.add = original  # type: ignore[method-assign]
    manifest, track = result.manifest, result.track
    assert manifest["status"] == "incomplete"
    assert "failed after 40 frames" in manifest["note"]
    assert track["failure"]["error"].startswith("ArgumentError")
    gaps = check_accounting(result)
    (failure,) = [g for g in gaps if g["cause"] == "failure"]
    assert failure["frames"] == track["forwarded_frames"] - 40 - track["cut_frames"]
    assert [kind for kind, _ in result.events].count("recording_failure") == 1
    alert = next(f for kind, f in result.events if kind == "recording_failure")
    assert alert["track"] == track["track_id"] and alert["recorded_frames"] == 40
    findings = verify_recording(result.directory, result.custody_dir, result.public, result.kek)
    assert any(f.check == "completeness" and "incomplete" in f.detail for f in findings)
    # the export goes ahead with what was recorded, and says what failed
    assert result.package is not None
    report = (result.package / "REPORT.txt").read_text()
    assert f"track {track['track_id']}: FAILED at" in report
    assert f"track {track['track_id']}: recording failure [failure] from" in report
    assert f"轨道 {track['track_id']}：录制失败，自" in report  # the Chinese half in words too
    zh = report[: report.index("---- English ----")]
    assert f"轨道 {track['track_id']}（party-1 video）录制 40 帧后失败" in zh  # the note too


def test_composite_leaves_out_frames_that_do_not_decode(tmp_path: Path) -> None:
    """A recording made before this recorder (delta frames kept after a loss) still exports."""
    muxer = TrackMuxer(VIDEO)
    encoder = Encoder(VIDEO)
    data = b""
    for i in range(30):
        packets = encoder.encode(i, i == 0)
        frame = b"".join(depayload(codec_parameters(VIDEO), p.payload) for p in packets)
        if i == 10:
            frame = frame[:3] + bytes(len(frame) - 3)  # garbled: does not decode
        muxer.add(EncodedFrame(i * 6000, frame, i == 0, len(packets)))
        data += muxer.take()
    data += muxer.close()
    info = make_composite(tmp_path / "c.mp4", [("party", 0.0, data)], [])
    assert info["frames"] >= 25
    assert sum(info["undecodable_frames"].values()) >= 1


def test_every_gap_cause_and_note_has_chinese_words() -> None:
    """What the report and the Chinese findings show for the manifest's codes and notes."""
    causes = set(re.findall(r'cause\s*=\s*"(\w+)"', _recorder_source()))
    causes |= set(re.findall(r'"cause": "(\w+)"', _recorder_source()))
    assert causes and causes <= set(GAP_CAUSES), causes - set(GAP_CAUSES)
    assert all(re.search(r"[\u4e00-\u9fff]", gap_cause(c)) for c in causes)
    for note in (NOTE, NOTE + "; set aside, never logged: TR_a/000003.seg"):
        assert not re.search(r"[a-z]{3}", note_zh(note).replace("seg", "")), note_zh(note)


def _recorder_source() -> str:
    root = Path(__file__).resolve().parent.parent / "recorder"
    return "".join(p.read_text(encoding="utf-8") for p in sorted(root.glob("*.py")))
