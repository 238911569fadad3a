"""An up-track's packet history: what a subscriber's NACK is answered from.

A retransmission is of use only while the receiver still waits for it: a round trip or a few
(a NACK, its answer lost, the NACK again). So the history keeps packets by **time**, the last
:data:`SECONDS` of them per kind, and not a fixed number of packets: a fixed 1,024 kept about
20 s of a 500 kbit/s picture and of Opus, some 1.4 MB per publishing participant, two thirds of
what a participant cost in memory (docs/performance.md, issue 19).

Two bounds beside the time:

- at least :data:`MIN_PACKETS`, whatever their age: aiortc's receiver NACKs a missing number
  again each time a new hole opens, for as long as it is within its last 128 numbers
  (``aiortc.rtcrtpreceiver.RTP_HISTORY_SIZE``), which on a light stream (15-30 packets a
  second) is several seconds; a NACK it can send must stay answerable
  (``tests/test_network_recovery.py``). On a stream that pauses (a muted camera sends nothing)
  the last packets stay too, which costs little;
- at most :data:`MAX_PACKETS`, so a stream far above what the service sends (a browser's
  2.5 Mbit/s picture is about 450 packets in 2 s) cannot make the history grow without bound.

Nothing is preallocated: a dict by sequence number and a deque in arrival order, both as long
as what is kept.
"""

from __future__ import annotations

from collections import deque

from .protocols import Packet

# Seconds of packets kept. Video: a subscriber on a 300 ms round trip may NACK a number, lose
# the answer and NACK it again several times within 2 s (libwebrtc retries once per round trip;
# the SFU itself asks its publishers again every 100 ms, up to ten times:
# aiortc_hooks.NACK_RETRY, NACK_MAX_TRIES). Audio: a retransmission of Opus is of use only
# within the receiver's jitter buffer (a few hundred ms); aiortc's audio receivers send no
# NACKs, browsers only where nack is negotiated for the audio codec.
SECONDS = {"audio": 1.0, "video": 2.0}
# At least this many packets whatever their age (aiortc's receivers: see above). Audio: 50 is
# one second of 20 ms Opus frames.
MIN_PACKETS = {"audio": 50, "video": 128}
# At most this many: video, 2 s of a 5 Mbit/s stream; audio, 2.5 ms frames for 0.6 s.
MAX_PACKETS = {"audio": 256, "video": 1024}


class PacketHistory:
    """The last packets of one up-track, by sequence number, bounded by time and count."""

    __slots__ = ("_by_seq", "_max", "_min", "_order", "_seconds")

    def __init__(self, kind: str) -> None:
        self._by_seq: dict[int, Packet] = {}
        self._order: deque[tuple[float, Packet]] = deque()  # (arrival, packet), oldest first
        self._seconds = SECONDS.get(kind, SECONDS["video"])
        self._min = MIN_PACKETS.get(kind, MIN_PACKETS["video"])
        self._max = MAX_PACKETS.get(kind, MAX_PACKETS["video"])

    @property
    def max_packets(self) -> int:
        return self._max

    def __len__(self) -> int:
        return len(self._by_seq)

    def put(self, packet: Packet, now: float) -> None:
        """Keep ``packet`` (arrived at ``now``, a monotonic clock); forget what is too old.
        A second copy of a number (a retransmission) replaces the first."""
        by_seq = self._by_seq
        by_seq[packet.sequence_number] = packet
        order = self._order
        order.append((now, packet))
        count = len(order)
        if count <= self._min:
            return
        horizon = now - self._seconds
        while count > self._max or (count > self._min and order[0][0] < horizon):
            old = order.popleft()[1]
            count -= 1
            seq = old.sequence_number
            if by_seq.get(seq) is old:  # not replaced by a later copy
                del by_seq[seq]

    def get(self, sequence_number: int) -> Packet | None:
        return self._by_seq.get(sequence_number)

    def packets(self) -> list[Packet]:
        """What is kept, in arrival order (a number's latest copy only)."""
        by_seq = self._by_seq
        return [p for _, p in self._order if by_seq.get(p.sequence_number) is p]

    def clear(self) -> None:
        """Forget everything (a closed track: its payloads go at once, even while the track
        itself waits in a reference cycle for the garbage collector)."""
        self._by_seq.clear()
        self._order.clear()
