"""A video jitter buffer for the bench's aiortc subscribers that hands the decoder only what a
browser's would: frames that begin at their start, and no wait without end for a packet lost for
good.

aiortc's ``JitterBuffer`` (1.16) releases a frame once the packets from its origin are contiguous
up to one of another timestamp. Two things follow on a thin or lossy link that a browser's
receiver (which reads the VP8 payload descriptor and gives a lost packet up after a while) does not
do (docs/performance.md, "Session 14: the broken frame with TWCC on is aiortc's receiver"):

- after a reset (a packet 100 numbers or more behind the origin, or ``smart_remove``) the origin
  is whatever packet came next, which may be a frame's second packet: that frame goes to the
  decoder without its start and fails to decode;
- after a packet that never comes, the buffer waits until a packet 512 numbers later arrives: at
  a thin link's ten packets a second, most of a minute at no frames.

:class:`GuardedJitterBuffer` drops a VP8 frame whose first packet is not a frame start (S bit,
partition 0) and, when the first missing packet after its origin has been missing for
``give_up`` seconds (counted from the first later packet), moves the origin on to the next
frame's first packet, still releasing the whole frame before the hole; a late copy of a packet
given up is dropped, not taken for a restart of the stream. Both guards ask for a keyframe
(aiortc's receiver sends a PLI when ``add`` says so), at most once per ``pli_interval`` (a request
held back is made when the interval is over). Frames of other codecs are released as aiortc
would; a give-up skips to the next timestamp.

What it does not do: the frames after a skip go to the decoder although they may refer to the
frame given up (libvpx decodes them, with artefacts until the keyframe asked for), where a
browser's receiver reads the payload descriptor's layer and reference information and holds
back what it cannot decode.

It is the test and bench subscribers' receiver, not the server's: the SFU forwards packets and
never reassembles frames. What it replaces is a private part of aiortc's receiver, checked in
tests/test_aiortc_contract.py.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

from mediaserver.vp8 import is_frame_start

GIVE_UP = 1.0  # seconds a missing packet is waited for once later packets are there
PLI_INTERVAL = 0.5  # seconds between the keyframe requests this buffer makes

# The private name of the receiver's jitter buffer (aiortc 1.16, rtcrtpreceiver.py).
RECEIVER_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"
RECEIVER_CODECS = "_RTCRtpReceiver__codecs"


class GuardedJitterBuffer(JitterBuffer):
    def __init__(
        self,
        capacity: int = 512,
        *,
        give_up: float = GIVE_UP,
        pli_interval: float = PLI_INTERVAL,
        is_vp8: Callable[[int], bool] = lambda payload_type: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(capacity=capacity, is_video=True)
        self._give_up = give_up
        self._pli_interval = pli_interval
        self._is_vp8 = is_vp8  # by payload type
        self._clock = clock
        self._highest: int | None = None  # the newest sequence number added
        self._missing_since: dict[int, float] = {}  # a missing number: when a later one came
        self._given_up: tuple[int, int] | None = None  # the last skip: [from, to) numbers
        self._want_pli = False
        self._pending: deque[JitterFrame] = deque()
        self._last_pli = float("-inf")
        self.frames_without_start = 0
        self.packets_given_up = 0

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        if self._late_copy_of_given_up(packet.sequence_number):
            return False, self._pending.popleft() if self._pending else None
        self._note_missing(packet.sequence_number)
        given_up = self._give_up_a_lost_packet(packet)
        pli, frame = super().add(packet)
        # aiortc's receiver decodes one frame an add: a frame completed while its successor was
        # missing comes out first, the other at the next add
        self._pending.extend(f for f in (given_up, frame) if f is not None)
        out = self._pending.popleft() if self._pending else None
        if self._want_pli:
            now = self._clock()
            if now - self._last_pli >= self._pli_interval:  # else: asked at a later add
                self._want_pli = False
                self._last_pli = now
                pli = True
        return pli, out

    def _late_copy_of_given_up(self, seq: int) -> bool:
        """A retransmission of a packet already given up: behind the origin, and would make
        aiortc's buffer restart the stream when it is 100 or more numbers behind."""
        if self._given_up is None or self._origin is None:
            return False
        start, end = self._given_up
        # behind the origin too: 65,536 numbers on, the same numbers are new packets again
        behind = 0 < (self._origin - seq) & 0xFFFF < 0x8000
        return behind and (seq - start) & 0xFFFF < (end - start) & 0xFFFF

    def _note_missing(self, seq: int) -> None:
        """Remembers when each number skipped by ``seq`` was first missing; forgets ``seq``."""
        highest = self._highest
        if highest is None:
            self._highest = seq
            return
        ahead = (seq - highest) & 0xFFFF
        if 0 < ahead < 0x8000:
            now = self._clock()
            for missing in range(1, min(ahead, self._capacity)):
                self._missing_since.setdefault((highest + missing) & 0xFFFF, now)
            self._highest = seq
        self._missing_since.pop(seq, None)
        if len(self._missing_since) > 2 * self._capacity:  # numbers long behind the origin
            origin = self._origin if self._origin is not None else seq
            self._missing_since = {
                n: t
                for n, t in self._missing_since.items()
                if (n - origin) & 0xFFFF < self._capacity
            }

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        assert self._origin is not None
        first = self._packets[self._origin % self._capacity]
        frame = super()._remove_frame(sequence_number)
        if frame is not None and first is not None and first.payload and not self._starts(first):
            self.frames_without_start += 1
            self._want_pli = True
            return None
        return frame

    def _starts(self, packet: RtpPacket) -> bool:
        return not self._is_vp8(packet.payload_type) or is_frame_start(packet.payload)

    def _give_up_a_lost_packet(self, packet: RtpPacket) -> JitterFrame | None:
        """When the first missing packet after the origin has been missing for ``give_up``
        seconds while later ones came, skips it and the rest of its frame; returns the frame
        completed before it, if one was (a frame is released only once its successor's first
        packet is there)."""
        origin = self._origin
        if origin is None:
            return None
        held = 0  # the packets held from the origin on, up to the first missing one
        while held < self._capacity and self._packets[(origin + held) % self._capacity] is not None:
            held += 1
        hole = (origin + held) & 0xFFFF
        if not 0 < (packet.sequence_number - hole) & 0xFFFF < 0x8000:
            return None  # the missing packet itself, or an older one
        since = self._missing_since.get(hole)
        if since is None or self._clock() - since < self._give_up:
            return None
        before = [self._packets[(origin + i) % self._capacity] for i in range(held)]
        last = before[-1] if before else None
        # a frame that ended before the hole (its marker) is not the broken one
        broken = None if last is None or last.marker else last.timestamp
        skip = self._next_frame_start(held, broken)
        if skip is None:
            return None  # tried again at the next packet
        for i in range(held, skip):
            if self._packets[(origin + i) % self._capacity] is None:
                self.packets_given_up += 1
                self._missing_since.pop((origin + i) & 0xFFFF, None)
        self.remove(skip)
        self._given_up = (hole, (origin + skip) & 0xFFFF)
        self._want_pli = True
        return self._complete(before)

    def _next_frame_start(self, after: int, before: int | None) -> int | None:
        """How far from the origin the first packet held past ``after`` is that starts a frame
        (VP8: the start bit; other codecs: a timestamp other than the broken frame's: ``before``,
        when the hole is inside the frame held before it, or else the first one after it)."""
        assert self._origin is not None
        broken = before
        for count in range(after + 1, self._capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None:
                continue
            if self._is_vp8(packet.payload_type):
                if is_frame_start(packet.payload):
                    return count
            elif broken is not None and packet.timestamp != broken:
                return count
            if broken is None:
                broken = packet.timestamp
        return None

    def _complete(self, packets: list[RtpPacket | None]) -> JitterFrame | None:
        """The frame ``packets`` make when they are one whole frame: one timestamp, a start,
        the marker on the last."""
        if not packets or any(p is None for p in packets):
            return None
        whole = [p for p in packets if p is not None]
        if (
            len({p.timestamp for p in whole}) != 1
            or not self._starts(whole[0])
            or not whole[-1].marker
        ):
            return None
        return JitterFrame(data=b"".join(p._data for p in whole), timestamp=whole[0].timestamp)  # type: ignore[attr-defined]


def guard_receiver(receiver: Any) -> GuardedJitterBuffer | None:
    """Puts a :class:`GuardedJitterBuffer` in an aiortc video receiver (before its first packet);
    returns it, or None for an audio receiver (its buffer is left as aiortc made it)."""
    current = getattr(receiver, RECEIVER_JITTER_BUFFER)
    if isinstance(current, GuardedJitterBuffer):
        return current
    if not current._is_video:
        return None
    codecs = getattr(receiver, RECEIVER_CODECS)  # payload type -> negotiated codec

    def is_vp8(payload_type: int) -> bool:
        codec = codecs.get(payload_type)
        return codec is not None and codec.mimeType.lower() == "video/vp8"

    guarded = GuardedJitterBuffer(capacity=current.capacity, is_vp8=is_vp8)
    setattr(receiver, RECEIVER_JITTER_BUFFER, guarded)
    return guarded
