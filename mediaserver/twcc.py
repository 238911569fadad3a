"""Transport-wide congestion control feedback: pure logic on bytes, no I/O; the one clock it
reads is :func:`arrival_ns` (the kernel's arrival of the datagram being handled).

A publisher that negotiates the header extension :data:`TWCC_URI` (Chromium does) numbers every
packet it sends on a transport, audio, video and retransmissions alike, with one 16-bit
transport-wide sequence number. The receiver reports when each arrived (or that it did not) in
RTCP transport-cc feedback (RTPFB, FMT 15; draft-holmer-rmcat-transport-wide-cc-extensions-01,
section 3.1), and the sender's own estimator (Google congestion control: delay gradient and
loss, both from this feedback) sets its encoder's rate. The SFU then sends REMB only as a cap
(what its subscribers take, :func:`mediaserver.congestion.publisher_target`).

:class:`TwccRecorder` keeps what arrived and builds that feedback: :meth:`TwccRecorder.on_packet`
is the per-packet part (two appends to preallocated arrays, called from the receive path);
:meth:`TwccRecorder.build`, called on a timer (every ``FEEDBACK_INTERVAL``), sorts the
arrivals out and writes the packets. :func:`parse_feedback` reads one back (tests, and the
downlink's feedback once subscribers get TWCC).

The feedback packet (all numbers big-endian)::

    V=2 P FMT=15 | PT=205 | length           (RFC 4585 header)
    SSRC of packet sender
    SSRC of media source
    base sequence number | packet status count
    reference time (24 bits, signed, 64 ms units) | feedback packet count (8 bits)
    packet chunks (16 bits each), then receive deltas, then padding to 32 bits

A packet status is 0 (not received), 1 (received, a one-byte delta: 0-63.75 ms) or 2 (received,
a two-byte signed delta: -8192 to 8191.75 ms); deltas count 250 us, the first from the reference
time, each next one from the previous received packet. A chunk is either a run (bit 15 = 0, two
status bits, a 13-bit run length) or a status vector (bit 15 = 1, then 0 and fourteen one-bit
statuses, or 1 and seven two-bit ones). Padding is as libwebrtc writes it (and so reads it): the
header's P bit, zero bytes, and the last one the padding's length.
"""

from __future__ import annotations

import struct
import threading
import time
from array import array
from typing import Protocol

TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
RTCP_RTPFB = 205
RTCP_RTPFB_TWCC = 15

# How often feedback goes back (seconds): libwebrtc's receiver sends it every 100 ms by default
# (50-250 ms, adapted to the rate); the sender's estimator needs it within a few hundred ms.
FEEDBACK_INTERVAL = 0.1
# A delta counts this many microseconds; a reference time 64 ms (256 deltas).
DELTA_US = 250
REFERENCE_TICKS = 256
# What one feedback packet may hold: its status count is 16 bits; and a packet stays well under
# a path's MTU (an RTCP packet is not fragmented; libwebrtc keeps its own under 1,200 bytes).
MAX_STATUS_COUNT = 0xFFFF
MAX_PACKET_BYTES = 1200
# Arrivals are kept this long (microseconds) after they were first reported, so that a packet
# that arrives late (reordered) after a feedback reported it lost is reported again with the
# ones after it (as libwebrtc's receiver does): the sender learns it was not lost.
HISTORY_US = 500_000
# A late packet further back than this (sequence numbers) is not reported again.
MAX_LATE = 0x4000
# Arrivals recorded and not yet taken by a feedback at most (a 2 Mbit/s video sends about 200
# packets a second, 20 a feedback): beyond it the oldest half is dropped.
MAX_PENDING = 8192
# A run-length chunk's longest run.
MAX_RUN = 0x1FFF

NOT_RECEIVED = 0
SMALL_DELTA = 1
LARGE_DELTA = 2


class StampSource(Protocol):
    """A socket reader that can take the kernel's receive stamps (mediaserver/sockets.py)."""

    def want_stamps(self) -> None: ...


class _Current(threading.local):
    """The datagram being handled on this thread's event loop, set by the socket's reader
    around its synchronous ``datagram_received`` call (mediaserver/sockets.py): ``ns`` its
    kernel arrival on the monotonic clock (0: none), ``source`` the reader (None outside a
    read). Per thread: two loops in two threads never see each other's."""

    ns: int = 0
    source: StampSource | None = None


CURRENT = _Current()
_monotonic_ns = time.monotonic_ns


def arrival_ns() -> int:
    """When the packet being handled arrived (monotonic clock, nanoseconds): the kernel's
    receive stamp where the socket's reader took one, else now (aiortc's own queued path, a
    socket that does not take stamps yet). A reader without stamps is told that a TWCC
    packet came through it: its next reads take them (issue 18: a loop stall read as queueing
    delay by the sender's estimator)."""
    current = CURRENT
    ns = current.ns
    if ns:
        return ns
    source = current.source
    if source is not None:
        source.want_stamps()
    return _monotonic_ns()


_HEAD = struct.Struct("!BBHIIHHI")  # header, sender, media, base, count, reference + count
_FIXED = _HEAD.size  # 20


def encode_chunks(statuses: list[int]) -> bytes:
    """The packet chunks for ``statuses`` (0, 1 or 2 each): runs where a status repeats, status
    vectors elsewhere (one-bit ones where no two-byte delta is among the next fourteen). The
    last chunk may describe more statuses than there are; a reader stops at the count."""
    out = bytearray()
    total = len(statuses)
    i = 0
    while i < total:
        symbol = statuses[i]
        run = 1
        while i + run < total and statuses[i + run] == symbol and run < MAX_RUN:
            run += 1
        # a run chunk where it covers at least what a vector would (14 one-bit, 7 two-bit),
        # or the rest of the statuses
        if run >= 14 or (symbol == LARGE_DELTA and run >= 7) or i + run == total:
            out += ((symbol << 13) | run).to_bytes(2, "big")
            i += run
            continue
        window = statuses[i : i + 14]
        if LARGE_DELTA not in window:
            chunk = 0x8000
            for k, status in enumerate(window):
                chunk |= status << (13 - k)
            out += chunk.to_bytes(2, "big")
            i += 14
            continue
        chunk = 0xC000
        for k, status in enumerate(statuses[i : i + 7]):
            chunk |= status << (12 - 2 * k)
        out += chunk.to_bytes(2, "big")
        i += 7
    return bytes(out)


def build_feedback(
    sender_ssrc: int,
    media_ssrc: int,
    base: int,
    reference: int,
    feedback_count: int,
    statuses: list[int],
    deltas: list[int],
) -> bytes:
    """One feedback packet: ``statuses`` from sequence number ``base`` (16 bits), the received
    ones' ``deltas`` (250 us units, in order: one byte for status 1, two for status 2),
    ``reference`` time in 64 ms units (24 bits)."""
    body = bytearray(encode_chunks(statuses))
    received = [s for s in statuses if s != NOT_RECEIVED]
    if len(received) != len(deltas):
        raise ValueError("one delta per received packet")
    for status, delta in zip(received, deltas, strict=True):
        if status == SMALL_DELTA:
            if not 0 <= delta <= 0xFF:
                raise ValueError(f"delta {delta} does not fit one byte")
            body.append(delta)
        else:
            if not -0x8000 <= delta <= 0x7FFF:
                raise ValueError(f"delta {delta} does not fit two bytes")
            body += (delta & 0xFFFF).to_bytes(2, "big")
    padding = -(len(body) + _FIXED) % 4
    first = 0x80 | RTCP_RTPFB_TWCC
    if padding:
        body += bytes(padding - 1) + bytes((padding,))
        first |= 0x20
    length = (_FIXED + len(body)) // 4 - 1
    head = _HEAD.pack(
        first,
        RTCP_RTPFB,
        length,
        sender_ssrc,
        media_ssrc,
        base & 0xFFFF,
        len(statuses),
        ((reference & 0xFFFFFF) << 8) | (feedback_count & 0xFF),
    )
    return head + bytes(body)


class Feedback:
    """A feedback packet read back (:func:`parse_feedback`)."""

    __slots__ = (
        "base",
        "count",
        "feedback_count",
        "media_ssrc",
        "packets",
        "reference",
        "sender_ssrc",
    )

    def __init__(
        self,
        sender_ssrc: int,
        media_ssrc: int,
        base: int,
        reference: int,
        feedback_count: int,
        packets: list[tuple[int, int | None]],
    ) -> None:
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = media_ssrc
        self.base = base
        self.count = len(packets)
        self.reference = reference  # 64 ms units, signed
        self.feedback_count = feedback_count
        # (sequence number, arrival in 250 us units from reference time 0, None: not received)
        self.packets = packets

    def received(self) -> dict[int, int]:
        return {seq: at for seq, at in self.packets if at is not None}


def parse_feedback(data: bytes) -> Feedback:
    """Read one transport-cc feedback packet (ValueError when it is not a whole, valid one)."""
    if len(data) < _FIXED:
        raise ValueError("transport-cc feedback shorter than its fixed part")
    first, packet_type, length, sender, media, base, count, ref_fb = _HEAD.unpack_from(data)
    if first >> 6 != 2 or first & 0x1F != RTCP_RTPFB_TWCC or packet_type != RTCP_RTPFB:
        raise ValueError("not a transport-cc feedback packet")
    end = (length + 1) * 4
    if end > len(data):
        raise ValueError("transport-cc feedback truncated")
    if first & 0x20:
        pad = data[end - 1]
        if not 0 < pad <= end - _FIXED:
            raise ValueError("bad padding")
        end -= pad
    reference = ref_fb >> 8
    if reference & 0x800000:
        reference -= 0x1000000
    statuses: list[int] = []
    pos = _FIXED
    while len(statuses) < count:
        if pos + 2 > end:
            raise ValueError("transport-cc feedback: chunks truncated")
        chunk = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        left = count - len(statuses)
        if not chunk & 0x8000:
            symbol, run = (chunk >> 13) & 0x3, chunk & MAX_RUN
            statuses += [symbol] * min(run, left)
        elif not chunk & 0x4000:
            statuses += [(chunk >> (13 - k)) & 1 for k in range(min(14, left))]
        else:
            statuses += [(chunk >> (12 - 2 * k)) & 3 for k in range(min(7, left))]
    if 3 in statuses:
        raise ValueError("transport-cc feedback: reserved status")
    at = reference * REFERENCE_TICKS
    packets: list[tuple[int, int | None]] = []
    for k, status in enumerate(statuses):
        seq = (base + k) & 0xFFFF
        if status == NOT_RECEIVED:
            packets.append((seq, None))
            continue
        if status == SMALL_DELTA:
            if pos + 1 > end:
                raise ValueError("transport-cc feedback: deltas truncated")
            at += data[pos]
            pos += 1
        else:
            if pos + 2 > end:
                raise ValueError("transport-cc feedback: deltas truncated")
            at += int.from_bytes(data[pos : pos + 2], "big", signed=True)
            pos += 2
        packets.append((seq, at))
    return Feedback(sender, media, base, reference, ref_fb & 0xFF, packets)


class TwccRecorder:
    """The arrivals of one transport's packets, and the feedback that reports them.

    Sequence numbers are extended past their 16-bit wrap (nearest to the highest seen). A
    feedback reports every number from where the last one ended to the highest received: the
    missing ones as not received. A packet that arrives after a feedback reported it missing
    moves the next one's start back to it (the received ones after it are reported again);
    one seen twice is counted once. Where one feedback packet cannot describe what is there (a
    delta beyond two bytes, more than 65,535 statuses, more than MAX_PACKET_BYTES) the next
    packet starts at the next received one, with a reference time of its own; numbers missing
    in a gap that splits two packets are not reported at all (the sender then learns nothing
    of them, which the draft allows)."""

    __slots__ = (
        "_arrivals",
        "_count",
        "_forgotten",
        "_highest",
        "_origin_ns",
        "_seqs",
        "_start",
        "_times",
        "feedback_sent",
        "media_ssrc",
        "packets_dropped",
        "packets_recorded",
        "sender_ssrc",
    )

    def __init__(self, sender_ssrc: int = 0, media_ssrc: int = 0, origin_ns: int = 0) -> None:
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = media_ssrc
        self._origin_ns = origin_ns  # arrival times count from here (reference time 0)
        # the per-packet part: appended on arrival, drained by build()
        self._seqs = array("H")
        self._arrivals = array("q")
        self._times: dict[int, int] = {}  # extended sequence number -> arrival (250 us units)
        self._highest: int | None = None  # extended
        self._start: int | None = None  # the next feedback reports from here (extended)
        self._count = 0  # feedback packets written (8-bit on the wire)
        self._forgotten = -1  # the highest extended number whose arrival was forgotten
        self.feedback_sent = 0
        self.packets_recorded = 0
        self.packets_dropped = 0  # arrivals dropped undrained (MAX_PENDING)

    def on_packet(self, seq: int | None, arrival_ns: int) -> None:
        """A packet with transport-wide sequence number ``seq`` (None: it carries none)
        arrived at ``arrival_ns`` (a monotonic clock, nanoseconds)."""
        if seq is not None:
            seqs = self._seqs
            if len(seqs) >= MAX_PENDING:
                # nobody drains them (a builder that stopped): drop the oldest half, so the
                # arrays never grow past MAX_PENDING
                half = MAX_PENDING // 2
                del seqs[:half]
                del self._arrivals[:half]
                self.packets_dropped += half
            seqs.append(seq)
            self._arrivals.append(arrival_ns)

    def _take(self) -> None:
        seqs, arrivals = self._seqs, self._arrivals
        if not seqs:
            return
        origin = self._origin_ns
        times = self._times
        highest = self._highest
        start = self._start
        for seq, arrival in zip(seqs, arrivals, strict=True):
            ticks = (arrival - origin) // (DELTA_US * 1000)
            if highest is None:
                ext = seq + 0x10000  # room below for the reordered first few
                highest = start = ext
            else:
                ext = highest + ((seq - highest + 0x8000) & 0xFFFF) - 0x8000
            if ext in times:
                continue  # a duplicate
            assert start is not None
            if ext < start:
                if highest - ext > MAX_LATE or ext <= self._forgotten:
                    # too far back to report again: the arrivals after it are forgotten, and
                    # would be reported lost
                    continue
                start = ext  # late after it was reported missing: report from it again
            times[ext] = ticks
            self.packets_recorded += 1
            if ext > highest:
                highest = ext
        self._highest, self._start = highest, start
        del seqs[:]
        del arrivals[:]

    def build(self, now_ns: int) -> list[bytes]:
        """Feedback for what arrived since the last call (and a late packet's return): none,
        one or, where one cannot hold it, several packets. Also forgets old arrivals."""
        self._take()
        highest, start = self._highest, self._start
        if highest is None or start is None or start > highest:
            return []
        times = self._times
        received = sorted(e for e in times if e >= start)
        packets: list[bytes] = []
        i = 0
        base = start
        while i < len(received):
            i, packet = self._packet(base, received, i)
            packets.append(packet)
            if i < len(received):
                base = received[i]
        self._start = highest + 1
        # forget arrivals older than HISTORY_US (and any further back than MAX_LATE)
        oldest = (now_ns - self._origin_ns) // (DELTA_US * 1000) - HISTORY_US // DELTA_US
        for ext in [e for e, t in times.items() if t < oldest or highest - e > MAX_LATE]:
            del times[ext]
            if ext > self._forgotten:
                self._forgotten = ext
        self.feedback_sent += len(packets)
        return packets

    def _packet(
        self, base: int, received: list[int], i: int, most: int | None = None
    ) -> tuple[int, bytes]:
        """One packet from extended number ``base``, with ``received[i:]`` as far as it goes
        (``most`` of them at most); returns the index of the first received packet it left
        out, and the packet."""
        times = self._times
        first = received[i]
        reference = times[first] // REFERENCE_TICKS
        previous_ticks = reference * REFERENCE_TICKS
        statuses: list[int] = [NOT_RECEIVED] * (first - base)
        deltas: list[int] = []
        end = len(received) if most is None else min(len(received), i + most)
        j = i
        while j < end:
            ext = received[j]
            delta = times[ext] - previous_ticks
            if j > i:
                if not -0x8000 <= delta <= 0x7FFF:
                    break  # beyond two bytes: a new packet, with its own reference time
                if len(statuses) + ext - (received[j - 1] + 1) + 1 > MAX_STATUS_COUNT:
                    break  # more than one packet can count: the next starts here
                statuses += [NOT_RECEIVED] * (ext - received[j - 1] - 1)
            statuses.append(SMALL_DELTA if 0 <= delta <= 0xFF else LARGE_DELTA)
            deltas.append(delta)
            previous_ticks = times[ext]
            j += 1
        packet = build_feedback(
            self.sender_ssrc, self.media_ssrc, base, reference, self._count, statuses, deltas
        )
        if len(packet) > MAX_PACKET_BYTES and j - i > 1:
            return self._packet(base, received, i, (j - i) // 2)  # too long: half as many
        self._count = (self._count + 1) & 0xFF
        return j, packet
