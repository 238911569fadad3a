"""Keyframe sampling (mediaserver/local.py): a verifier watch at an interval of a few seconds
decodes one keyframe per sample, asked of the publisher, and nothing between samples; a
publisher that sends no keyframe gives ``no_picture`` verdicts, not a hang; an education
session's viewers are sampled at ``education.sample_interval``.

Real aiortc peers over 127.0.0.1 and the real face model, as in tests/test_verifier.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import MediaStreamTrack

from bench.peer import EncodedLoopVideoTrack, ImageVideoTrack, PeerClient, encode_vp8_loop
from control.appkeys import CUSTODY, VERIFIER
from mediaserver.local import KEYFRAME_SAMPLING_FROM, LocalSubscriber
from tests.conftest import (
    Api,
    Server,
    case_with_party,
    leftovers,
    make_config,
    officer_login,
    party_link,
    start_server,
    wait_until,
)
from tests.test_verifier import ASTRONAUT, _enroll, _png, _states

INTERVAL = 3.0  # the shortest interval that samples keyframes
assert INTERVAL >= KEYFRAME_SAMPLING_FROM


async def _server(tmp_path: Path, **overrides: Any) -> Server:
    verifier = {"alert_after": 2.0, "no_face_after": 30.0, "sample_interval": INTERVAL}
    return await start_server(make_config(tmp_path, verifier=verifier, **overrides))


async def _call(
    server: Server, clients: list[PeerClient], track: MediaStreamTrack
) -> tuple[PeerClient, PeerClient, str]:
    """A case session: the officer in the call, the party (the astronaut's reference)
    publishing ``track``. Returns (officer, party, room)."""
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        li = await officer_login(server, api)
        cid, pid = await case_with_party(api, li)
        status, body = await _enroll(server, li, cid, pid, _png(ASTRONAUT))
        assert status == 200, body
        _, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
        redeemed = await party_link(api, li, cid, pid)
    officer = PeerClient(server.base_url, session["token"], decode=False)
    clients.append(officer)
    await officer.connect()
    party = PeerClient(server.base_url, redeemed["token"])
    clients.append(party)
    await party.connect()
    await party.publish(track, video_codec="video/VP8")
    return officer, party, session["room"]


def _verdicts(officer: PeerClient) -> list[dict[str, Any]]:
    return [m for m in officer.messages if m["type"] == "verification" and m.get("verdict")]


async def _close(server: Server, clients: list[PeerClient]) -> None:
    for client in clients:
        await client.close()
    await server.runner.cleanup()
    assert leftovers(server.app) == {}, "left behind after the server stopped"


async def test_a_sampled_watch_decodes_one_keyframe_per_sample_and_verifies(
    tmp_path: Path,
) -> None:
    server = await _server(tmp_path)
    clients: list[PeerClient] = []
    try:
        officer, party, room = await _call(
            server, clients, ImageVideoTrack([(0, ASTRONAUT)], width=640, height=480, fps=15)
        )
        await wait_until(
            lambda: ("verified", "matches") in _states(officer), timeout=60, what="verified"
        )
        assert party.joined is not None
        pid = party.joined["participant"]["id"]
        watch = server.app[VERIFIER].watch_of(room, pid)
        assert watch is not None and watch.interval == INTERVAL
        subscriber = watch.subscriber
        assert isinstance(subscriber, LocalSubscriber)
        await wait_until(lambda: watch.samples >= 3, timeout=60, what="three samples")
        matches = [v for v in _verdicts(officer) if v["verdict"] == "match"]
        assert len(matches) >= 2 and all(v["score"] >= v["threshold"] for v in matches)
        # one decode per sample (a keyframe that lost a packet is asked again, not decoded):
        # 15 fps at 3 s is 45 frames a sample, all but one dropped at write
        assert watch.samples <= subscriber.decoded <= watch.samples + 2
        assert subscriber.frames_received >= 10 * subscriber.decoded
        assert subscriber.idle_dropped > subscriber.received / 2
        assert subscriber.keyframes_asked >= subscriber.decoded
        # nothing queued between samples, and no thread of the subscriber's own
        assert subscriber._queue.empty()
        assert not any(t.name.startswith(subscriber.down_id) for t in threading.enumerate())
        started = [e for e in server.app[CUSTODY].entries() if e["type"] == "verification.started"]
        assert [(e["sampling"], e["sample_interval"]) for e in started] == [("keyframes", INTERVAL)]
    finally:
        await _close(server, clients)


async def test_a_publisher_that_sends_no_keyframe_gives_no_picture_verdicts(
    tmp_path: Path,
) -> None:
    # a real aiortc peer whose camera loops VP8 delta frames only: keyframe requests go
    # unanswered, so no sample can ever decode
    face = ImageVideoTrack([(0, ASTRONAUT)], width=320, height=240, fps=10)
    frames = encode_vp8_loop(face, 10, seconds=1.0)[1:]
    server = await _server(tmp_path)
    clients: list[PeerClient] = []
    try:
        officer, party, room = await _call(server, clients, EncodedLoopVideoTrack(frames, 10))
        await wait_until(
            lambda: ("low_quality", "no_picture") in _states(officer),
            timeout=60,
            what="low_quality for no_picture",
        )
        verdicts = _verdicts(officer)
        assert len(verdicts) >= 2
        assert all(
            (v["verdict"], v.get("verdict_reason")) == ("low_quality", "no_picture")
            for v in verdicts
        )
        assert not any(v["state"] == "alert" for v in verdicts)
        # the party is told what to do about it, Chinese first
        guidance = [m for m in party.messages if m["type"] == "verification_guidance"]
        assert guidance and guidance[-1]["reason"] == "no_picture"
        assert guidance[-1]["guidance"].index("摄像头") < guidance[-1]["guidance"].index("camera")
        assert party.joined is not None
        watch = server.app[VERIFIER].watch_of(room, party.joined["participant"]["id"])
        assert watch is not None
        subscriber = watch.subscriber
        assert isinstance(subscriber, LocalSubscriber)
        assert subscriber.decoded == 0 and subscriber.received > 0
        assert subscriber.keyframes_asked >= 2
        # the custody log has them too, with no frame to hash
        logged = [e for e in server.app[CUSTODY].entries() if e["type"] == "verification.verdict"]
        assert logged and all(e["reason"] == "no_picture" for e in logged)
        assert all(e["frame_sha256"] == "" for e in logged)
    finally:
        await _close(server, clients)


async def test_an_education_session_is_sampled_at_its_own_interval(tmp_path: Path) -> None:
    server = await _server(
        tmp_path,
        education={"sample_interval": 12.0, "verdict_gap": 36.0, "check_window": 30.0},
    )
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            status, case = await api.call(
                "POST", "/api/cases", li, json={"kind": "education", "title": "安全宣教"}
            )
            assert status == 201, case
            status, body = await api.call(
                "PUT",
                f"/api/cases/{case['id']}/education",
                li,
                json={"topic": "安全宣教", "required_minutes": 30},
            )
            assert status == 200, body
            status, education = await api.call("POST", f"/api/cases/{case['id']}/sessions", li)
            assert status in (200, 201), education
            cid, _ = await case_with_party(api, li)
            status, inquiry = await api.call("POST", f"/api/cases/{cid}/sessions", li)
            assert status in (200, 201), inquiry
        verifier = server.app[VERIFIER]
        assert verifier.interval_of is not None
        assert await verifier.interval_of(education["room"]) == 12.0
        # an inquiry keeps verifier.sample_interval; so does a development room
        assert await verifier.interval_of(inquiry["room"]) is None
        assert await verifier.interval_of("dev-room") is None
        assert verifier.settings.sample_interval == INTERVAL
    finally:
        await server.runner.cleanup()


SAMPLES = 12
HOLD = 0.2  # seconds a held packet comes after its frame: behind the next frame's (67 ms)
# Seconds a retransmission sent within RTX_AFTER of a held packet is held too: the held
# packet's copy, NACKed at once, comes after a round trip (80 ms) and this, behind the next
# frame's packets as well; one lost at random is still recovered well within the keyframe's
# wait (mediaserver.local.LATE_WAIT, 0.5 s).
RTX_HOLD = 0.1
RTX_AFTER = 0.3
HELD_AT = 12  # the 12th packet of a frame is held: keyframes (20-40 packets), not deltas


class _HoldBack:
    """Which of the publisher's datagrams the link holds back (bench.impair's ``hold_up``):
    the HELD_AT-th packet of each video frame that has one (every keyframe), and the
    retransmissions (RTX) that follow it for RTX_HOLD, so that none of a held packet's copies
    can come before the next frame's packets. SRTP does not encrypt the RTP header: SSRC,
    sequence number, timestamp and marker are read from it."""

    def __init__(self) -> None:
        self.video: int | None = None  # the camera's SSRC and its RTX SSRC, once published
        self.rtx: int | None = None
        self._frame: tuple[int, int] = (-1, 0)  # (timestamp, packets of it so far)
        self._held_at = -1e9  # when a frame's packet was last held (time.monotonic)
        self.keyframe_holds = 0

    def __call__(self, data: bytes) -> float:
        if len(data) < 12 or not 128 <= data[0] <= 191 or 192 <= data[1] <= 223:
            return 0.0  # STUN, DTLS, RTCP
        ssrc = int.from_bytes(data[8:12], "big")
        if ssrc == self.rtx:
            return RTX_HOLD if time.monotonic() - self._held_at < RTX_AFTER else 0.0
        if ssrc != self.video:
            return 0.0
        timestamp = int.from_bytes(data[4:8], "big")
        ts, count = self._frame
        count = count + 1 if timestamp == ts else 1
        self._frame = (timestamp, count)
        if count == HELD_AT and not data[1] & 0x80:  # not the frame's last packet
            self.keyframe_holds += 1
            self._held_at = time.monotonic()
            return HOLD
        return 0.0


async def test_samples_on_a_lossy_reordering_uplink_are_decided_with_a_picture(
    server: Server,
) -> None:
    """5% loss each way and 80 +- 30 ms round trip on the publisher's link (bench.impair on
    its own sockets): a sampled keyframe missing a packet is not given up when the next
    frame's packets overtake the retransmission; it waits a moment for it (the SFU NACKs, the
    publisher resends), so the samples come with a picture, not ``no_picture`` while the
    picture is fine (each keyframe of this camera is ~20-40 packets: at 5% loss most lose
    one). That the late packets come after the next frame's is not left to the link's
    chance: one packet of every keyframe, and every retransmission, is held back HOLD
    seconds (:class:`_HoldBack`)."""
    from bench.impair import ImpairedLink, Impairment
    from tests.conftest import join

    face = ImageVideoTrack([(0, ASTRONAUT)], width=640, height=480, fps=15)
    link = ImpairedLink(
        up=Impairment(loss=0.05, delay=0.04, jitter=0.015),
        down=Impairment(loss=0.05, delay=0.04, jitter=0.015),
        seed=5,
        hold_up=(hold := _HoldBack()),
    )
    clients: list[PeerClient] = []
    subscriber: LocalSubscriber | None = None
    try:
        pub = await join(server, clients, "lossy-samples", "pub", link=link)
        await pub.publish(face, video_codec="video/VP8")
        assert pub.publisher_pc is not None
        [sender] = [s for s in pub.publisher_pc.getSenders() if s.track is face]
        hold.video, hold.rtx = sender._ssrc, sender._rtx_ssrc
        room = server.sfu.rooms["lossy-samples"]
        await wait_until(
            lambda: any(
                t.info.kind == "video" for t in room.participants["pub"].up_tracks.values()
            ),
            timeout=20,
            what="the camera's up-track",
        )
        up = next(t for t in room.participants["pub"].up_tracks.values() if t.info.kind == "video")
        # the camera under way (its first seconds are the encoder's ramp, not the link's loss)
        await wait_until(lambda: up.packets_in > 300, timeout=30, what="the camera under way")
        subscriber = LocalSubscriber(up)
        pictures = 0
        decided = 0
        outcomes: list[bool] = []
        async for frame in subscriber.samples(1.0, wait=3.0):
            decided += 1
            outcomes.append(frame is not None)
            if frame is not None:
                assert (frame.width, frame.height) == (640, 480)
                pictures += 1
            if decided == SAMPLES:
                break
        print(
            f"pictures {pictures}/{decided}, late taken {subscriber.late_packets}, "
            f"broken {subscriber.keyframes_broken}, asked {subscriber.keyframes_asked}, "
            f"lost up {link.up.lost}, reordered {link.up.reordered}, held {link.held} "
            f"({hold.keyframe_holds} of large frames), {outcomes}"
        )
        assert link.up.lost > 0 and hold.keyframe_holds >= SAMPLES  # every keyframe held one
        # so the sampled keyframes had a packet come after the next frame's (forced, not luck):
        # most of them, not each one (a fresh-clone run took 10 late packets for 12 pictures,
        # every sample a picture; why two keyframes had none taken late is not established)
        assert subscriber.late_packets >= pictures // 2
        assert pictures >= SAMPLES - 1, (pictures, subscriber.keyframes_broken)
    finally:
        if subscriber is not None:
            subscriber.close()
        for client in clients:
            await client.close()
        link.close()


async def test_the_officer_hears_every_verdict_of_three_sampled_viewers(tmp_path: Path) -> None:
    """Issue 17's 100-viewer bench heard few ``verification`` messages at the officer although
    the attendance ledger (the verifier's listener) decided every check. The path from a
    verdict to the officer's signalling, at three viewers: every verdict the verifier logs
    (``verification.verdict`` in the custody log) reaches the officer as one message, for each
    viewer. So the path itself loses nothing; at 100 viewers the loss is elsewhere (see
    docs/performance.md, "Session 9")."""
    server = await _server(tmp_path)
    clients: list[PeerClient] = []
    try:
        face = ImageVideoTrack([(0, ASTRONAUT)], width=320, height=240, fps=10)
        frames = encode_vp8_loop(face, 10, seconds=1.0)  # one encoding for the three cameras
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            cid, first = await case_with_party(api, li)
            parties = [first]
            for name in ("Zhao Lei", "Sun Li"):
                status, party = await api.call(
                    "POST", f"/api/cases/{cid}/parties", li, {"role": "witness", "name": name}
                )
                assert status == 201, party
                parties.append(party["id"])
            for pid in parties:
                status, body = await _enroll(server, li, cid, pid, _png(ASTRONAUT))
                assert status == 200, body
            _, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
            tokens = [(await party_link(api, li, cid, pid))["token"] for pid in parties]
        officer = PeerClient(server.base_url, session["token"], decode=False)
        clients.append(officer)
        await officer.connect()
        ids = []
        for token in tokens:
            viewer = PeerClient(server.base_url, token, decode=False)
            clients.append(viewer)
            await viewer.connect()
            await viewer.publish(EncodedLoopVideoTrack(frames, 10), video_codec="video/VP8")
            assert viewer.joined is not None
            ids.append(viewer.joined["participant"]["id"])

        def logged(pid: str) -> int:
            return sum(
                1
                for e in server.app[CUSTODY].entries()
                if e["type"] == "verification.verdict"
                and e.get("participant") == pid
                and e.get("room") == session["room"]
            )

        def heard(pid: str) -> int:
            return sum(1 for v in _verdicts(officer) if v["participant"] == pid)

        await wait_until(
            lambda: all(logged(pid) >= 3 for pid in ids), timeout=90, what="three verdicts each"
        )
        # the messages follow the log at once (the same step sends them); a moment for the wire
        await wait_until(
            lambda: all(heard(pid) >= logged(pid) - 1 for pid in ids), what="the officer hears"
        )
        counts = {pid: (logged(pid), heard(pid)) for pid in ids}
        for in_log, at_officer in counts.values():
            # the officer may be one behind the log (a verdict logged, its message on the way)
            assert in_log - 1 <= at_officer <= in_log, counts
        assert not officer.errors
    finally:
        await _close(server, clients)
