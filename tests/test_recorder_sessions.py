"""Real calls recorded: a case session is one recording through a late joiner, a mute, parties
leaving and the room emptying and filling again; three parties on clean links lose nothing.

Real aiortc peers over 127.0.0.1 through the real server (NACKs and retransmissions, PLIs,
sender reports all real). One test impairs a publisher's uplink inside its own process, between
aiortc's RTP sender and SRTP (this kernel has no netem): 5% of first transmissions are lost and
packets are delayed by up to 40 ms (so reordered); the SFU's NACKs are answered by aiortc's RTX
as on a real network. Packet-exact loss, outage and failure cases are in
``test_recorder_loss.py``.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import av
import pytest
from aiortc.rtp import RtpPacket, is_rtcp

from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from control.appkeys import RECORDER
from recorder.keys import KeyEncryptionKey, load_public_key
from recorder.layout import decrypt_segment
from recorder.recording import Recording
from recorder.verify import verify_recording
from tests.conftest import Server, join, make_config, start_server, wait_until

ROOM = "case-7-0a1b2c3d"


@pytest.fixture
async def recording_server(tmp_path: Path) -> Any:
    server = await start_server(make_config(tmp_path, recording={"segment_seconds": 1.0}))
    clients: list[PeerClient] = []
    try:
        yield server, clients
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()


def _media(
    directory: Path, manifest: dict[str, Any], track: dict[str, Any], kek: KeyEncryptionKey
) -> bytes:
    key = kek.unwrap(manifest["key"]["wrapped_data_key"], manifest["key"]["kek_fingerprint"])
    return b"".join(
        decrypt_segment(
            (directory / "segments" / track["track_id"] / f"{seg['segment']:06d}.seg").read_bytes(),
            key,
            manifest["recording_id"],
            track["track_id"],
            seg["segment"],
        )
        for seg in track["segments"]
    )


def check_tracks(tmp_path: Path, directory: Path, manifest: dict[str, Any]) -> None:
    """Every track: its counts add up, its file decodes, its timestamps only go forward."""
    kek = KeyEncryptionKey.load_or_create(tmp_path / "keys" / "recording-kek.key")
    for track in manifest["tracks"]:
        gaps = [g for g in manifest["gaps"] if g["track"] == track["track_id"]]
        assert track["failure"] is None
        assert track["forwarded_frames"] == (
            track["frames"]
            + sum(g["frames"] for g in gaps)
            + track["late_frames"]
            + track["cut_frames"]
        ), track
        container: Any
        with av.open(io.BytesIO(_media(directory, manifest, track, kek))) as container:
            stream = container.streams[0]
            stamps: list[int] = []
            decoded = 0
            for packet in container.demux(stream):
                if packet.size:
                    stamps.append(int(packet.pts or 0))
                    decoded += len(packet.decode())
        assert len(stamps) == track["frames"] > 0
        assert all(b > a for a, b in itertools.pairwise(stamps))
        if track["kind"] == "video":
            assert decoded == len(stamps)
    public = load_public_key((tmp_path / "keys" / "custody-ed25519.pub.pem").read_bytes())
    findings = verify_recording(directory, tmp_path / "var" / "custody", public, kek)
    assert all(f.ok for f in findings), [str(f) for f in findings if not f.ok]


async def _publish(
    server: Server, clients: list[PeerClient], participant: str, tone: int
) -> PeerClient:
    client = await join(server, clients, ROOM, participant, record_payloads=True)
    await client.publish(PatternVideoTrack(fps=15), ToneAudioTrack(tone), video_codec="video/VP8")
    return client


async def test_a_session_is_one_recording_through_leaving_rejoining_and_muting(
    recording_server: Any, tmp_path: Path
) -> None:
    server, clients = recording_server
    recorder = server.app[RECORDER]
    first = await _publish(server, clients, "party-1", 300)

    def tracks(n: int) -> bool:
        recording = recorder.active.get(ROOM)
        return recording is not None and recording.attached and len(recording._tracks) == n

    await wait_until(lambda: tracks(2), what="the session's recording of two tracks")
    recording: Recording = recorder.active[ROOM]
    await asyncio.sleep(1.5)
    late = await _publish(server, clients, "party-2", 500)  # a late joiner
    await wait_until(lambda: tracks(4), what="the late joiner recorded")
    await asyncio.sleep(1.5)

    room = server.sfu.rooms[ROOM]
    video = next(
        up
        for up in room.up_tracks()
        if up.info.participant_id == "party-1" and up.info.kind == "video"
    )
    room.participants["party-1"].set_muted(video.info.track_id, True)  # the officer's mute
    await asyncio.sleep(2.0)
    room.participants["party-1"].set_muted(video.info.track_id, False)
    await asyncio.sleep(2.0)

    await late.leave()
    await asyncio.sleep(0.5)
    await first.leave()
    await wait_until(lambda: ROOM not in server.sfu.rooms, what="the empty room closed")
    assert recorder.active[ROOM] is recording and not recording.attached
    await asyncio.sleep(1.0)

    await _publish(server, clients, "party-1", 300)  # back: the room opens again
    await wait_until(lambda: tracks(6), what="the second part recorded")
    assert recorder.active[ROOM] is recording
    await asyncio.sleep(2.0)
    manifest = await recorder.stop(ROOM, actor="officer", reason="session ended")

    assert len(list((tmp_path / "var" / "recordings").iterdir())) == 1
    assert manifest["status"] == "complete" and manifest["case"] == "7"
    assert [p["part"] for p in manifest["parts"]] == [1, 2]
    assert manifest["parts"][0]["end_reason"] == "room_empty"
    people = {p["id"]: p for p in manifest["participants"]}
    assert set(people) == {"party-1", "party-2"}
    assert len(people["party-1"]["presence"]) == 2 and len(people["party-2"]["presence"]) == 1
    assert sorted(t["part"] for t in manifest["tracks"]) == [1, 1, 1, 1, 2, 2]
    check_tracks(tmp_path, recording.directory, manifest)

    gaps = manifest["gaps"]
    muted = [g for g in gaps if g["cause"] == "muted"]
    assert [g["track"] for g in muted] == [video.info.track_id], gaps
    assert 1.5 <= muted[0]["duration"] <= 3.5, muted
    left = {g["track"]: g for g in gaps if g["cause"] == "left"}
    part_one = {t["track_id"] for t in manifest["tracks"] if t["part"] == 1}
    assert set(left) == part_one
    for track in manifest["tracks"]:
        if track["part"] == 1 and track["participant"] == "party-1":
            assert left[track["track_id"]]["detail"] == "returned"
            assert 1.0 <= left[track["track_id"]]["duration"] <= 6.0
    # nothing but the mute and the leaving on loopback (no unrecovered loss expected)
    assert {g["cause"] for g in gaps} <= {"muted", "left", "loss"}


async def test_three_parties_on_clean_links_record_every_frame(
    recording_server: Any, tmp_path: Path
) -> None:
    """Where av.error.ArgumentError from mux() once cut tracks to 4-6 frames."""
    server, clients = recording_server
    recorder = server.app[RECORDER]
    parties = {
        participant: await _publish(server, clients, participant, 300 + 100 * n)
        for n, participant in enumerate(["party-1", "party-2", "party-3"])
    }
    await wait_until(
        lambda: ROOM in recorder.active and len(recorder.active[ROOM]._tracks) == 6,
        what="six tracks recorded",
    )
    recording = recorder.active[ROOM]
    await asyncio.sleep(5.0)
    manifest = await recorder.stop(ROOM, actor="officer", reason="done")
    assert manifest["status"] == "complete"
    check_tracks(tmp_path, recording.directory, manifest)
    for track in manifest["tracks"]:
        # every frame the publisher sent between the first and the last recorded one is in
        # the recording, unless a gap says it is not
        publisher = parties[track["participant"]]
        assert publisher.publisher_pc is not None
        ssrc = next(
            t.sender._ssrc
            for t in publisher.publisher_pc.getTransceivers()
            if t.kind == track["kind"]
        )
        sent = list(dict.fromkeys(publisher.sent_timestamps[ssrc]))
        first = track["first_rtp_timestamp"]
        span = track["segments"][-1]["last_timestamp"]
        in_span = [ts for ts in sent if (ts - first) & 0xFFFFFFFF <= span]
        gaps = [g for g in manifest["gaps"] if g["track"] == track["track_id"]]
        if not gaps:
            assert track["frames"] == len(in_span), track
        else:
            assert track["frames"] < len(in_span)
        assert track["frames"] > 10  # not cut to a few frames by a muxer error


class Uplink:
    """Loss and jitter on a publisher's uplink, before SRTP: what a lossy network does to it."""

    def __init__(self, client: PeerClient, *, loss: float, jitter: float, seed: int) -> None:
        assert client.publisher_pc is not None
        self._rng = random.Random(seed)
        self._loss, self._jitter = loss, jitter
        self._media = PeerClient._media_pts(client.publisher_pc)
        self._tasks: set[asyncio.Task[None]] = set()
        self.produced: dict[int, list[int]] = defaultdict(list)  # SSRC -> each packet's timestamp
        self.lost: dict[int, int] = defaultdict(int)
        self.retransmitted = 0
        dtls = client.publisher_pc.getTransceivers()[0].sender.transport  # bundled: one for all
        self._inner = dtls._send_rtp
        dtls._send_rtp = self._send  # type: ignore[method-assign]

    async def _send(self, data: bytes) -> None:
        if not is_rtcp(data):
            packet = RtpPacket.parse(data)
            if packet.payload_type in self._media:
                self.produced[packet.ssrc].append(packet.timestamp)
                if self._rng.random() < self._loss:
                    self.lost[packet.ssrc] += 1
                    return
            else:
                self.retransmitted += 1
            delay = self._rng.uniform(0, self._jitter)
            task = asyncio.get_running_loop().create_task(self._later(delay, data))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        await self._inner(data)

    async def _later(self, delay: float, data: bytes) -> None:
        await asyncio.sleep(delay)
        try:
            await self._inner(data)
        except ConnectionError:
            pass

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def test_a_real_call_with_loss_and_jitter_keeps_what_was_forwarded(
    recording_server: Any, tmp_path: Path
) -> None:
    server, clients = recording_server
    recorder = server.app[RECORDER]
    lossy = await _publish(server, clients, "party-1", 300)
    uplink = Uplink(lossy, loss=0.05, jitter=0.04, seed=5)
    await _publish(server, clients, "party-2", 500)
    try:
        await wait_until(
            lambda: ROOM in recorder.active and len(recorder.active[ROOM]._tracks) == 4,
            what="four tracks",
        )
        recording = recorder.active[ROOM]
        await asyncio.sleep(6.0)
        manifest = await recorder.stop(ROOM, actor="officer", reason="done")
    finally:
        await uplink.close()
    assert manifest["status"] == "complete"
    check_tracks(tmp_path, recording.directory, manifest)
    assert lossy.publisher_pc is not None
    ssrcs = {t.kind: t.sender._ssrc for t in lossy.publisher_pc.getTransceivers()}
    assert uplink.lost[ssrcs["video"]] > 0 and uplink.retransmitted > 0  # NACK, RTX: real
    for track in manifest["tracks"]:
        if track["participant"] != "party-1":
            continue
        gaps = [g for g in manifest["gaps"] if g["track"] == track["track_id"]]
        assert {g["cause"] for g in gaps} <= {"loss"}
        first, span = track["first_rtp_timestamp"], track["segments"][-1]["last_timestamp"]
        produced = [
            ts
            for ts in dict.fromkeys(uplink.produced[ssrcs[track["kind"]]])
            if (ts - first) & 0xFFFFFFFF <= span
        ]
        if track["kind"] == "audio":
            # no retransmission for audio: each lost packet is a lost frame, and a gap says so
            assert track["frames"] == len(produced) - track["packets_missing"]
            assert track["packets_missing"] == sum(g["packets_missing"] for g in gaps) > 0
        elif track["packets_missing"] == 0:
            # every lost video packet came back in time: every frame is in the recording
            assert gaps == [] and track["frames"] == len(produced)
