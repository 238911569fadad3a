"""What a subscriber measures, and the light receive path that lets a generator afford it.

Subscribers count packets without decoding: they read the latency trailer
(:mod:`bench.load.media`) on each frame's last packet and get the end-to-end latency; jitter is
RFC 3550's over frames; loss comes from sequence numbers; time to first frame is the wait for a
whole first keyframe. By default subscribers are light (:func:`light_receive`): they count each
packet in the socket's callback and decrypt only what they read, so that a generator costs a
fraction of what the server does per packet.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mediaserver.rtp import is_vp8_keyframe_start

from .media import trailer_sent_ns


@dataclass
class Receiving:
    """One forwarded track at one subscriber."""

    kind: str = "?"
    first: int | None = None
    highest: int = 0
    count: int = 0
    first_frame_at: float | None = None  # end of the first whole keyframe
    keyframe_started: bool = False
    latencies_ms: list[float] = field(default_factory=list)
    jitter_ms: float = 0.0
    _last_transit: float | None = None

    def packet(self, seq: int, marker: int, payload: bytes) -> None:
        if self.first is None:
            self.first = self.highest = seq
        elif (seq - self.highest) & 0xFFFF < 0x8000:
            self.highest = seq
        self.count += 1
        if not self.keyframe_started and is_vp8_keyframe_start(payload):
            self.keyframe_started = True
        if marker and (sent := trailer_sent_ns(payload)) is not None:
            transit = (time.monotonic_ns() - sent) / 1e6
            self.latencies_ms.append(transit)
            if self._last_transit is not None:  # RFC 3550 6.4.1, in milliseconds
                self.jitter_ms += (abs(transit - self._last_transit) - self.jitter_ms) / 16
            self._last_transit = transit
            # a subscriber sees a picture once a keyframe has arrived whole; a server that
            # forwards from any packet makes its subscribers wait for one just the same
            if self.first_frame_at is None and self.keyframe_started:
                self.first_frame_at = time.monotonic()

    @property
    def expected(self) -> int:
        return 0 if self.first is None else ((self.highest - self.first) & 0xFFFF) + 1


@dataclass
class Member:
    """One participant in a generator: what it receives, and when it started joining."""

    started: float
    sinks: list[LatencySink] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)


class LatencySink:
    """A receiver sink (mediaserver.aiortc_hooks) that measures instead of decoding; it adds
    itself to its owner's ``load_sinks`` (a PeerClient) or ``sinks`` (a Janus :class:`Member`).

    With ``LIGHT`` (the default, ``--receivers light``), the first packet that reaches it the
    ordinary way installs :func:`light_receive` on its peer connection, and from then on its
    packets are counted straight from the datagram."""

    LIGHT = True

    def __init__(self, owner: Any, mid: str | None, pc: Any = None) -> None:
        self.state = Receiving()
        self.video: bool | None = None
        sinks = owner.sinks if isinstance(owner, Member) else owner.load_sinks
        sinks.append(self)
        self._pc = pc if pc is not None else getattr(owner, "subscriber_pc", None)

    def on_rtp(self, packet: Any) -> None:
        self.state.packet(packet.sequence_number, packet.marker, packet.payload)
        if self.LIGHT and self._pc is not None:
            light_receive(self._pc)

    def on_datagram(self, data: bytes, session: Any, receiver: Any) -> None:
        """One SRTP packet of this track, still encrypted. Sequence number and marker are in
        the clear; only what must be read is decrypted: the frame's last packet (the latency
        trailer) and, until it arrives, the start of the first keyframe."""
        if self.video is None:
            self.video = getattr(receiver.track, "kind", "video") == "video"
        state = self.state
        marker = data[1] >> 7
        payload = b""
        if marker or (self.video and not state.keyframe_started):
            try:
                payload = rtp_payload(session.unprotect(data))
            except Exception:  # not authentic, or replayed: not counted
                return
        state.packet((data[2] << 8) | data[3], marker, payload)

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        pass


def rtp_payload(packet: bytes) -> bytes:
    """The payload of a decrypted RTP packet (RFC 3550 5.1: CSRCs, extension, padding)."""
    start = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10 and len(packet) >= start + 4:
        start += 4 + 4 * int.from_bytes(packet[start + 2 : start + 4], "big")
    end = len(packet) - (packet[-1] if packet[0] & 0x20 and packet else 0)
    return packet[start:end] if start <= end else b""


def light_receive(pc: Any) -> None:
    """Count a subscriber's media packets where they arrive, in the UDP socket's callback.

    aiortc hands every received packet through a queue, a coroutine, SRTP, a parser, a router,
    a NACK generator and a bandwidth estimator: about ten times what the server spends to
    forward it, so with ordinary receivers the generators run out of CPU long before the server
    does. Here a packet of a known SSRC goes straight to its sink (see
    :meth:`LatencySink.on_datagram`); everything else (STUN, DTLS, RTCP, unknown SSRCs) takes
    aiortc's path as before. Subscribers so send no receiver reports and no NACKs: loss is
    counted before any retransmission. Idempotent; aiortc and aioice private parts, as listed
    in mediaserver/aiortc_hooks.py."""
    seen: set[int] = set()
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        if dtls is None or id(dtls) in seen or getattr(dtls, "_bench_light", False):
            continue
        seen.add(id(dtls))
        connection = getattr(dtls.transport, "_connection", None)
        if connection is None or not connection._protocols:
            continue
        dtls._bench_light = True
        table = dtls._rtp_router.ssrc_table
        for protocol in connection._protocols:
            protocol.datagram_received = _light_handler(dtls, table, protocol.datagram_received)


def _light_handler(dtls: Any, table: dict[int, Any], original: Any) -> Any:
    def datagram_received(data: bytes, addr: Any) -> None:
        # RTP: version 2, and not RTCP (packet types 192-223 in the second byte)
        if len(data) > 12 and 127 < data[0] < 192 and not 191 < data[1] < 224:
            receiver = table.get(int.from_bytes(data[8:12], "big"))
            sink = getattr(receiver, "_sfu_sink", None)
            session = dtls._rx_srtp
            if session is not None and isinstance(sink, LatencySink):
                sink.on_datagram(data, session, receiver)
                return
        original(data, addr)

    return datagram_received
