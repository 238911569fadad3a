"""The only module that reaches into aiortc's private parts.

aiortc decodes every received track and encodes every sent one. The SFU needs neither, so it
installs two subclasses where aiortc's peer connection looks its receiver and sender classes up
(module globals of :mod:`aiortc.rtcpeerconnection`):

* :class:`SfuRtpReceiver` hands every received packet (RTX already unwrapped) to a sink and
  keeps aiortc's receiver reports, NACK generation and REMB (:func:`lean_estimator`), but never
  depacketizes or decodes, and starts no decoder thread;
* :class:`SfuRtpSender` sends nothing by itself: a :class:`SenderHooks` owner (a forwarding
  down-track) writes packets through :func:`fast_rtp_writer`, answers NACKs and relays PLIs.

Both behave exactly like their aiortc parents until the SFU attaches to them, so aiortc peers
in the same process (tests, the bench) are unaffected. aiortc is pinned exactly in
``pyproject.toml``; ``tests/test_aiortc_contract.py`` fails loudly when an upgrade moves any name
listed in :data:`PRIVATE_NAMES`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import socket
import struct
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol

import aioice.ice
import aioice.stun
import aiortc.rtcpeerconnection
import aiortc.sdp
import pylibsrtp
from aiortc.codecs import is_rtx
from aiortc.rate import (
    MIN_FRAME_PERIOD_HISTORY_LENGTH,
    OveruseEstimator,
    RemoteBitrateEstimator,
)
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsFingerprint, RTCDtlsTransport, State
from aiortc.rtcrtpparameters import (
    RTCRtcpFeedback,
    RTCRtpHeaderExtensionParameters,
    RTCRtpReceiveParameters,
    RTCRtpSendParameters,
)
from aiortc.rtcrtpreceiver import NackGenerator, RTCRtpReceiver, StreamStatistics
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpByePacket,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
    unpack_remb_fci,
    unwrap_rtx,
)
from OpenSSL import SSL

from common.tasks import TaskSet

from . import rtp, twcc

logger = logging.getLogger(__name__)

# Every private name this module (and only this module) relies on, as (object, attribute).
PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("pc", "_RTCPeerConnection__certificates"),
    ("RTCCertificate", "_create_ssl_context"),
    ("certificate", "_key"),
    ("certificate", "_cert"),
    ("dtls", "_ssl"),
    ("aiortc.rtcpeerconnection", "RTCRtpReceiver"),
    ("aiortc.rtcpeerconnection", "RTCRtpSender"),
    ("RTCRtpReceiver", "_handle_rtp_packet"),
    ("RTCRtpReceiver", "_handle_rtcp_packet"),
    ("RTCRtpReceiver", "_send_rtcp"),
    ("RTCRtpReceiver", "_send_rtcp_pli"),
    ("RTCRtpReceiver", "_send_rtcp_nack"),
    ("receiver", "_RTCRtpReceiver__codecs"),
    ("receiver", "_RTCRtpReceiver__remote_streams"),
    ("receiver", "_RTCRtpReceiver__rtx_ssrc"),
    ("receiver", "_RTCRtpReceiver__nack_generator"),
    ("nack_generator", "missing"),
    ("nack_generator", "add"),
    ("nack_generator", "truncate"),
    ("aiortc.rtcrtpreceiver", "NackGenerator"),
    ("receiver", "_RTCRtpReceiver__remote_bitrate_estimator"),
    ("receiver", "_RTCRtpReceiver__rtcp_ssrc"),
    # lean_estimator: aiortc's REMB estimator with its incoming rate counter replaced
    ("remb_estimator", "incoming_bitrate"),
    ("remb_estimator", "incoming_bitrate_initialized"),
    ("aiortc.rate", "RateCounter"),
    ("remb_estimator", "estimator"),
    ("OveruseEstimator", "update_min_frame_period"),
    ("overuse_estimator", "ts_delta_hist"),
    ("aiortc.rate", "MIN_FRAME_PERIOD_HISTORY_LENGTH"),
    # SfuRtpReceiver.receive: aiortc's, without the decoder thread
    ("RTCRtpReceiver", "receive"),
    ("RTCRtpReceiver", "stop"),
    ("RTCRtpReceiver", "_handle_disconnect"),
    ("RTCRtpReceiver", "_run_rtcp"),
    ("receiver", "_RTCRtpReceiver__started"),
    ("receiver", "_RTCRtpReceiver__rtcp_task"),
    ("receiver", "_RTCRtpReceiver__decoder_thread"),
    ("receiver", "_track"),
    ("RTCDtlsTransport", "_register_rtp_receiver"),
    ("remote_track", "_queue"),
    ("RTCRtpSender", "_run_rtp"),
    ("RTCRtpSender", "_run_rtcp"),
    ("RTCRtpSender", "_handle_rtcp_packet"),
    ("RTCRtpSender", "_send_keyframe"),
    ("sender", "_RTCRtpSender__rtp_started"),
    ("sender", "_RTCRtpSender__rtp_exited"),
    ("sender", "_RTCRtpSender__rtcp_started"),
    ("sender", "_RTCRtpSender__rtcp_exited"),
    ("sender", "_RTCRtpSender__lsr"),
    ("sender", "_RTCRtpSender__lsr_time"),
    ("sender", "_RTCRtpSender__cname"),
    ("sender", "_ssrc"),
    ("sender", "_rtx_ssrc"),
    ("RTCDtlsTransport", "_send_rtp"),
    ("dtls", "_tx_srtp"),
    ("dtls", "_state"),
    # FastIngress: aiortc's receive path, done in the socket's callback
    ("dtls", "_rtp_router"),
    ("dtls", "_rx_srtp"),
    ("dtls", "_rtp_header_extensions_map"),
    ("rtp_router", "ssrc_table"),
    # FastIngress.handle's own header parse reads the negotiated extension ids from it
    ("extensions_map", "_HeaderExtensionsMap__ids"),
    ("extension_ids", "abs_send_time"),
    ("extension_ids", "transport_sequence_number"),
    # the receiver-report statistics and NACK generator, their per-packet add done leaner
    ("aiortc.rtcrtpreceiver", "StreamStatistics"),
    ("stream_statistics", "base_seq"),
    ("stream_statistics", "max_seq"),
    ("stream_statistics", "cycles"),
    ("stream_statistics", "packets_received"),
    ("stream_statistics", "_clockrate"),
    ("stream_statistics", "_jitter_q4"),
    ("stream_statistics", "_last_arrival"),
    ("stream_statistics", "_last_timestamp"),
    ("nack_generator", "max_seq"),
    ("rtp_router", "payload_type_table"),
    # FastIngress.handle_rtcp: aiortc's RTCP routing, done in the socket's callback
    ("rtp_router", "senders"),
    ("rtp_router", "route_rtcp"),
    ("RTCDtlsTransport", "_handle_rtcp_data"),
    ("receiver", "_enabled"),
    ("aiortc.clock", "current_ms"),
    ("ice", "_connection"),
    ("aioice.Connection", "_nominated"),
    ("StunProtocol", "datagram_received"),
    ("aioice.ice", "StunProtocol"),
    ("aioice.ice", "get_host_addresses"),
    ("transceiver", "_codecs"),
    ("srtp", "_cdata"),
    ("srtp", "_buffer"),
    ("srtp", "_srtp"),
    ("srtp_lib", "srtp_protect"),  # _direct_writer
    ("srtp_lib", "srtp_unprotect"),  # _direct_unprotect
    ("udp", "_sock"),
    ("pylibsrtp._binding", "ffi"),
    ("pylibsrtp._binding", "lib"),
    # bench/load/receivers.py's light receivers (load generators only, never the server)
    ("aioice.Connection", "_protocols"),
    # consent freshness (query_consent below)
    ("aioice.Connection", "query_consent"),
    ("aioice.Connection", "_query_consent_task"),
    ("aioice.Connection", "build_request"),
    ("aioice.Connection", "remote_password"),
    ("aioice.stun", "TransactionError"),
    # accept_transport_cc: the answer's header extensions and feedback, set before createAnswer
    ("transceiver", "_headerExtensions"),
    ("aiortc.sdp", "SessionDescription"),
    ("HeaderExtensions", "transport_sequence_number"),
    # ice_datagram_transports: the UDP transport aioice's protocol keeps (its connection_made)
    ("stun_protocol", "transport"),
    # mediaserver/sockets.py drain_reads: asyncio's own datagram transport (Python's privates,
    # the same risk at a Python upgrade; the contract test also checks _read_ready reads one)
    ("asyncio.selector_events", "_SelectorDatagramTransport"),
    ("udp", "_sock_fd"),
    ("udp", "_conn_lost"),
    ("udp", "_protocol"),
    ("udp", "_fatal_error"),
    ("udp", "max_size"),
    ("udp", "_read_ready"),
    ("loop", "_add_reader"),
    # bench/education.py sent_packets: what the presenter's aiortc sender counted (its uplink
    # loss would read 0% if this moved)
    ("sender", "_RTCRtpSender__packet_count"),
)


class SenderHooks(Protocol):
    """What an :class:`SfuRtpSender` asks of the down-track that drives it."""

    def on_negotiated(
        self,
        payload_type: int,
        rtx_payload_type: int | None,
        mid_extension: tuple[int, str] | None = None,
        abs_send_time_id: int | None = None,
    ) -> None:
        """The codec the subscriber accepted; ``mid_extension`` is (extension id, mid) when it
        negotiated the ``sdes:mid`` header extension, ``abs_send_time_id`` the id of the
        ``abs-send-time`` one (a receiver estimates bandwidth from it and sends REMB)."""

    def on_nack(self, sequence_numbers: list[int]) -> None: ...

    def on_keyframe_request(self) -> None: ...

    def on_remb(self, bitrate: int) -> None:
        """The subscriber's receiver-estimated maximum bitrate for this stream (bits/s)."""

    def on_receiver_report(self, fraction_lost: float, highest: int, lost: int) -> None:
        """The subscriber's receiver report for this stream: the fraction (0-1) lost since
        its previous one, the extended highest sequence number received and the cumulative
        number lost (RFC 3550 6.4.1)."""

    def sender_report(self) -> tuple[int, int, int, int] | None:
        """(ntp_timestamp, rtp_timestamp, packet_count, octet_count), or None before media."""


# What a receiver hands its sink: the fast ingress's own parse (rtp.ReceivedPacket), or
# aiortc's packet on aiortc's path (the first packet of a transport, RTX unwrapped by aiortc's
# unwrap_rtx). Both have the fields a sink reads under the same names.
ReceivedRtp = RtpPacket | rtp.ReceivedPacket


class ReceiverSink(Protocol):
    def on_rtp(self, packet: ReceivedRtp) -> None: ...

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None: ...


class BitrateLimit(Protocol):
    """A sink that also caps the REMB its publisher is sent (by its subscribers' links)."""

    def publisher_bitrate(self, uplink_bps: int | None) -> int | None:
        """The REMB for the publisher: ``uplink_bps`` (the SFU's estimate of its uplink; None
        for a publisher with TWCC, whose own estimator measures it) lowered to what the
        subscribers take; None: no cap at all."""


# A publisher's packet still missing is NACKed again at most this often (seconds). aiortc's
# own NackGenerator NACKs only when a new gap opens, so a lost retransmission would stay lost
# until the next loss; this retries it on the next packets instead, about once per round trip.
NACK_RETRY = 0.1
# A packet is asked for at most this many times: one the publisher no longer has (its history
# is short) is not asked for again and again, which would only load a link already in trouble.
NACK_MAX_TRIES = 10


class WindowRate:
    """aiortc's ``RateCounter`` (the REMB estimator's incoming rate), same figures, less work.

    aiortc keeps 1,000 one-millisecond bucket objects and, at every call, walks one bucket per
    millisecond elapsed since the previous call to empty the old ones (twice per estimator
    update: about 70 bucket visits a video frame at 30 fps, more after a pause). This keeps
    one (time, bytes) entry per ``add`` (once a frame) and drops the entries that left the
    window. ``rate`` is aiortc's formula over the same window: the bytes of the last
    ``window_size`` ms, scaled, divided by the active window (from the oldest millisecond
    still counted, at most ``window_size``). Times move forward here (one receiver's arrival
    clock); one before the window's start (a clock stepped back) is counted at the start.
    """

    __slots__ = ("_count", "_entries", "_origin_ms", "_scale", "_total", "_window_size")

    def __init__(self, window_size: int, scale: int = 8000) -> None:
        self._window_size = window_size
        self._scale = scale
        self._entries: collections.deque[tuple[int, int]] = collections.deque()
        self._origin_ms: int | None = None
        self._total = 0
        self._count = 0

    def add(self, value: int, now_ms: int) -> None:
        if self._origin_ms is None:
            self._origin_ms = now_ms
        else:
            self._erase_old(now_ms)
        self._entries.append((max(now_ms, self._origin_ms), value))
        self._total += value
        self._count += 1

    def rate(self, now_ms: int) -> int | None:
        if self._origin_ms is None:
            return None
        self._erase_old(now_ms)
        active_window_size = now_ms - self._origin_ms + 1
        if self._count > 0 and active_window_size > 1:
            return round(self._scale * self._total / active_window_size)
        return None

    def reset(self) -> None:
        self._entries.clear()
        self._origin_ms = None
        self._total = 0
        self._count = 0

    def _erase_old(self, now_ms: int) -> None:
        origin = now_ms - self._window_size + 1
        if self._origin_ms is None or origin <= self._origin_ms:
            return
        self._origin_ms = origin
        entries = self._entries
        while entries and entries[0][0] < origin:
            self._total -= entries.popleft()[1]
            self._count -= 1


class LeanOveruseEstimator(OveruseEstimator):
    """aiortc's Kalman filter of the delay gradient, its smallest recent frame period found by
    one ``min`` over the history instead of a Python loop calling ``min`` per entry (60 a
    frame, a fifth of the estimator's time); the same figure."""

    def update_min_frame_period(self, ts_delta: float) -> float:
        history = self.ts_delta_hist
        if len(history) >= MIN_FRAME_PERIOD_HISTORY_LENGTH:
            history.pop(0)
        min_frame_period = min(history, default=ts_delta)
        if ts_delta < min_frame_period:
            min_frame_period = ts_delta
        history.append(ts_delta)
        return min_frame_period


# The server's DTLS certificate is renewed for new connections once it is this old (aiortc's
# certificates are valid for 30 days; a connection keeps the one it started with).
CERTIFICATE_RENEWAL = 24 * 3600.0


class ServerCertificate(RTCCertificate):
    """The one DTLS certificate of the server's peer connections, with one OpenSSL context
    per set of SRTP profiles and its fingerprints computed once.

    aiortc makes a certificate (a P-256 key, about 4 KiB in OpenSSL) for every peer connection
    and an ``SSL_CTX`` (about 20 KiB) for every DTLS transport; a server participant has two of
    each (publisher and subscriber connection). A media server needs one: Janus and mediasoup
    use one certificate for all their connections, and a peer checks the fingerprint of the
    answer it was given, which is the same for all. The context also gets
    ``SSL_MODE_RELEASE_BUFFERS``: after the handshake a server's DTLS carries almost nothing
    (the SRTP keys come out of it; media goes through libsrtp, not OpenSSL), so OpenSSL may
    free each connection's read and write buffers while they are empty (about 40 KiB a
    connection otherwise kept for good). Nothing else about the handshake changes: the
    context is made by aiortc's own ``_create_ssl_context``."""

    def __init__(self, key: Any, cert: Any, made: float) -> None:
        super().__init__(key, cert)
        self.made = made
        self._contexts: dict[tuple[bytes, ...], SSL.Context] = {}
        self._fingerprints: list[RTCDtlsFingerprint] | None = None

    def getFingerprints(self) -> list[RTCDtlsFingerprint]:
        if self._fingerprints is None:
            self._fingerprints = super().getFingerprints()
        return list(self._fingerprints)

    def _create_ssl_context(self, srtp_profiles: list[Any]) -> SSL.Context:
        key = tuple(profile.openssl_profile for profile in srtp_profiles)
        context = self._contexts.get(key)
        if context is None:
            context = super()._create_ssl_context(srtp_profiles)
            context.set_mode(SSL.MODE_RELEASE_BUFFERS)
            self._contexts[key] = context
        return context


_server_certificate: ServerCertificate | None = None


def server_certificate(now: float | None = None) -> ServerCertificate:
    """The server's current DTLS certificate, made at first use and renewed once it is
    :data:`CERTIFICATE_RENEWAL` old (``now``: ``time.time()``, or the test's clock)."""
    global _server_certificate
    now = time.time() if now is None else now
    current = _server_certificate
    if current is None or not 0 <= now - current.made < CERTIFICATE_RENEWAL:
        made = RTCCertificate.generateCertificate()
        current = ServerCertificate(made._key, made._cert, now)
        _server_certificate = current
    return current


def share_server_certificate(pc: aiortc.RTCPeerConnection, now: float | None = None) -> None:
    """Give a server peer connection, before its first negotiation, the server's certificate
    (:class:`ServerCertificate`) instead of the one aiortc made for it."""
    pc._RTCPeerConnection__certificates = [server_certificate(now)]  # type: ignore[attr-defined]


def lean_estimator() -> RemoteBitrateEstimator:
    """aiortc's REMB estimator (its arrival groups, Kalman filter, overuse detector and AIMD
    rate control, unchanged in what they compute) with :class:`WindowRate` for its incoming
    rate and :class:`LeanOveruseEstimator` for its filter."""
    estimator = RemoteBitrateEstimator()
    estimator.incoming_bitrate = WindowRate(1000, 8000)  # type: ignore[assignment]
    estimator.estimator = LeanOveruseEstimator()
    return estimator


class LeanNackGenerator(NackGenerator):
    """aiortc's NACK generator, its truncation skipped when nothing is missing (most packets):
    aiortc's copies the missing set and computes its window at every packet. The same set.
    ``add`` is aiortc's with its 16-bit comparisons inlined (a call each per number)."""

    def add(self, packet: ReceivedRtp) -> bool:  # type: ignore[override]
        seq = packet.sequence_number
        max_seq = self.max_seq
        if max_seq is None:
            self.max_seq = seq
            return False
        missed = False
        ahead = (seq - max_seq) & 0xFFFF
        if 0 < ahead < 0x8000:  # aiortc's uint16_gt(seq, max_seq)
            if ahead > 1:
                missing = self.missing
                for k in range(1, ahead):
                    missing.add((max_seq + k) & 0xFFFF)
                missed = True
            self.max_seq = seq
        else:
            self.missing.discard(seq)
        self.truncate()
        return missed

    def truncate(self) -> None:
        if self.missing:
            super().truncate()


class LeanStreamStatistics(StreamStatistics):
    """aiortc's receiver-report statistics with its per-packet ``add`` inlined: the 16-bit
    comparison without a call, fewer attribute reads. The same counters and the same jitter
    (RFC 3550 A.8, on the arrival clock aiortc uses: ``time.time()`` in the codec's units);
    what a receiver report is built from (``fraction_lost``, ``packets_lost``, ``jitter``) is
    aiortc's, read when the report is built."""

    def add(self, packet: ReceivedRtp) -> None:  # type: ignore[override]
        seq = packet.sequence_number
        max_seq = self.max_seq
        received = self.packets_received = self.packets_received + 1
        if max_seq is None:
            self.base_seq = seq
        elif not 0 < (seq - max_seq) & 0xFFFF < 0x8000:  # not aiortc's uint16_gt(seq, max)
            return
        arrival = int(time.time() * self._clockrate)
        if max_seq is not None and seq < max_seq:
            self.cycles += 1 << 16
        self.max_seq = seq
        timestamp = packet.timestamp
        last_timestamp, last_arrival = self._last_timestamp, self._last_arrival
        if (
            timestamp != last_timestamp
            and received > 1
            and last_timestamp is not None
            and last_arrival is not None
        ):
            diff = abs((arrival - last_arrival) - (timestamp - last_timestamp))
            self._jitter_q4 += diff - ((self._jitter_q4 + 8) >> 4)
        self._last_arrival = arrival
        self._last_timestamp = timestamp


class SfuRtpReceiver(RTCRtpReceiver):
    """A receiver that forwards packets instead of decoding them once a sink is attached."""

    _sfu_sink: ReceiverSink | None = None
    _last_nack = -1e9
    _nack_tries: dict[int, int] | None = None
    _remb_bytes = 0  # of the video frame whose last packet has not arrived yet
    _pending_remb: RtcpPsfbPacket | None = None
    _pending_nack: tuple[int, list[int]] | None = None
    _fast_tried = False
    nacks_sent = 0  # NACK messages to the publisher
    remb_sent: int | None = None  # the last REMB sent to the publisher (bits/s)
    _remb_wanted = False  # a video receiver: its estimator is made at its first packet
    _decoderless = False  # receive() started no decoder thread (the SFU forwards)
    _track_ended = False
    # the transport's TWCC arrivals (TransportFeedback) when the publisher negotiated them:
    # the publisher's own estimator then sets its rate, and the REMB is only the subscribers' cap
    _twcc: twcc.TwccRecorder | None = None

    def __init__(self, kind: str, transport: RTCDtlsTransport) -> None:
        super().__init__(kind, transport)
        self.sfu_kind = kind
        # aiortc makes a REMB estimator for every video receiver, 1,000 rate buckets (about
        # 100 KiB and 1,000 objects for the garbage collector to walk); a server has one per
        # video transceiver of every connection, and most (a subscriber's) never get a packet
        estimator = "_RTCRtpReceiver__remote_bitrate_estimator"
        self._remb_wanted = getattr(self, estimator) is not None
        setattr(self, estimator, None)
        nack = "_RTCRtpReceiver__nack_generator"
        if getattr(self, nack) is not None:
            setattr(self, nack, LeanNackGenerator())

    def _estimator(self) -> RemoteBitrateEstimator | None:
        name = "_RTCRtpReceiver__remote_bitrate_estimator"
        estimator: RemoteBitrateEstimator | None = getattr(self, name)
        if estimator is None and self._remb_wanted:
            estimator = lean_estimator()
            setattr(self, name, estimator)
        return estimator

    def attach_sink(self, sink: ReceiverSink) -> None:
        self._sfu_sink = sink

    async def receive(self, parameters: RTCRtpReceiveParameters) -> None:
        """aiortc's ``receive``, without its decoder thread when the SFU forwards.

        aiortc starts a thread per receiver that waits for encoded frames to decode (its stack,
        its own malloc arena, one more thread for the kernel); the SFU never decodes what it
        forwards. aiortc calls this once DTLS is connected, after the participant attached its
        sink (on the remote description): a receiver with a sink then gets aiortc's routing and
        its receiver-report task, and no thread. One without a sink (an aiortc peer in the same
        process: tests, the bench) gets aiortc's own ``receive``, thread and all.
        """
        if self._sfu_sink is None or self._RTCRtpReceiver__started:  # type: ignore[attr-defined,has-type]
            await super().receive(parameters)
            return
        codecs = self._RTCRtpReceiver__codecs  # type: ignore[attr-defined]
        for codec in parameters.codecs:
            codecs[codec.payloadType] = codec
        rtx_ssrc = self._RTCRtpReceiver__rtx_ssrc  # type: ignore[attr-defined]
        for encoding in parameters.encodings:
            if encoding.rtx:
                rtx_ssrc[encoding.rtx.ssrc] = encoding.ssrc
        self._decoderless = True
        self.transport._register_rtp_receiver(self, parameters)
        if any(ext.uri == twcc.TWCC_URI for ext in parameters.headerExtensions):
            TransportFeedback.attach(self, [e.ssrc for e in parameters.encodings])
        self._RTCRtpReceiver__rtcp_task = asyncio.ensure_future(self._run_rtcp())
        self._RTCRtpReceiver__started = True

    def _end_track(self) -> None:
        """What aiortc's decoder thread does as it exits: the remote track's ``recv`` ends."""
        if self._decoderless and not self._track_ended and self._track is not None:
            self._track_ended = True
            self._track._queue.put_nowait(None)

    async def stop(self) -> None:
        await super().stop()
        self._end_track()
        await TransportFeedback.detach(self)

    def _handle_disconnect(self) -> None:
        super()._handle_disconnect()
        self._end_track()

    def detach_sink(self) -> None:
        self._sfu_sink = None

    async def send_pli(self, media_ssrc: int) -> None:
        """Ask the publisher for a keyframe (RTCP PLI)."""
        await self._send_rtcp_pli(media_ssrc)

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        await super()._handle_rtcp_packet(packet)
        sink = self._sfu_sink
        if sink is not None and isinstance(packet, RtcpSrPacket):
            info = packet.sender_info
            sink.on_sender_report(info.ntp_timestamp, info.rtp_timestamp)

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        sink = self._sfu_sink
        if sink is None:
            self._record_twcc(packet)
            self._estimator()
            await super()._handle_rtp_packet(packet, arrival_time_ms)
            return
        forward = self._ingest(packet, arrival_time_ms)
        remb, nack = self._pending_remb, self._pending_nack
        if remb is not None:
            self._pending_remb = None
            await self._send_rtcp(remb)
        if nack is not None:
            self._pending_nack = None
            await self._send_rtcp_nack(*nack)
        if forward is not None:
            sink.on_rtp(forward)
        if not self._fast_tried:
            # the first packet through aiortc's queue and tasks: from now on, this transport's
            # packets are taken in the socket's callback (FastIngress)
            self._fast_tried = True
            FastIngress.install(self)

    def _record_twcc(self, packet: ReceivedRtp) -> twcc.TwccRecorder | None:
        """The packet's transport-wide number and arrival to the transport's recorder (TWCC
        negotiated); returns the recorder, or None."""
        recorder = self._twcc
        if recorder is not None:
            recorder.on_packet(packet.extensions.transport_sequence_number, twcc.arrival_ns())
        return recorder

    def _ingest(self, packet: ReceivedRtp, arrival_time_ms: int) -> ReceivedRtp | None:
        """What a received packet needs for forwarding and feedback, synchronously: the REMB
        estimate fed once a video frame, receiver-report statistics, the NACK decision (left
        in ``_pending_remb`` / ``_pending_nack`` for the caller to send), RTX unwrapped.
        Returns the packet to forward, or None."""
        # TWCC first: every packet's arrival, RTX too, forwarded or not: a number inside the
        # reported range that was not recorded would be reported lost (review 10)
        twcc_arrivals = self._record_twcc(packet)
        if not self._enabled:
            return None
        codec = self._RTCRtpReceiver__codecs.get(packet.payload_type)  # type: ignore[attr-defined]
        if codec is None:
            return None

        # Feed the uplink bandwidth estimate (REMB back to the publisher) once a video frame
        # (its last packet, with the frame's bytes) rather than once a packet: the estimator's
        # arrival groups are 5 ms bursts of send time, which a frame's packets are, and its
        # incoming rate counts the same bytes. Audio packets are frames of their own. Not with
        # TWCC: the publisher's own estimator has the feedback (TransportFeedback sends the cap).
        abs_send_time = packet.extensions.abs_send_time if twcc_arrivals is None else None
        estimator = self._estimator() if abs_send_time is not None else None
        if estimator is not None and abs_send_time is not None:
            size = self._remb_bytes + len(packet.payload) + packet.padding_size
            if packet.marker or codec.mimeType[:6] != "video/":
                self._remb_bytes = 0
                remb = estimator.add(
                    abs_send_time=abs_send_time,
                    arrival_time_ms=arrival_time_ms,
                    payload_size=size,
                    ssrc=packet.ssrc,
                )
                rtcp_ssrc = self._RTCRtpReceiver__rtcp_ssrc  # type: ignore[attr-defined]
                if remb is not None and rtcp_ssrc is not None:
                    bitrate, ssrcs = remb
                    # what the uplink delivers, lowered to what the subscribers' links take
                    # (mediaserver.congestion.publisher_target), so the encoder follows them
                    limit = getattr(self._sfu_sink, "publisher_bitrate", None)
                    capped = limit(bitrate) if limit is not None else None
                    if capped is not None:
                        bitrate = int(capped)
                    self.remb_sent = bitrate
                    self._pending_remb = RtcpPsfbPacket(
                        fmt=RTCP_PSFB_APP,
                        ssrc=rtcp_ssrc,
                        media_ssrc=0,
                        fci=pack_remb_fci(bitrate, ssrcs),
                    )
            else:
                self._remb_bytes = size

        # Receiver-report statistics, per SSRC (RTX included, as aiortc counts them).
        streams = self._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
        stats = streams.get(packet.ssrc)
        if stats is None:
            stats = streams[packet.ssrc] = LeanStreamStatistics(codec.clockRate)
        stats.add(packet)

        if codec.mimeType[-4:].lower() == "/rtx":  # is_rtx, without its lower() of the whole
            original_ssrc = self._RTCRtpReceiver__rtx_ssrc.get(packet.ssrc)  # type: ignore[attr-defined]
            apt = codec.parameters.get("apt")
            if original_ssrc is None or len(packet.payload) < 2 or not isinstance(apt, int):
                return None
            # aiortc's unwrap reads only fields both packet types have
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=original_ssrc)  # type: ignore[arg-type]

        nack = self._RTCRtpReceiver__nack_generator  # type: ignore[attr-defined]
        if nack is not None:
            missed = nack.add(packet)
            if not nack.missing:
                if self._nack_tries:
                    self._nack_tries.clear()
            else:
                now = time.monotonic()
                if missed or now - self._last_nack >= NACK_RETRY:
                    self._last_nack = now
                    tries = self._nack_tries
                    if tries is None:
                        tries = self._nack_tries = {}
                    for seq in [s for s in tries if s not in nack.missing]:
                        del tries[seq]  # arrived, or too old to track
                    wanted = []
                    for seq in sorted(nack.missing):
                        count = tries.get(seq, 0)
                        if count < NACK_MAX_TRIES:
                            tries[seq] = count + 1
                            wanted.append(seq)
                    if wanted:
                        self.nacks_sent += 1
                        self._pending_nack = (packet.ssrc, wanted)
        return packet

    def _ingest_now(self, packet: ReceivedRtp, arrival_time_ms: int, ingress: FastIngress) -> None:
        """:meth:`_ingest` and the feedback it asks for, sent at once (the fast ingress)."""
        sink = self._sfu_sink
        forward = self._ingest(packet, arrival_time_ms)
        remb, nack = self._pending_remb, self._pending_nack
        if remb is not None:
            self._pending_remb = None
            ingress.send_rtcp(bytes(remb))
        if nack is not None:
            self._pending_nack = None
            rtcp_ssrc = self._RTCRtpReceiver__rtcp_ssrc  # type: ignore[attr-defined]
            if rtcp_ssrc is not None:
                feedback = RtcpRtpfbPacket(
                    fmt=RTCP_RTPFB_NACK, ssrc=rtcp_ssrc, media_ssrc=nack[0], lost=nack[1]
                )
                ingress.send_rtcp(bytes(feedback))
        if forward is not None and sink is not None:
            sink.on_rtp(forward)


_NTP_EPOCH_MS = 2208988800 * 1000  # aiortc.clock.current_ms() counts from 1900
# per datagram, one global each instead of an attribute lookup or a slice and a call more
_CONNECTED = State.CONNECTED
_unpack_ssrc = struct.Struct("!I").unpack_from


class FastIngress:
    """Received SRTP taken in the socket's callback, for the SFU's receivers.

    aiortc hands every datagram from the socket through aioice (a failed STUN parse, a queue)
    to a task per transport, which awaits three coroutines per packet before the receiver
    sees it. For RTP on a connected DTLS transport whose SSRC is routed to an
    :class:`SfuRtpReceiver` with a sink, this does the same work (SRTP unprotect, parse, the
    router's SSRC and payload-type check) directly in ``datagram_received`` and calls the
    receiver synchronously; its feedback (REMB, NACK) is protected and written to the socket
    at once. RTCP is taken too where the SFU drives every receiver and sender of the
    transport (:meth:`handle_rtcp`). Everything else (STUN, DTLS, unknown SSRCs, a closing
    transport, a receiver that decodes) goes on aiortc's own path, unchanged.
    """

    __slots__ = (
        "addr",
        "dtls",
        "extension_ids",
        "protocol",
        "router",
        "rtcp_taken",
        "srtp",
        "taken",
        "unprotect",
    )

    def __init__(self, dtls: RTCDtlsTransport, protocol: Any, addr: tuple[str, int]) -> None:
        self.dtls = dtls
        self.protocol = protocol
        self.addr = addr
        self.router = dtls._rtp_router
        self.srtp = dtls._rx_srtp
        self.unprotect = _direct_unprotect(self.srtp)
        # the ids negotiated for the header extensions (aiortc's map configures this same
        # object again at each negotiation, so a renegotiated id is read here too)
        extensions_map = dtls._rtp_header_extensions_map
        self.extension_ids = extensions_map._HeaderExtensionsMap__ids  # type: ignore[attr-defined]
        self.taken = 0  # RTP packets handed to a receiver here
        self.rtcp_taken = 0  # RTCP datagrams handled here

    @staticmethod
    def install(receiver: SfuRtpReceiver | SfuRtpSender) -> bool:
        """Take the packets of ``receiver``'s (or a sender's) transport in its socket's
        callback; False when that is not possible (not connected, a relayed pair).
        Idempotent per transport."""
        dtls = getattr(receiver, "transport", None)  # None too for a receiver built by hand
        if dtls is None or dtls._state != State.CONNECTED or dtls._rx_srtp is None:
            return False
        if getattr(dtls, "_remotecase_fast", None) is not None:
            return True
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None or type(pair.protocol) is not aioice.ice.StunProtocol:
            return False
        ingress = FastIngress(dtls, pair.protocol, pair.remote_addr)
        _tap(pair.protocol).fast = ingress
        dtls._remotecase_fast = ingress  # type: ignore[attr-defined]
        return True

    def handle(self, data: bytes) -> bool:
        """True when the datagram was taken here (or dropped, as aiortc drops bad SRTP)."""
        if len(data) < 12 or not 127 < data[0] < 192:
            return False  # not RTP or RTCP (STUN, DTLS)
        if 191 < data[1] < 224:  # RTCP (payload types 192-223)
            return 199 < data[1] < 207 and self.handle_rtcp(data)
        if self.dtls._state is not _CONNECTED:
            return False
        router = self.router
        receiver = router.ssrc_table.get(_unpack_ssrc(data, 8)[0])
        if (
            type(receiver) is not SfuRtpReceiver
            or receiver._sfu_sink is None
            or receiver not in router.payload_type_table.get(data[1] & 0x7F, ())
        ):
            return False
        arrival_time_ms = int(time.time() * 1000) + _NTP_EPOCH_MS
        clear = self.unprotect(data)
        if clear is None:
            return True  # as aiortc: what fails authentication or replay is dropped
        ids = self.extension_ids
        packet = rtp.parse_received(clear, ids.abs_send_time, ids.transport_sequence_number)
        if packet is None:
            return True  # malformed: dropped, as aiortc drops what its parse refuses
        self.taken += 1
        receiver._ingest_now(packet, arrival_time_ms, self)
        return True

    def parse(self, clear: bytes) -> rtp.ReceivedPacket | None:
        """An unprotected RTP packet of this transport, parsed as :meth:`handle` does."""
        ids = self.extension_ids
        return rtp.parse_received(clear, ids.abs_send_time, ids.transport_sequence_number)

    def handle_rtcp(self, data: bytes) -> bool:
        """A compound RTCP packet (its first is a sender report 200 to a payload-specific
        feedback 206) for a transport where the SFU drives everything: each packet goes, as
        aiortc's ``_handle_rtcp_data`` sends it, to the receivers and senders its SSRCs name,
        synchronously. False (aiortc's own path) when the transport has any receiver or
        sender the SFU does not drive (an aiortc peer's, a receiver that decodes): their
        handlers may wait, and an SRTCP packet can be unprotected only once."""
        dtls = self.dtls
        if dtls._state is not _CONNECTED:
            return False
        router = self.router
        for receiver in router.ssrc_table.values():
            if type(receiver) is not SfuRtpReceiver or not receiver._decoderless:
                return False
        for sender in router.senders.values():
            if type(sender) is not SfuRtpSender or sender._sfu_hooks is None:
                return False
        try:
            clear = self.srtp.unprotect_rtcp(data)
        except pylibsrtp.Error:
            return True  # as aiortc: dropped
        try:
            packets = RtcpPacket.parse(clear)
        except ValueError:
            return True
        self.rtcp_taken += 1
        for packet in packets:
            for recipient in router.route_rtcp(packet):
                _run_now(recipient._handle_rtcp_packet(packet))
        return True

    def send_rtcp(self, payload: bytes) -> None:
        dtls = self.dtls
        transport = self.protocol.transport
        if dtls._state is not _CONNECTED or transport is None:
            return  # as aiortc: feedback on a closing transport is dropped
        transport.sendto(dtls._tx_srtp.protect_rtcp(payload), self.addr)


def _direct_unprotect(session: pylibsrtp.Session) -> Callable[[bytes], bytes | None]:
    """``session.unprotect`` without pylibsrtp's wrapper: the datagram into the session's own
    buffer, libsrtp's ``srtp_unprotect`` there, the clear packet copied out; None for what
    pylibsrtp would raise on (a failed authentication, a replay, a datagram longer than the
    buffer). The wrapper's type and length checks, its ``ffi.new`` per call and its status
    check cost about as much as the decryption of a 1,100-byte packet itself. The same buffer
    pylibsrtp uses: everything that touches it runs on the event loop's thread, one call at a
    time. The function keeps ``session`` (and so the libsrtp context) alive: without it,
    a session nobody else holds frees its context under the function (a crash)."""
    from pylibsrtp import _binding

    ffi, lib = _binding.ffi, _binding.lib
    cdata, buffer, context = session._cdata, session._buffer, session._srtp[0]  # type: ignore[attr-defined]
    room = len(buffer)
    length = ffi.new("int *")
    srtp_unprotect = lib.srtp_unprotect

    def unprotect(data: bytes, _session: pylibsrtp.Session = session) -> bytes | None:
        size = len(data)
        if size > room:
            return None
        buffer[0:size] = data
        length[0] = size
        if srtp_unprotect(context, cdata, length):
            return None
        clear: bytes = buffer[0 : length[0]]
        return clear

    return unprotect


def _run_now(handler: Coroutine[Any, Any, None]) -> None:
    """Run an RTCP handler of an SFU receiver or sender to its end, here: they never wait (the
    SFU's call sync hooks; aiortc's parts they reach, receiver reports and sender-report
    statistics, await nothing, and a receiver without a decoder thread has none to join).
    One that would wait is closed and logged rather than left half-run."""
    try:
        handler.send(None)
    except StopIteration:
        return
    except Exception:
        logger.exception("RTCP handler failed")
        return
    handler.close()
    logger.error("an RTCP handler waited on the fast path (aiortc changed?); packet lost")


# A publisher with TWCC is sent REMB only as its subscribers' cap, computed once every
# CAP_INTERVAL and sent then while there is one (a REMB can be lost); and, once a
# cap was sent, NO_CAP_BPS when the subscribers no longer limit it (a REMB holds until the next).
CAP_INTERVAL = 1.0
CAP_STEP = 0.1
NO_CAP_BPS = 20_000_000


class TransportFeedback:
    """TWCC feedback for one publisher transport (shared by its receivers: the sequence is
    transport-wide), and the REMB that caps it.

    The receivers append each packet's arrival to one :class:`twcc.TwccRecorder`; a task of
    this object (its owner; the last receiver's ``stop`` closes it, and it ends by itself once
    the transport closes) builds the feedback every ``twcc.FEEDBACK_INTERVAL`` and sends it,
    with the REMB cap (``publisher_bitrate(None)`` of the video receivers' sinks) beside it.
    """

    def __init__(self, dtls: RTCDtlsTransport) -> None:
        self.dtls = dtls
        self.recorder = twcc.TwccRecorder(origin_ns=time.monotonic_ns())
        self.receivers: list[SfuRtpReceiver] = []
        self.media_ssrcs: dict[SfuRtpReceiver, list[int]] = {}
        self.cap_sent: int | None = None  # the last REMB cap sent (NO_CAP_BPS: lifted)
        self.caps_sent = 0
        self._cap_time = -1e9
        self._cap_eval = -1e9  # when the cap was last computed (CAP_INTERVAL)
        self._closed = False
        self.errors = 0  # rounds that failed (logged once; the task goes on)
        self._tasks = TaskSet("twcc feedback", logger)
        self._task = self._tasks.spawn(self._run(), "feedback")

    @staticmethod
    def attach(receiver: SfuRtpReceiver, ssrcs: list[int]) -> TransportFeedback:
        dtls = receiver.transport
        feedback: TransportFeedback | None = getattr(dtls, "_remotecase_twcc", None)
        if feedback is None or feedback._closed:
            feedback = TransportFeedback(dtls)
            dtls._remotecase_twcc = feedback  # type: ignore[attr-defined]
        if receiver not in feedback.receivers:
            feedback.receivers.append(receiver)
        feedback.media_ssrcs[receiver] = ssrcs
        if ssrcs and not feedback.recorder.media_ssrc:
            feedback.recorder.media_ssrc = ssrcs[0]
        receiver._twcc = feedback.recorder
        return feedback

    @staticmethod
    async def detach(receiver: SfuRtpReceiver) -> None:
        """``receiver`` stopped; the last one closes the feedback."""
        if receiver._twcc is None:
            return
        receiver._twcc = None
        feedback: TransportFeedback | None = getattr(receiver.transport, "_remotecase_twcc", None)
        if feedback is None:
            return
        if receiver in feedback.receivers:
            feedback.receivers.remove(receiver)
        feedback.media_ssrcs.pop(receiver, None)
        if not feedback.receivers:
            await feedback.close()

    async def close(self) -> None:
        """Idempotent."""
        if self._closed:
            return
        self._closed = True
        # the set cancels and awaits it; whatever it ended with was logged there, never
        # re-raised into the receiver's stop (the participant's ordered close)
        await self._tasks.close()

    async def _run(self) -> None:
        dtls = self.dtls
        while True:
            await asyncio.sleep(twcc.FEEDBACK_INTERVAL)
            if dtls._state in (State.CLOSED, State.FAILED):
                return
            if dtls._state != State.CONNECTED or not self.receivers:
                continue
            rtcp_ssrc = self.receivers[0]._RTCRtpReceiver__rtcp_ssrc  # type: ignore[attr-defined]
            self.recorder.sender_ssrc = rtcp_ssrc or 0
            try:
                for packet in self.recorder.build(time.monotonic_ns()):
                    await self._send(packet)
                now = time.monotonic()
                # the cap walks every subscriber's link (publisher_target): once a second at
                # most, not at every feedback (review 10: a large room's presenter)
                if now - self._cap_eval >= CAP_INTERVAL:
                    self._cap_eval = now
                    remb = self._cap(rtcp_ssrc or 0, now)
                    if remb is not None:
                        await self._send(remb)
            except ConnectionError:
                continue  # closing: the next round sees the state
            except Exception:
                # without feedback Chromium's estimator backs off to a postage stamp: log the
                # first, count the rest, and go on with the next round
                self.errors += 1
                if self.errors == 1:
                    logger.exception("transport-cc feedback failed; going on")

    def _cap(self, rtcp_ssrc: int, now: float) -> bytes | None:
        """The REMB to send now, or None."""
        caps: list[int | None] = []
        ssrcs: list[int] = []
        for receiver in self.receivers:
            limit = getattr(receiver._sfu_sink, "publisher_bitrate", None)
            if receiver.sfu_kind != "video" or limit is None:
                continue
            caps.append(limit(None))
            ssrcs += self.media_ssrcs.get(receiver, [])
        cap = sum(c for c in caps if c is not None) if caps and None not in caps else None
        last = self.cap_sent
        if cap is None:
            if last is None:
                return None  # never capped: nothing to lift
            cap = NO_CAP_BPS
        due = now - self._cap_time >= CAP_INTERVAL
        if not due and last is not None and cap >= last * (1 - CAP_STEP):
            return None
        self.cap_sent = cap
        self._cap_time = now
        self.caps_sent += 1
        for receiver in self.receivers:
            if receiver.sfu_kind == "video":
                receiver.remb_sent = cap
        return bytes(
            RtcpPsfbPacket(
                fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(cap, ssrcs)
            )
        )

    async def _send(self, data: bytes) -> None:
        ingress: FastIngress | None = getattr(self.dtls, "_remotecase_fast", None)
        if ingress is not None:
            ingress.send_rtcp(data)
        else:
            await self.dtls._send_rtp(data)  # protected as RTCP (its payload type says so)


def accept_transport_cc(pc: aiortc.RTCPeerConnection, offer: str) -> int:
    """Answer a publisher's offer with transport-wide congestion control where it offers it on
    a video m-line: the ``transport-wide-cc`` header extension (with the offer's id) and
    ``transport-cc`` feedback on each codec that offers it. Call after
    ``setRemoteDescription(offer)``, before ``createAnswer``; aiortc itself knows the
    extension (it parses the sequence number) but never negotiates it. Only for connections
    whose receivers the SFU drives (they send the feedback: :class:`TransportFeedback`).
    Returns how many media sections got it."""
    description = aiortc.sdp.SessionDescription.parse(offer)
    by_mid = {media.rtp.muxId: media for media in description.media}
    accepted = 0
    for transceiver in pc.getTransceivers():
        media = by_mid.get(transceiver.mid or "")
        # video only: with transport-cc on its audio too, Chromium's video encoder stayed at its
        # 30 kbit/s minimum far under the estimate the feedback gave (measured, 5 runs of 6,
        # docs/performance.md "Session 10"); its audio is then left out of the estimate, as
        # libwebrtc does by default for audio without transport-cc
        if (
            media is None
            or media.kind != "video"
            or type(transceiver.receiver) is not SfuRtpReceiver
        ):
            continue
        offered = [e for e in media.rtp.headerExtensions if e.uri == twcc.TWCC_URI]
        mine = transceiver._headerExtensions  # type: ignore[attr-defined]
        if not offered or transceiver.direction not in ("recvonly", "sendrecv"):
            continue
        if not any(e.uri == twcc.TWCC_URI for e in mine):
            mine.append(RTCRtpHeaderExtensionParameters(id=offered[0].id, uri=twcc.TWCC_URI))
        feedback = RTCRtcpFeedback(type="transport-cc")
        remote = {codec.payloadType: codec for codec in media.rtp.codecs}
        for codec in transceiver._codecs:  # type: ignore[attr-defined]
            theirs = remote.get(codec.payloadType)
            if theirs is not None and feedback in theirs.rtcpFeedback:
                if feedback not in codec.rtcpFeedback:
                    codec.rtcpFeedback.append(feedback)
        accepted += 1
    return accepted


class SfuRtpSender(RTCRtpSender):
    """A sender whose packets come from a forwarding down-track, never from an encoder."""

    _sfu_hooks: SenderHooks | None = None

    def attach_hooks(self, hooks: SenderHooks) -> None:
        self._sfu_hooks = hooks

    def detach_hooks(self) -> None:
        self._sfu_hooks = None

    async def send(self, parameters: RTCRtpSendParameters) -> None:
        hooks = self._sfu_hooks
        if hooks is not None and parameters.codecs and parameters.codecs[0].payloadType is not None:
            primary = parameters.codecs[0]
            rtx_pt = None
            for codec in parameters.codecs:
                if is_rtx(codec) and codec.parameters.get("apt") == primary.payloadType:
                    rtx_pt = codec.payloadType
            mid_ext = None
            abs_id = None
            for ext in parameters.headerExtensions:
                if ext.uri == rtp.MID_URI and parameters.muxId:
                    mid_ext = (ext.id, parameters.muxId)
                elif ext.uri == rtp.ABS_SEND_TIME_URI and self.kind == "video":
                    abs_id = ext.id
            hooks.on_negotiated(parameters.codecs[0].payloadType, rtx_pt, mid_ext, abs_id)
        await super().send(parameters)
        if hooks is not None:
            # aiortc calls send() once DTLS is connected: the subscriber's RTCP (receiver
            # reports, NACK, PLI, REMB) is taken in the socket's callback from now on
            FastIngress.install(self)

    async def _run_rtp(self, codec: Any) -> None:
        if self._sfu_hooks is None:
            await super()._run_rtp(codec)
            return
        # Nothing to encode: packets are written by the down-track. Stay alive so that
        # RTCRtpSender.stop() finds the task it expects, and exit when cancelled.
        self._RTCRtpSender__rtp_started.set()  # type: ignore[attr-defined]
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass
        finally:
            self._RTCRtpSender__rtp_exited.set()  # type: ignore[attr-defined]

    async def _run_rtcp(self) -> None:
        if self._sfu_hooks is None:
            await super()._run_rtcp()
            return
        self._RTCRtpSender__rtcp_started.set()  # type: ignore[attr-defined]
        try:
            while True:
                # RFC 3550 section 6.2: randomize the interval over [0.5, 1.5] of the nominal.
                await asyncio.sleep(0.5 + random.random())
                hooks = self._sfu_hooks
                report = hooks.sender_report() if hooks is not None else None
                if report is None:
                    continue
                ntp, rtp_ts, packets, octets = report
                rtcp: list[AnyRtcpPacket] = [
                    RtcpSrPacket(
                        ssrc=self._ssrc,
                        sender_info=RtcpSenderInfo(
                            ntp_timestamp=ntp,
                            rtp_timestamp=rtp_ts,
                            packet_count=packets & 0xFFFFFFFF,
                            octet_count=octets & 0xFFFFFFFF,
                        ),
                    )
                ]
                # Kept for aiortc's round-trip-time estimate from receiver reports.
                self._RTCRtpSender__lsr = (ntp >> 16) & 0xFFFFFFFF
                self._RTCRtpSender__lsr_time = time.time()
                cname = self._RTCRtpSender__cname  # type: ignore[attr-defined]
                if cname is not None:
                    rtcp.append(
                        RtcpSdesPacket(
                            chunks=[RtcpSourceInfo(ssrc=self._ssrc, items=[(1, cname.encode())])]
                        )
                    )
                await self._send_rtcp(rtcp)
        except asyncio.CancelledError:
            pass
        finally:
            await self._send_rtcp([RtcpByePacket(sources=[self._ssrc])])
            self._RTCRtpSender__rtcp_exited.set()  # type: ignore[attr-defined]

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        hooks = self._sfu_hooks
        if hooks is None:
            await super()._handle_rtcp_packet(packet)
            return
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            if packet.media_ssrc == self._ssrc:
                hooks.on_nack(list(packet.lost))
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            hooks.on_keyframe_request()
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                return  # another application-layer message than REMB
            if self._ssrc in ssrcs:
                hooks.on_remb(bitrate)
        else:
            if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
                for report in packet.reports:
                    if report.ssrc == self._ssrc:
                        hooks.on_receiver_report(
                            report.fraction_lost / 256,
                            report.highest_sequence,
                            report.packets_lost,
                        )
            # receiver reports: aiortc's round-trip time and loss statistics
            await super()._handle_rtcp_packet(packet)


def transport_sender_hooks(sender: Any) -> list[Any]:
    """The SFU hooks (down-tracks) of every sender that shares ``sender``'s DTLS transport
    (aiortc's private ``_rtp_router``: one transport per peer connection when bundled)."""
    transport = getattr(sender, "transport", None)
    router = getattr(transport, "_rtp_router", None)
    if router is None:
        return []
    return [
        hooks
        for other in router.senders.values()
        if (hooks := getattr(other, "_sfu_hooks", None)) is not None
    ]


class RtpWriter(Protocol):
    """Builds, protects and sends one RTP packet (the arguments of :func:`rtp.build_packet`)."""

    def __call__(
        self,
        payload_type: int,
        marker: int,
        sequence_number: int,
        timestamp: int,
        ssrc: int,
        payload: bytes,
        padding: int = 0,
    ) -> None: ...


_HEADER = struct.Struct("!BBHII")


def fast_rtp_writer(
    dtls: RTCDtlsTransport,
    tasks: TaskSet,
    extension: bytes = b"",
    abs_at: int | None = None,
    drops: SendDrops | None = None,
) -> RtpWriter:
    """A synchronous function that builds one RTP packet, protects it and sends it.

    aiortc's ``_send_rtp`` goes through three coroutines per packet. This resolves the
    nominated ICE pair once, and per packet writes the 12-byte header and the payload straight
    into the SRTP session's own buffer, protects it there with libsrtp and hands that buffer to
    the socket: no intermediate packet, no copy out of the buffer, no asyncio datagram
    transport in between (about 1.4 us less per copy than ``protect`` then ``sendto``). A full
    socket buffer drops the packet where asyncio's transport would queue it (an SFU drops;
    NACKs recover video). Raises ConnectionError while DTLS is not connected. Relayed (TURN)
    pairs wrap data in their own framing, so they take aiortc's path through a task instead,
    one per packet, owned by ``tasks`` (once that set is closing, such packets are dropped).
    ``extension``: a header extension block every packet carries (:func:`rtp.extension_block`);
    ``abs_at``: where in it each packet's abs-send-time goes (written at the send);
    ``drops``: where the direct writer counts packets a full send buffer refused.
    """
    if dtls._state != State.CONNECTED:
        raise ConnectionError("DTLS not connected")
    session = dtls._tx_srtp
    connection = dtls.transport._connection
    pair = connection._nominated.get(1)
    if pair is None:
        raise ConnectionError("no nominated ICE pair")
    protocol = pair.protocol
    if type(protocol) is aioice.ice.StunProtocol and protocol.transport is not None:
        sock = getattr(protocol.transport, "_sock", None)
        addr = pair.remote_addr
        if isinstance(sock, socket.socket):
            return _direct_writer(session, sock, addr, extension, abs_at, drops)
        udp = protocol.transport
        protect = session.protect

        def write(
            payload_type: int,
            marker: int,
            sequence_number: int,
            timestamp: int,
            ssrc: int,
            payload: bytes,
            padding: int = 0,
        ) -> None:
            udp.sendto(
                protect(
                    rtp.build_packet(
                        payload_type,
                        marker,
                        sequence_number,
                        timestamp,
                        ssrc,
                        payload,
                        padding,
                        _stamped(extension, abs_at),
                    )
                ),
                addr,
            )

        return write

    def write_slow(
        payload_type: int,
        marker: int,
        sequence_number: int,
        timestamp: int,
        ssrc: int,
        payload: bytes,
        padding: int = 0,
    ) -> None:
        if tasks.closed:
            return  # the owner is closing: lost as UDP would lose it
        data = rtp.build_packet(
            payload_type,
            marker,
            sequence_number,
            timestamp,
            ssrc,
            payload,
            padding,
            _stamped(extension, abs_at),
        )
        tasks.spawn(_send_relayed(dtls, data), "relayed rtp")

    return write_slow


def _stamped(extension: bytes, abs_at: int | None) -> bytes:
    """``extension`` with the send time written at ``abs_at``."""
    if abs_at is None:
        return extension
    return extension[:abs_at] + rtp.abs_send_time(time.monotonic()) + extension[abs_at + 3 :]


class SendDrops:
    """RTP packets a direct writer (:func:`_direct_writer`) lost on a full socket send buffer.
    Owned by the down-track whose writer counts into it (``RtpDownTrack.send_drops``) and summed
    by the SFU's stats like its other counters, so /metrics
    (``remotecase_sfu_send_dropped_packets_total``) shows one server's drops, never another's
    in the same process: a subscriber's loss the server caused."""

    __slots__ = ("packets",)

    def __init__(self) -> None:
        self.packets = 0


def _direct_writer(
    session: Any,
    sock: socket.socket,
    addr: tuple[str, int],
    extension: bytes = b"",
    abs_at: int | None = None,
    drops: SendDrops | None = None,
) -> RtpWriter:
    from pylibsrtp import _binding

    counted = SendDrops() if drops is None else drops

    ffi, lib = _binding.ffi, _binding.lib
    cdata, buffer, context = session._cdata, session._buffer, session._srtp[0]
    room = len(buffer) - pylibsrtp.SRTP_MAX_TRAILER_LEN  # as pylibsrtp's own protect checks
    length = ffi.new("int *")
    pack_into, srtp_protect, view, sendto = (
        _HEADER.pack_into,
        lib.srtp_protect,
        ffi.buffer,
        sock.sendto,
    )
    # the bound method also keeps the session, and so the libsrtp context, alive
    protect = session.protect
    first = 0x90 if extension else 0x80  # version 2, and the X bit with an extension
    head = 12 + len(extension)
    stamp = None if abs_at is None else 12 + abs_at
    monotonic = time.monotonic

    def write(
        payload_type: int,
        marker: int,
        sequence_number: int,
        timestamp: int,
        ssrc: int,
        payload: bytes,
        padding: int = 0,
    ) -> None:
        size = head + len(payload)
        if padding or size > room:  # padding-only probes, or too long: the checked path
            data = protect(
                rtp.build_packet(
                    payload_type,
                    marker,
                    sequence_number,
                    timestamp,
                    ssrc,
                    payload,
                    padding,
                    _stamped(extension, abs_at),
                )
            )
        else:
            pack_into(
                buffer, 0, first, (marker << 7) | payload_type, sequence_number, timestamp, ssrc
            )
            if extension:
                buffer[12:head] = extension
                if stamp is not None:  # the send time, 6.18 fixed point (rtp.abs_send_time)
                    buffer[stamp : stamp + 3] = (int(monotonic() * 262144) & 0xFFFFFF).to_bytes(
                        3, "big"
                    )
            buffer[head:size] = payload
            length[0] = size
            status = srtp_protect(context, cdata, length)
            if status:
                raise SrtpError(f"srtp_protect failed with status {status}")
            data = view(cdata, length[0])
        try:
            sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            counted.packets += 1  # the socket buffer is full: lost as UDP would lose it
        except OSError as exc:
            # as asyncio's datagram transport does: an error is reported, not raised; a peer
            # that is gone is noticed by ICE consent checks and closed
            logger.debug("RTP send to %s failed: %s", addr, exc)

    return write


class SrtpError(ConnectionError):
    """libsrtp refused to protect a packet."""


async def _send_relayed(dtls: RTCDtlsTransport, data: bytes) -> None:
    try:
        await dtls._send_rtp(data)
    except Exception as exc:
        # as the direct path: a failed send is lost, not raised; ICE notices a dead peer
        logger.debug("relayed RTP send failed: %s", exc)


class _Tap:
    """What the SFU adds to one ICE socket's ``datagram_received``: a count of every datagram
    (:func:`datagram_counter`, read by the participant's silence watch a few times per
    ``media_timeout``, so a datagram costs one increment, not a callback and a clock read),
    then the fast ingress (:class:`FastIngress`), then aioice."""

    __slots__ = ("count", "draining", "fast", "received")

    def __init__(self, received: Callable[[bytes | str, tuple[Any, ...]], None]) -> None:
        self.count = 0  # datagrams that reached this socket's callback
        self.fast: FastIngress | None = None
        self.received = received
        self.draining = False  # stop_receiving(): what arrives is dropped unread

    def datagram_received(self, data: bytes | str, addr: tuple[Any, ...]) -> None:
        if self.draining:
            return
        self.count += 1
        fast = self.fast
        # only from the address the fast path was set up for: a datagram from another
        # (a newly nominated pair on this socket) takes aiortc's own path
        if fast is not None and addr == fast.addr and isinstance(data, bytes) and fast.handle(data):
            return
        self.received(data, addr)


def _tap(protocol: Any) -> _Tap:
    tap: _Tap | None = getattr(protocol, "_remotecase_tap", None)
    if tap is None:
        tap = _Tap(protocol.datagram_received)
        protocol._remotecase_tap = tap
        protocol.datagram_received = tap.datagram_received
    return tap


def datagram_counter(pc: aiortc.RTCPeerConnection) -> Callable[[], int] | None:
    """A reader of how many datagrams have arrived on the socket of ``pc``'s nominated ICE
    pair (RTP, RTCP, DTLS and STUN alike, counted before aioice handles them); None if there
    is no such socket (not connected, or a relayed pair, whose protocol is aioice's TURN
    client)."""
    for transceiver in pc.getTransceivers():
        dtls = transceiver.sender.transport
        pair = dtls.transport._connection._nominated.get(1) if dtls is not None else None
        if pair is None:
            continue
        protocol = pair.protocol
        if type(protocol) is not aioice.ice.StunProtocol:
            return None
        tap = _tap(protocol)
        return lambda: tap.count
    return None


def _ice_connections(pc: aiortc.RTCPeerConnection) -> list[aioice.Connection]:
    """The ICE connections under ``pc``'s transceivers' and data channel's DTLS transports."""
    transports = [
        dtls
        for transceiver in pc.getTransceivers()
        for dtls in (transceiver.sender.transport, transceiver.receiver.transport)
    ]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    return [dtls.transport._connection for dtls in transports if dtls is not None]


def _socket_transports(
    protocols: Iterable[Any],
) -> list[asyncio.DatagramTransport]:
    """The UDP transports of those of ``protocols`` that are our own sockets (aioice's
    ``StunProtocol``; a TURN relay's is not), each once."""
    out: list[asyncio.DatagramTransport] = []
    seen: set[int] = set()
    for protocol in protocols:
        udp = getattr(protocol, "transport", None)
        if type(protocol) is aioice.ice.StunProtocol and udp is not None and id(udp) not in seen:
            seen.add(id(udp))
            out.append(udp)
    return out


def nominated_datagram_transports(
    pc: aiortc.RTCPeerConnection,
) -> list[asyncio.DatagramTransport]:
    """The UDP transports of ``pc``'s nominated ICE pairs (the sockets its media and DTLS use
    once connected; a relayed pair's is not a socket of ours), each once."""
    return _socket_transports(
        pair.protocol
        for connection in _ice_connections(pc)
        for pair in connection._nominated.values()
    )


def ice_datagram_transports(pc: aiortc.RTCPeerConnection) -> list[asyncio.DatagramTransport]:
    """The UDP transports of every ICE socket of ``pc`` (all its candidates', its transceivers'
    and data channel's; a TURN relay's is not a socket of ours), each once: for
    :mod:`mediaserver.sockets`."""
    return _socket_transports(
        protocol for connection in _ice_connections(pc) for protocol in connection._protocols
    )


def stop_receiving(pc: aiortc.RTCPeerConnection) -> int:
    """Drop, unread, every datagram that arrives from now on on ``pc``'s ICE sockets (all of
    its candidates' sockets, media, DTLS and STUN alike); the number of sockets.

    For a server that stops: a flood of media would otherwise keep its event loop busy with
    packets nobody will forward while it closes its calls (a loaded server once took more than
    a minute to stop). Closing the connection afterwards still sends what it sends (DTLS
    close, SCTP abort); it waits for nothing from the other side.
    """
    sockets = 0
    seen: set[int] = set()
    for transceiver in pc.getTransceivers():
        for dtls in (transceiver.sender.transport, transceiver.receiver.transport):
            if dtls is None or id(dtls) in seen:
                continue
            seen.add(id(dtls))
            for protocol in dtls.transport._connection._protocols:
                _tap(protocol).draining = True
                sockets += 1
    return sockets


# Consent freshness (RFC 7675). aioice 0.13 sends one consent request every 4-6 s without a
# retransmission, gives it 0.5 s, and closes the connection after 6 misses in a row: on a busy
# machine (a Chromium party and the server on two loaded cores) answers came late enough that
# parties were thrown out of calls that worked. As the RFC says, consent is lost only when no
# answer at all came for CONSENT_EXPIRY seconds; each check is retransmitted (RFC 8489 RTO
# doubling from 0.5 s: 0.5, 1, 2, 4 s) so one lost datagram costs nothing. A dead client is
# still noticed within media.media_timeout (10 s) by the participant's silence watch; this is
# the transport's own, last, word.
# aioice's own, kept for the contract test (its signature is the one ours must keep)
AIOICE_QUERY_CONSENT = aioice.Connection.query_consent
CONSENT_INTERVAL = 5.0  # seconds between checks, each drawn from 0.8-1.2 times this
CONSENT_RETRANSMISSIONS = 3
CONSENT_EXPIRY = 30.0


async def query_consent(self: aioice.Connection) -> None:
    """``aioice.Connection.query_consent`` as RFC 7675 has it (installed by :func:`install`)."""
    assert self.remote_password is not None
    loop = asyncio.get_running_loop()
    answered = loop.time()
    while True:
        wait = CONSENT_INTERVAL * (0.8 + 0.4 * random.random())
        await asyncio.sleep(max(0.0, min(wait, answered + CONSENT_EXPIRY - loop.time())))
        for pair in list(self._nominated.values()):
            request = self.build_request(pair, nominate=False)
            try:
                await pair.protocol.request(
                    request,
                    pair.remote_addr,
                    integrity_key=self.remote_password.encode("utf8"),
                    retransmissions=CONSENT_RETRANSMISSIONS,
                )
            except aioice.stun.TransactionError:
                continue
            answered = loop.time()
        silent = loop.time() - answered
        if silent >= CONSENT_EXPIRY:
            logger.warning("ICE consent expired: no answer for %.0f s", silent)
            self._query_consent_task = None
            # the connection failed, whatever its closing looks like (consent_expired)
            self._remotecase_consent_expired = True  # type: ignore[attr-defined]
            await self.close()
            return


def consent_expired(pc: aiortc.RTCPeerConnection) -> bool:
    """Whether one of ``pc``'s ICE connections closed because its consent expired
    (:func:`query_consent`): its peer connection then reads ``closed`` as after a DTLS goodbye,
    but the peer did not leave, its network went."""
    transports = [
        dtls
        for transceiver in pc.getTransceivers()
        for dtls in (transceiver.sender.transport, transceiver.receiver.transport)
    ]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    return any(
        getattr(dtls.transport._connection, "_remotecase_consent_expired", False)
        for dtls in transports
        if dtls is not None
    )


def install() -> None:
    """Make aiortc's peer connections create SFU-capable receivers and senders, and aioice's
    connections keep consent as RFC 7675 does. Idempotent."""
    aiortc.rtcpeerconnection.RTCRtpReceiver = SfuRtpReceiver  # type: ignore[misc]
    aiortc.rtcpeerconnection.RTCRtpSender = SfuRtpSender  # type: ignore[misc]
    aioice.Connection.query_consent = query_consent  # type: ignore[method-assign]


def restrict_host_addresses(addresses: list[str]) -> None:
    """Gather ICE host candidates on exactly these addresses (process-wide in aioice).

    aioice skips 127.0.0.1 and offers no per-connection choice; an empty list restores its
    default of every interface address but loopback.
    """
    original = getattr(aioice.ice, "_remotecase_original_get_host_addresses", None)
    if original is None:
        original = aioice.ice.get_host_addresses
        aioice.ice._remotecase_original_get_host_addresses = original  # type: ignore[attr-defined]
    if not addresses:
        aioice.ice.get_host_addresses = original
        return
    chosen = list(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses
