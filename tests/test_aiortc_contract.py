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
import pylibsrtp._binding
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rate import OveruseEstimator, RemoteBitrateEstimator
from aiortc.rtcdtlstransport import SRTP_PROFILES, RTCCertificate, RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtcrtpreceiver import (
    NackGenerator,
    RemoteStreamTrack,
    RTCRtpReceiver,
    StreamStatistics,
)
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import HeaderExtensions, HeaderExtensionsMap, RtpPacket
from OpenSSL import SSL
from pylibsrtp import Policy, Session

from bench.jitter import (
    RECEIVER_CODECS,
    RECEIVER_JITTER_BUFFER,
    GuardedJitterBuffer,
    guard_receiver,
)
from mediaserver import aiortc_hooks
from mediaserver.twcc import TWCC_URI
from tests.conftest import wait_until


async def test_pinned_versions_are_installed() -> None:
    assert version("aiortc") == "1.16.0", "aiortc upgraded: re-check mediaserver/aiortc_hooks.py"
    assert version("aioice") == "0.13.0", "aioice upgraded: re-check mediaserver/aiortc_hooks.py"
    assert version("pylibsrtp") == "1.0.0", (
        "pylibsrtp upgraded: re-check fast_rtp_writer in mediaserver/aiortc_hooks.py"
    )


async def test_every_private_name_still_exists() -> None:
    aiortc_hooks.install()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    loop = asyncio.get_running_loop()
    udp, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    stun_udp = None
    try:
        transceiver = pc.addTransceiver("video", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        connection = transceiver.sender.transport.transport._connection
        stun_udp, stun = await loop.create_datagram_endpoint(
            lambda: aioice.ice.StunProtocol(connection), local_addr=("127.0.0.1", 0)
        )
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
            "extensions_map": transceiver.sender.transport._rtp_header_extensions_map,  # type: ignore[attr-defined]
            "extension_ids": (
                transceiver.sender.transport._rtp_header_extensions_map._HeaderExtensionsMap__ids  # type: ignore[attr-defined]
            ),
            "stream_statistics": StreamStatistics(90000),
            "srtp_lib": pylibsrtp._binding.lib,
            "HeaderExtensions": HeaderExtensions,
            "stun_protocol": stun,
            "loop": loop,
            "pc": pc,
            "RTCCertificate": RTCCertificate,
            "certificate": RTCCertificate.generateCertificate(),
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
        # ice_datagram_transports reads the protocol's transport: the one asyncio made for it
        assert stun.transport is stun_udp
        # mediaserver/sockets.py: the transport it changes is asyncio's, whose reader reads one
        # datagram a call (what drain_reads repeats; a batching reader would make it moot)
        assert isinstance(udp, asyncio.selector_events._SelectorDatagramTransport)  # type: ignore[attr-defined]
        source = inspect.getsource(udp._read_ready)  # type: ignore[attr-defined]
        assert source.count("recvfrom(self.max_size)") == 1
        assert "for " not in source and "while " not in source
        # and the transport's own reader is what drain_reads replaces (one per descriptor)
        key = loop._selector.get_key(udp._sock_fd)  # type: ignore[attr-defined]
        reader = key.data[0]
        assert reader._callback == udp._read_ready  # type: ignore[attr-defined]
    finally:
        udp.close()
        if stun_udp is not None:
            stun_udp.close()
        await pc.close()


async def test_the_bench_receivers_jitter_buffer_is_aiortcs_to_replace() -> None:
    """bench/jitter.py puts its buffer where a video receiver keeps aiortc's, reads the
    receiver's codecs, and relies on ``add`` calling ``_remove_frame`` and on the receiver
    sending a PLI when ``add`` asks."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        video = pc.addTransceiver("video", direction="recvonly").receiver
        audio = pc.addTransceiver("audio", direction="recvonly").receiver
        plain = getattr(video, RECEIVER_JITTER_BUFFER)
        assert type(plain) is JitterBuffer and plain.capacity == 512 and plain._is_video
        assert isinstance(getattr(video, RECEIVER_CODECS), dict)
        guarded = guard_receiver(video)
        assert isinstance(guarded, GuardedJitterBuffer)
        assert (
            getattr(video, RECEIVER_JITTER_BUFFER) is guarded and guard_receiver(video) is guarded
        )
        assert guard_receiver(audio) is None
        for name in ("_origin", "_packets", "_capacity", "_is_video", "remove"):
            assert hasattr(guarded, name), name
        assert "self._remove_frame(" in inspect.getsource(JitterBuffer.add)
        handle = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
        assert "self.__jitter_buffer.add(packet)" in handle
        assert "if pli_flag:" in handle and "_send_rtcp_pli" in handle
    finally:
        await pc.close()


def test_aiortc_parses_the_transport_wide_sequence_number() -> None:
    """The SFU negotiates TWCC itself (aiortc_hooks.accept_transport_cc) and relies on aiortc's
    header extension map to read each packet's transport-wide sequence number."""
    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpParameters(headerExtensions=[RTCRtpHeaderExtensionParameters(id=5, uri=TWCC_URI)])
    )
    packet = RtpPacket(payload_type=96, sequence_number=1, timestamp=2, ssrc=3, payload=b"x")
    packet.extensions.transport_sequence_number = 0xFFFE
    parsed = RtpPacket.parse(packet.serialize(extensions), extensions)
    assert parsed.extensions.transport_sequence_number == 0xFFFE


async def _connect(server: RTCPeerConnection, client: RTCPeerConnection) -> str:
    """Negotiate an audio call offered by ``client``; the server's answer's SDP."""
    client.addTransceiver("audio", direction="sendrecv")
    await client.setLocalDescription(await client.createOffer())
    await server.setRemoteDescription(client.localDescription)
    await server.setLocalDescription(await server.createAnswer())
    await client.setRemoteDescription(server.localDescription)
    for _ in range(200):
        if server.connectionState == client.connectionState == "connected":
            break
        await asyncio.sleep(0.05)
    assert server.connectionState == client.connectionState == "connected"
    return server.localDescription.sdp


async def test_server_connections_share_one_certificate_and_context() -> None:
    """``share_server_certificate``: two server peer connections answer with the same
    fingerprint, run their DTLS on one OpenSSL context (aiortc's, with
    ``SSL_MODE_RELEASE_BUFFERS``), and each still completes its handshake with an aiortc peer
    that made its own certificate, with SRTP keys out of it; and the datagram count the
    silence watch reads counts what reaches that connection's socket."""
    servers = [RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(2)]
    clients = [RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(2)]
    shared = aiortc_hooks.server_certificate()
    for server in servers:
        aiortc_hooks.share_server_certificate(server)
    try:
        answers = [await _connect(s, c) for s, c in zip(servers, clients, strict=True)]
        fingerprint = next(f for f in shared.getFingerprints() if f.algorithm == "sha-256")
        line = f"a=fingerprint:sha-256 {fingerprint.value}"
        assert all(line in answer for answer in answers)
        offered = clients[0].localDescription.sdp
        assert line not in offered  # the client kept a certificate of its own
        dtls = [server.getTransceivers()[0].receiver.transport for server in servers]
        contexts = [t._ssl.get_context() for t in dtls]  # type: ignore[attr-defined, union-attr]
        assert contexts[0] is contexts[1]
        assert shared._create_ssl_context(SRTP_PROFILES) is contexts[0]
        # the mode is set as the context is made (pyOpenSSL lets no one change a context
        # once a connection uses it, nor read its mode then): one made the same way
        unused = aiortc_hooks.ServerCertificate(shared._key, shared._cert, shared.made)
        assert unused._create_ssl_context(SRTP_PROFILES).set_mode(0) & SSL.MODE_RELEASE_BUFFERS
        for transport in dtls:
            assert transport._rx_srtp is not None and transport._tx_srtp is not None  # type: ignore[attr-defined]
        # the silence watch's count (datagram_counter): every datagram reaching the nominated
        # pair's socket counts once, whatever it is and whoever sent it (aioice drops these)
        count = aiortc_hooks.datagram_counter(servers[0])
        assert count is not None
        pair = dtls[0].transport._connection._nominated[1]  # type: ignore[attr-defined]
        address = pair.protocol.transport.get_extra_info("sockname")
        stray = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            before = count()
            for _ in range(5):
                stray.sendto(b"not stun, not rtp", address)
            await wait_until(lambda: count() >= before + 5, timeout=5, what="datagrams counted")
        finally:
            stray.close()
        assert servers[0].connectionState == "connected"
    finally:
        for pc in clients + servers:
            await pc.close()


def test_the_server_certificate_is_renewed_for_new_connections() -> None:
    """A day after it was made the server's certificate is replaced for connections made
    from then on; until then every connection gets the same one."""
    now = 1_000_000_000.0
    first = aiortc_hooks.server_certificate(now)
    assert aiortc_hooks.server_certificate(now + 60) is first
    later = aiortc_hooks.server_certificate(now + aiortc_hooks.CERTIFICATE_RENEWAL)
    assert later is not first
    assert later.getFingerprints()[0].value != first.getFingerprints()[0].value
    assert aiortc_hooks.server_certificate(now + aiortc_hooks.CERTIFICATE_RENEWAL + 1) is later
    # a clock set back: a new one rather than a certificate "made in the future"
    assert aiortc_hooks.server_certificate(now) is not later


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
        (NackGenerator.add, aiortc_hooks.LeanNackGenerator.add),
        (StreamStatistics.add, aiortc_hooks.LeanStreamStatistics.add),
        (RTCCertificate._create_ssl_context, aiortc_hooks.ServerCertificate._create_ssl_context),
        (RTCCertificate.getFingerprints, aiortc_hooks.ServerCertificate.getFingerprints),
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


def test_extension_map_configure_keeps_its_ids_object() -> None:
    """FastIngress keeps a reference to the map's ids object at install and relies on aiortc's
    ``configure`` changing that same object at every negotiation: a renegotiated id must
    reach the fast parse without a new install."""
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
    from aiortc.rtp import HeaderExtensionsMap

    extensions = HeaderExtensionsMap()
    ids = extensions._HeaderExtensionsMap__ids  # type: ignore[attr-defined]
    uri = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
    for number in (3, 7):
        extensions.configure(
            RTCRtpParameters(headerExtensions=[RTCRtpHeaderExtensionParameters(id=number, uri=uri)])
        )
        assert extensions._HeaderExtensionsMap__ids is ids  # type: ignore[attr-defined]
        assert ids.abs_send_time == number


async def test_the_drained_readers_private_parts_and_the_kernels_stamp() -> None:
    """mediaserver/sockets.py's DrainedReader reads asyncio's datagram transport's privates
    (as its own ``_read_ready`` does) and the kernel's SO_TIMESTAMPNS control message (a
    number Python's socket module does not name: 35 on Linux x86 and asm-generic, a struct
    timespec of two native longs, CLOCK_REALTIME)."""
    import struct
    import time

    from mediaserver import sockets

    loop = asyncio.get_running_loop()
    transport, _protocol = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    try:
        for name in ("_sock", "_sock_fd", "_protocol", "max_size", "_conn_lost", "_fatal_error"):
            assert hasattr(transport, name), name
        source = inspect.getsource(transport._read_ready)  # type: ignore[attr-defined]
        for used in ("self._conn_lost", "self._protocol.error_received", "self._fatal_error"):
            assert used in source, used
        sock: socket.socket = transport._sock  # type: ignore[attr-defined]
        sock.setsockopt(socket.SOL_SOCKET, sockets.SO_TIMESTAMPNS, 1)
        assert sock.getsockopt(socket.SOL_SOCKET, sockets.SO_TIMESTAMPNS) == 1
        loop._remove_reader(transport._sock_fd)  # type: ignore[attr-defined]
        sock.setblocking(True)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            before = time.time_ns()
            sender.sendto(b"x", transport.get_extra_info("sockname"))
            data, ancillary, _flags, _addr = sock.recvmsg(64, sockets._ANCILLARY)
        assert data == b"x"
        ((level, kind, stamp),) = ancillary
        assert (level, kind, len(stamp)) == (socket.SOL_SOCKET, 35, struct.calcsize("@ll"))
        seconds, nanoseconds = sockets._TIMESPEC.unpack(stamp)
        assert before - 1_000_000 <= seconds * 1_000_000_000 + nanoseconds <= time.time_ns()
    finally:
        transport.close()
