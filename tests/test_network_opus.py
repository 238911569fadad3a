"""Opus in-band FEC and DTX (issue 18): accepted where the publisher offers them, so a lost
audio packet can be rebuilt from the next one at every subscriber."""

from __future__ import annotations

import re

from aiortc import RTCPeerConnection, RTCSessionDescription

from bench.peer import PeerClient, ToneAudioTrack, _config
from tests.conftest import Server, join, wait_until


def _opus_fmtp(sdp: str) -> str:
    match = re.search(r"a=rtpmap:(\d+) opus/48000/2", sdp)
    assert match, "no opus"
    fmtp = re.search(rf"a=fmtp:{match.group(1)} (.*)", sdp)
    return fmtp.group(1).strip() if fmtp else ""


async def _publish_opus(client: PeerClient, fmtp: str | None) -> str:
    """Publish a tone with an offer whose Opus line says ``fmtp``, as Chrome's does."""
    pc = RTCPeerConnection(_config())
    client.publisher_pc = pc
    pc.addTransceiver(ToneAudioTrack(440), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    if fmtp is not None:
        pt = re.search(r"a=rtpmap:(\d+) opus/48000/2", sdp).group(1)  # type: ignore[union-attr]
        sdp = sdp.replace(
            f"a=rtpmap:{pt} opus/48000/2\r\n",
            f"a=rtpmap:{pt} opus/48000/2\r\na=fmtp:{pt} {fmtp}\r\n",
        )
    await client.send({"type": "publish", "sdp": sdp})
    answer = await client.wait_for(lambda m: m["type"] in ("publish_answer", "error"))
    assert answer["type"] == "publish_answer", answer
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    return str(answer["sdp"])


async def test_fec_and_dtx_offered_are_accepted_and_passed_on(
    server: Server, clients: list[PeerClient]
) -> None:
    pub = await join(server, clients, "fec", "pub")
    await join(server, clients, "fec", "sub", decode=False)
    answer = await _publish_opus(pub, "minptime=10;useinbandfec=1;usedtx=1")
    params = dict(p.split("=") for p in _opus_fmtp(answer).split(";") if p)
    assert params.get("useinbandfec") == "1" and params.get("usedtx") == "1"
    assert "minptime" not in params  # only what the SFU means to pass on
    room = server.sfu.rooms["fec"]
    await wait_until(lambda: len(room.up_tracks()) == 1, what="published")
    (up,) = room.up_tracks()
    assert ("useinbandfec", "1") in up.info.parameters and ("usedtx", "1") in up.info.parameters
    # the FEC and DTX are inside the Opus payload: forwarded untouched like the rest
    await wait_until(
        lambda: any(d.packets > 20 for d in room.participants["sub"].down_tracks()),
        timeout=20,
        what="audio forwarded",
    )


async def test_publisher_that_does_not_offer_fec_is_not_asked_for_it(
    server: Server, clients: list[PeerClient]
) -> None:
    pub = await join(server, clients, "nofec", "pub")
    answer = await _publish_opus(pub, None)
    assert "useinbandfec" not in _opus_fmtp(answer) and "usedtx" not in _opus_fmtp(answer)
    answer = await _publish_opus(await join(server, clients, "nofec", "pub2"), "useinbandfec=0")
    assert "useinbandfec" not in _opus_fmtp(answer)
