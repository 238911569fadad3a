"""Fails loudly when an aiortc or aioice upgrade moves a private part the SFU hooks.

mediaserver/aiortc_hooks.py lists every private name it uses in PRIVATE_NAMES; this test
resolves each one on real objects.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import socket
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import aioice
import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rate import OveruseEstimator, RemoteBitrateEstimator
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpreceiver import RemoteStreamTrack, RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from pylibsrtp import Policy, Session

from mediaserver import aiortc_hooks


async def test_pinned_versions_are_installed() -> None:
    assert version("aiortc") == "1.16.0", "aiortc upgraded: re-check mediaserver/aiortc_hooks.py"
    assert version("aioice") == "0.13.0", "aioice upgraded: re-check mediaserver/aiortc_hooks.py"
    assert version("pylibsrtp") == "1.0.0", (
        "pylibsrtp upgraded: re-check fast_rtp_writer in mediaserver/aiortc_hooks.py"
    )


async def test_every_private_name_still_exists() -> None:
    aiortc_hooks.install()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    try:
        transceiver = pc.addTransceiver("video", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        objects = {
            "RTCRtpReceiver": RTCRtpReceiver,
            "RTCRtpSender": RTCRtpSender,
            "RTCDtlsTransport": RTCDtlsTransport,
            "receiver": transceiver.receiver,
            "nack_generator": transceiver.receiver._RTCRtpReceiver__nack_generator,  # type: ignore[attr-defined]
            "sender": transceiver.sender,
            "dtls": transceiver.sender.transport,
            "rtp_router": transceiver.sender.transport._rtp_router,  # type: ignore[attr-defined]
            "ice": transceiver.sender.transport.transport,
            "aioice.Connection": transceiver.sender.transport.transport._connection,
            "aioice.ice": aioice.ice,
            "StunProtocol": aioice.ice.StunProtocol,
            "transceiver": transceiver,
            "srtp": Session(Policy(key=bytes(30), ssrc_type=Policy.SSRC_ANY_OUTBOUND)),
            "udp": udp,
            "remote_track": RemoteStreamTrack("video"),
            "remb_estimator": RemoteBitrateEstimator(),
            "overuse_estimator": OveruseEstimator(),
            "OveruseEstimator": OveruseEstimator,
        }
        missing = []
        for owner, name in aiortc_hooks.PRIVATE_NAMES:
            target = objects.get(owner) or importlib.import_module(owner)
            if not hasattr(target, name):
                missing.append(f"{owner}.{name}")
        assert missing == [], f"aiortc private parts moved: {missing}"
        # the hooks are what the peer connection creates
        assert isinstance(transceiver.receiver, aiortc_hooks.SfuRtpReceiver)
        assert isinstance(transceiver.sender, aiortc_hooks.SfuRtpSender)
        assert isinstance(udp._sock, socket.socket)  # type: ignore[attr-defined]
    finally:
        udp.close()
        await pc.close()


async def test_overridden_signatures_match() -> None:
    """The subclass overrides must keep aiortc's call signatures."""
    pairs: list[tuple[Callable[..., Any], Callable[..., Any]]] = [
        (RTCRtpReceiver._handle_rtp_packet, aiortc_hooks.SfuRtpReceiver._handle_rtp_packet),
        (RTCRtpReceiver._handle_rtcp_packet, aiortc_hooks.SfuRtpReceiver._handle_rtcp_packet),
        (RTCRtpReceiver.receive, aiortc_hooks.SfuRtpReceiver.receive),
        (
            OveruseEstimator.update_min_frame_period,
            aiortc_hooks.LeanOveruseEstimator.update_min_frame_period,
        ),
        (RTCRtpReceiver.stop, aiortc_hooks.SfuRtpReceiver.stop),
        (RTCRtpReceiver._handle_disconnect, aiortc_hooks.SfuRtpReceiver._handle_disconnect),
        (RTCRtpSender._handle_rtcp_packet, aiortc_hooks.SfuRtpSender._handle_rtcp_packet),
        (RTCRtpSender.send, aiortc_hooks.SfuRtpSender.send),
        (RTCRtpSender._run_rtp, aiortc_hooks.SfuRtpSender._run_rtp),
        (RTCRtpSender._run_rtcp, aiortc_hooks.SfuRtpSender._run_rtcp),
        (aiortc_hooks.AIOICE_QUERY_CONSENT, aiortc_hooks.query_consent),
    ]
    for base, ours in pairs:
        assert list(inspect.signature(base).parameters) == list(
            inspect.signature(ours).parameters
        ), base.__qualname__
    # the connection's nominated pair carries a UDP protocol with a transport we can write to
    assert hasattr(aioice.ice.StunProtocol, "send_data")


async def test_fast_ingress_arrival_clock_is_aiortcs() -> None:
    """FastIngress stamps arrivals in aiortc's clock (milliseconds since 1900) without its
    datetime arithmetic; the REMB estimator compares them with abs-send-time deltas."""
    import time

    from aiortc import clock

    ours = int(time.time() * 1000) + aiortc_hooks._NTP_EPOCH_MS
    assert abs(ours - clock.current_ms()) < 1000


async def test_fast_ingress_rtp_test_matches_aiortcs() -> None:
    """The fast path's cheap RTP/RTCP split is aiortc's is_rtcp for every second byte."""
    from aiortc.rtp import is_rtcp

    for second in range(256):
        data = bytes([0x80, second]) + bytes(10)
        taken_as_rtcp = 191 < second < 224
        # 209-223 (payload types 81-95 with the marker, which RFC 5761 section 4 keeps off a
        # muxed port) the fast path leaves to aiortc's own path, which decides as before
        if second <= 208:
            assert taken_as_rtcp == is_rtcp(data), second
