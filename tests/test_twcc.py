"""TWCC for publishers that offer it (issue 18), with real aiortc peers through the SFU: the
answer carries the transport-wide-cc header extension and transport-cc feedback; the SFU
reports every packet the publisher stamped (audio, video, RTX), lost ones as lost, about
every 100 ms; it runs no delay-based estimate for that publisher and sends REMB only as the
subscribers' cap. A publisher that does not offer TWCC (aiortc's own) is answered and served
as before.

aiortc cannot send TWCC itself: the test's publisher offers it by editing its SDP and stamps
each outgoing packet with a transport-wide sequence number at its DTLS transport (as
Chromium's sender does), and reads what the SFU sends back in the clear."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket, is_rtcp, unpack_remb_fci

from bench.impair import ImpairedLink, Impairment
from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack, _config
from mediaserver import twcc
from mediaserver.aiortc_hooks import SfuRtpReceiver, TransportFeedback
from tests.conftest import Server, join, leftovers, make_config, start_server, wait_until

TWCC_ID = 5
ESTIMATOR = "_RTCRtpReceiver__remote_bitrate_estimator"


def offer_twcc(sdp: str) -> str:
    """``sdp`` (aiortc's offer) with TWCC offered in every media section, as Chromium does:
    the header extension and ``transport-cc`` on every codec but RTX."""
    out: list[str] = []
    rtx = set(re.findall(r"a=rtpmap:(\d+) rtx/", sdp))
    for line in sdp.splitlines():
        out.append(line)
        if line.startswith("a=mid:"):
            out.append(f"a=extmap:{TWCC_ID} {twcc.TWCC_URI}")
        match = re.match(r"a=rtpmap:(\d+) ", line)
        if match and match.group(1) not in rtx:
            out.append(f"a=rtcp-fb:{match.group(1)} transport-cc")
    return "\r\n".join(out) + "\r\n"


class TwccPublisher:
    """The publisher connection of ``client``, offering TWCC and stamping its packets."""

    def __init__(self, client: PeerClient) -> None:
        self.client = client
        self.pc = RTCPeerConnection(_config())
        self.stamped = 0  # transport-wide sequence numbers written (from 0)
        self.feedback: list[twcc.Feedback] = []
        self.rembs: list[int] = []
        self.answer = ""
        self._map = HeaderExtensionsMap()
        self._map.configure(
            RTCRtpParameters(
                headerExtensions=[
                    RTCRtpHeaderExtensionParameters(
                        id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"
                    ),
                    RTCRtpHeaderExtensionParameters(
                        id=2, uri="urn:ietf:params:rtp-hdrext:ssrc-audio-level"
                    ),
                    RTCRtpHeaderExtensionParameters(
                        id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
                    ),
                    RTCRtpHeaderExtensionParameters(id=TWCC_ID, uri=twcc.TWCC_URI),
                ]
            )
        )

    async def publish(self, *tracks: Any) -> None:
        for track in tracks:
            self.pc.addTransceiver(track, direction="sendonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        dtls = self.pc.getTransceivers()[0].sender.transport
        original = dtls._send_rtp

        # as Chromium, which numbers only the streams that negotiated the extension: the SFU
        # accepts it on video m-lines only
        audio = {t.sender._ssrc for t in self.pc.getTransceivers() if t.kind == "audio"}

        async def send_rtp(data: bytes) -> None:
            if not is_rtcp(data) and int.from_bytes(data[8:12], "big") not in audio:
                packet = RtpPacket.parse(data, self._map)
                packet.extensions.transport_sequence_number = self.stamped & 0xFFFF
                self.stamped += 1
                data = packet.serialize(self._map)
            await original(data)

        dtls._send_rtp = send_rtp  # type: ignore[method-assign]
        answer = self.client.wait_for(lambda m: m["type"] in ("publish_answer", "error"))
        await self.client.send({"type": "publish", "sdp": offer_twcc(self.pc.localDescription.sdp)})
        message = await answer
        assert message["type"] == "publish_answer", message
        self.answer = message["sdp"]
        await self.pc.setRemoteDescription(RTCSessionDescription(self.answer, "answer"))

    def tap_feedback(self) -> bool:
        """Read the SFU's RTCP in the clear once DTLS is up; False until then."""
        dtls = self.pc.getTransceivers()[0].sender.transport
        session = getattr(dtls, "_rx_srtp", None)
        if session is None:
            return False
        if getattr(session, "_test_tapped", False):
            return True
        original = session.unprotect_rtcp

        def unprotect_rtcp(data: bytes) -> bytes:
            clear: bytes = original(data)
            pos = 0
            while pos + 4 <= len(clear):
                end = pos + (int.from_bytes(clear[pos + 2 : pos + 4], "big") + 1) * 4
                one, fmt, kind = clear[pos:end], clear[pos] & 0x1F, clear[pos + 1]
                if kind == twcc.RTCP_RTPFB and fmt == twcc.RTCP_RTPFB_TWCC:
                    self.feedback.append(twcc.parse_feedback(one))
                elif kind == 206 and fmt == 15:
                    self.rembs.append(unpack_remb_fci(one[12:])[0])
                pos = end
            return clear

        session.unprotect_rtcp = unprotect_rtcp
        session._test_tapped = True
        return True

    def reported(self) -> tuple[dict[int, int], set[int]]:
        """Every sequence number reported received (its arrival) and those only reported lost."""
        received: dict[int, int] = {}
        lost: set[int] = set()
        for fb in self.feedback:
            for seq, at in fb.packets:
                if at is None:
                    lost.add(seq)
                else:
                    received[seq] = at
        return received, lost - set(received)


@pytest.fixture
async def twcc_server(tmp_path: Path) -> AsyncIterator[Server]:
    """A server with ``media.twcc`` on (the default; set here all the same)."""
    srv = await start_server(make_config(tmp_path, media={"twcc": True}))
    yield srv
    await srv.runner.cleanup()


async def test_a_publisher_offering_twcc_gets_feedback_and_only_a_cap(
    twcc_server: Server, clients: list[PeerClient]
) -> None:
    server = twcc_server
    # 5% of the publisher's datagrams lost on the way up, some reordered by jitter
    link = ImpairedLink(up=Impairment(loss=0.05, delay=0.01, jitter=0.005))
    client = await join(server, clients, "twcc", "pub", link=link)
    publisher = TwccPublisher(client)
    link.impair(publisher.pc)
    await publisher.publish(PatternVideoTrack(), ToneAudioTrack())
    try:
        # the answer: the extension (with the offer's id), transport-cc on each codec kept, on
        # the video m-line only (docs/performance.md, "Session 10": audio in Chromium's
        # estimate held its video encoder at the minimum)
        video_section, audio_section = publisher.answer.split("m=video")[1].split("m=audio")
        assert f"a=extmap:{TWCC_ID} {twcc.TWCC_URI}" in video_section
        assert re.search(r"a=rtcp-fb:\d+ transport-cc", video_section)
        assert twcc.TWCC_URI not in audio_section and "transport-cc" not in audio_section
        await wait_until(publisher.tap_feedback, timeout=20, what="the publisher's DTLS")
        await wait_until(
            lambda: len(publisher.feedback) >= 30, timeout=30, what="30 feedback packets"
        )
        received, lost = publisher.reported()
        stamped = publisher.stamped
        report = (
            f"stamped {stamped}, reported received {len(received)}, lost {len(lost)}, "
            f"feedback {len(publisher.feedback)}, link lost {link.up.lost}, REMBs "
            f"{publisher.rembs[-5:]}"
        )
        print(report)
        assert stamped > 100, report
        # every number from the first reported to the last is there, once received or lost
        highest = max(received)
        assert set(received) | lost >= set(range(min(received), highest + 1)), report
        assert 0 < len(lost) < 0.2 * (highest + 1), report  # the link lost some, not most
        # feedback counts 0, 1, 2, ... (8 bits)
        counts = [fb.feedback_count for fb in publisher.feedback]
        assert counts[:5] == list(range(counts[0], counts[0] + 5)), counts
        # the arrival times run with the clock (seconds of packets: the last came later)
        ordered = [received[s] for s in sorted(received)]
        assert ordered[-1] - ordered[0] > 4 * 250, report  # more than 250 ms apart

        # the SFU: a recorder for the video receiver (the audio one has none), no delay-based
        # estimate for either
        participant = server.sfu.rooms["twcc"].participants["pub"]
        receivers = [
            t.receiver
            for t in participant.publisher_pc.getTransceivers()
            if isinstance(t.receiver, SfuRtpReceiver)
        ]
        assert len(receivers) == 2
        video = next(r for r in receivers if r.sfu_kind == "video")
        (audio,) = [r for r in receivers if r is not video]
        assert video._twcc is not None and audio._twcc is None
        assert video._twcc.feedback_sent >= 30
        assert getattr(video, ESTIMATOR) is None
        feedback = getattr(video.transport, "_remotecase_twcc", None)
        assert isinstance(feedback, TransportFeedback)

        # nothing caps it yet (no subscriber): no REMB at all, the publisher's own estimator
        # rules (an aiortc-estimated publisher gets one about every second)
        assert publisher.rembs == [], report
        assert feedback.cap_sent is None and video.remb_sent is None

        # a subscriber: its link's estimate caps the publisher, as REMB
        sub = await join(server, clients, "twcc", "sub")
        await wait_until(lambda: sub.mids_for_participant("pub", "video") != [], what="offer")
        (down,) = [
            d
            for d in server.sfu.rooms["twcc"].participants["sub"].down_tracks()
            if d.up.info.kind == "video"
        ]
        await wait_until(lambda: down.link.rembs > 0, timeout=30, what="the subscriber's REMB")
        await wait_until(
            lambda: (
                feedback.cap_sent is not None
                and publisher.rembs != []
                and abs(publisher.rembs[-1] - feedback.cap_sent) <= 0.01 * feedback.cap_sent
            ),
            timeout=15,
            what="the cap as REMB at the publisher",
        )
        assert video.remb_sent == feedback.cap_sent
        # the participant leaves: its receivers stop, and the last one closes the feedback
        await client.leave()
        await wait_until(
            lambda: "pub" not in server.sfu.rooms["twcc"].participants, what="the leave"
        )
        assert feedback._task.done() and feedback._closed
        assert all(r._twcc is None for r in receivers)
    finally:
        await publisher.pc.close()


async def test_a_publisher_without_twcc_is_answered_and_estimated_as_before(
    server: Server, clients: list[PeerClient]
) -> None:
    client = await join(server, clients, "plain", "pub")
    await client.publish(PatternVideoTrack())
    assert client.publisher_pc is not None
    answer = client.publisher_pc.remoteDescription.sdp
    assert twcc.TWCC_URI not in answer and "transport-cc" not in answer
    participant = server.sfu.rooms["plain"].participants["pub"]
    (receiver,) = [t.receiver for t in participant.publisher_pc.getTransceivers()]
    assert isinstance(receiver, SfuRtpReceiver)
    await wait_until(
        lambda: getattr(receiver, ESTIMATOR) is not None,
        timeout=20,
        what="the delay-based estimator at the first packet",
    )
    assert receiver._twcc is None
    await wait_until(lambda: receiver.remb_sent is not None, timeout=20, what="a REMB")
    await asyncio.sleep(0)


async def test_twcc_off_answers_without_it(tmp_path: Path, clients: list[PeerClient]) -> None:
    """``media.twcc`` off: a publisher offering TWCC is answered without it, and gets the SFU's
    delay-based REMB as an aiortc publisher does."""
    server = await start_server(make_config(tmp_path, media={"twcc": False}))
    try:
        await _answered_without_twcc(server, clients)
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()
    assert leftovers(server.app) == {}, "left behind after the server stopped"


async def _answered_without_twcc(server: Server, clients: list[PeerClient]) -> None:
    client = await join(server, clients, "off", "pub")
    publisher = TwccPublisher(client)
    try:
        await publisher.publish(PatternVideoTrack())
        assert twcc.TWCC_URI not in publisher.answer and "transport-cc" not in publisher.answer
        participant = server.sfu.rooms["off"].participants["pub"]
        (receiver,) = [t.receiver for t in participant.publisher_pc.getTransceivers()]
        assert isinstance(receiver, SfuRtpReceiver)
        await wait_until(lambda: receiver.remb_sent is not None, timeout=20, what="a REMB")
        assert receiver._twcc is None
    finally:
        await publisher.pc.close()


async def test_the_feedback_task_survives_an_error_and_close_never_raises(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Review 10: an unforeseen exception in a round (here the builder's) is logged once and
    the feedback goes on; close() does not re-raise it into the receiver's stop."""
    from aiortc.rtcdtlstransport import State

    monkeypatch.setattr(twcc, "FEEDBACK_INTERVAL", 0.01)
    sent: list[bytes] = []

    class _Transport:  # a connected DTLS transport as TransportFeedback reads it
        _state = State.CONNECTED

        async def _send_rtp(self, data: bytes) -> None:
            sent.append(data)

    class _Receiver:
        _RTCRtpReceiver__rtcp_ssrc = 1234
        sfu_kind = "audio"
        _sfu_sink = None

    feedback = TransportFeedback(_Transport())  # type: ignore[arg-type]
    feedback.receivers.append(_Receiver())  # type: ignore[arg-type]
    real_build = twcc.TwccRecorder.build
    calls = 0

    def failing_build(self: twcc.TwccRecorder, now_ns: int) -> list[bytes]:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise ValueError("unforeseen")
        return real_build(self, now_ns)

    monkeypatch.setattr(twcc.TwccRecorder, "build", failing_build)
    for seq in range(20):
        feedback.recorder.on_packet(seq, feedback.recorder._origin_ns + seq * 1_000_000)
    await wait_until(lambda: sent != [], timeout=10, what="feedback after the errors")
    assert feedback.errors == 3 and not feedback._task.done()
    assert sum("transport-cc feedback failed" in r.getMessage() for r in caplog.records) == 1
    parsed = twcc.parse_feedback(sent[0])
    assert [seq for seq, _ in parsed.packets] == list(range(20))
    await feedback.close()
    await feedback.close()  # idempotent
    assert feedback._task.done()


async def test_a_packet_the_sfu_does_not_forward_is_still_recorded() -> None:
    """Review 10: a packet of a TWCC transport with a payload type the receiver has no codec
    for (so it is not forwarded) still has its arrival recorded: its number is reported
    received, not lost merely because the SFU did not forward it."""
    from aiortc import RTCCertificate, RTCDtlsTransport, RTCIceGatherer, RTCIceTransport

    dtls = RTCDtlsTransport(
        RTCIceTransport(RTCIceGatherer()), [RTCCertificate.generateCertificate()]
    )
    receiver = SfuRtpReceiver("video", dtls)
    recorder = twcc.TwccRecorder(origin_ns=time.monotonic_ns())
    receiver._twcc = recorder
    for seq in (41, 42):
        packet = RtpPacket(payload_type=77, sequence_number=seq, ssrc=1)
        packet.extensions.transport_sequence_number = seq
        assert receiver._ingest(packet, 0) is None  # no codec: not forwarded
    assert list(recorder._seqs) == [41, 42]
    (packet_bytes,) = recorder.build(time.monotonic_ns())
    feedback = twcc.parse_feedback(packet_bytes)
    assert [seq for seq, _ in feedback.packets] == [41, 42]
    await dtls.stop()
