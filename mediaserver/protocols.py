"""The SFU's vocabulary: a few small protocols, in the spirit of Galene's ``conn/conn.go``.

* an :class:`UpTrack` is one track published into a room (audio or video from one publisher);
* a :class:`DownTrack` is one destination of an up-track: a subscriber's RTP sender or an
  in-process consumer (recorder, verifier). The up-track calls ``write`` for every packet;
* a :class:`Subscriber` is the in-process kind of down-track (``Room.subscribe_local``): packets
  or decoded frames for the recorder and the verifier;
* a :class:`Participant` owns its up-tracks and its down-tracks;
* a :class:`Room` holds participants and routes up-tracks to them;
* a :class:`RoomObserver` hears what happens in a room (the recorder, the verifier, the
  officers' event stream, an evidence display).

The concrete classes (:mod:`mediaserver.forwarding`, :mod:`mediaserver.participant`,
:mod:`mediaserver.room`, :mod:`mediaserver.local`) are checked against these by mypy
(:mod:`mediaserver.conformance`). A consumer outside the SFU types rooms and tracks with these
protocols, never with the concrete classes.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol


class CloseReason(enum.StrEnum):
    """Why something closed. Logged and counted (bounded label values)."""

    LEFT = "left"  # the participant said leave
    REMOVED = "removed"  # an officer or the server removed it
    SIGNALLING_LOST = "signalling_lost"  # the WebSocket went away
    CLOSED = "closed"  # its page said it was going (tab closed) and no reload came back
    GONE = "gone"  # its socket's connection ended without a close (the page's process died)
    CONNECT_TIMEOUT = "connect_timeout"  # ICE/DTLS never got to connected
    CONNECTION_FAILED = "connection_failed"  # ICE or DTLS failed after connecting
    MEDIA_TIMEOUT = "media_timeout"  # nothing arrived on a connected media connection for long
    PEER_CLOSED = "peer_closed"  # the client closed its media connection (DTLS close_notify)
    PROTOCOL_ERROR = "protocol_error"  # the client broke the signalling protocol
    DUPLICATE = "duplicate"  # the same participant joined again elsewhere
    ROOM_CLOSED = "room_closed"  # the parent room closed
    ROOM_EMPTY = "room_empty"  # the last participant left
    UNPUBLISHED = "unpublished"  # the up-track went away
    UNSUBSCRIBED = "unsubscribed"  # the subscriber asked to stop
    SHUTDOWN = "shutdown"  # the server is stopping


class Packet(NamedTuple):
    """One RTP packet as an up-track hands it to its down-tracks.

    ``payload`` excludes the header and padding; ``padding`` is the number of padding bytes the
    publisher sent (forwarded as padding so that bandwidth probes stay what they were).
    ``keyframe`` is true on the first packet of a video keyframe (always true for audio).

    A named tuple, immutable as the frozen dataclass it was, and made once per received packet
    (every down-track, the recorder and the history share it): a frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__``, about 1.2 us more per packet
    (docs/performance.md, "Session 10").
    """

    sequence_number: int
    timestamp: int
    marker: int
    payload: bytes
    padding: int
    keyframe: bool


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """What a subscriber needs to know about an up-track."""

    track_id: str
    participant_id: str
    kind: str  # "audio" | "video"
    mime_type: str  # "audio/opus", "video/VP8", "video/H264"
    clock_rate: int
    channels: int | None
    parameters: tuple[tuple[str, str], ...]  # codec fmtp, sorted


class DownTrack(Protocol):
    """A destination of an up-track."""

    @property
    def down_id(self) -> str: ...

    def write(self, packet: Packet) -> None:
        """Called for every packet of the up-track, on the event loop; must not block."""

    def resume(self) -> None:
        """The up-track was unmuted: packets flow again after a pause (an RTP down-track starts
        again on the next keyframe, with sequence numbers that continue)."""

    def close(self, reason: CloseReason) -> None:
        """Detach from the up-track; idempotent."""


class UpTrack(Protocol):
    """A track published into a room."""

    @property
    def info(self) -> TrackInfo: ...

    @property
    def muted(self) -> bool: ...

    @property
    def closed(self) -> bool: ...

    @property
    def sender_report(self) -> tuple[int, int, float] | None:
        """The publisher's last sender report: (NTP time, RTP timestamp, loop time of arrival)."""

    def add_down_track(self, down: DownTrack) -> None: ...

    def remove_down_track(self, down: DownTrack) -> None: ...

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe (rate-limited)."""

    def get_packet(self, sequence_number: int) -> Packet | None:
        """A recent packet by its publisher sequence number, for retransmission."""


class Subscriber(DownTrack, Protocol):
    """An in-process down-track of one up-track (``Room.subscribe_local``)."""

    @property
    def info(self) -> TrackInfo: ...

    @property
    def closed(self) -> bool: ...

    @property
    def received(self) -> int:
        """Packets queued for the consumer so far."""

    @property
    def dropped(self) -> int:
        """Packets dropped because the consumer fell behind."""

    def packets(self) -> AsyncIterator[Packet]:
        """Every forwarded packet from a keyframe on, until the track closes."""

    def frames(self, every: float = 0.0) -> AsyncIterator[Any]:
        """Decoded frames (``av.VideoFrame`` / ``av.AudioFrame``), decoded off the loop; with
        ``every``, about one per that many seconds."""

    def samples(self, every: float, *, wait: float | None = None) -> AsyncIterator[Any]:
        """Video: a decoded keyframe every ``every`` seconds, asked of the publisher, with
        nothing decoded between samples; ``None`` for a sample no whole keyframe came for
        within ``wait``."""

    def request_keyframe(self) -> None: ...


class Participant(Protocol):
    @property
    def participant_id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str:
        """``party``, ``officer`` or ``supervisor`` (what the token grants)."""

    @property
    def closed(self) -> bool: ...

    @property
    def up_tracks(self) -> Mapping[str, UpTrack]: ...

    def send(self, message: dict[str, Any]) -> None:
        """A signalling message to this participant (dropped once it is closed)."""

    async def close(self, reason: CloseReason) -> None: ...


class RoomObserver(Protocol):
    """An in-process part that hears of a room's joins, leaves and tracks (the recorder, the
    verifier, the officers' event stream, an evidence display). Called on the event loop, in
    the order things happen; must not block. An observer that raises is logged and the
    others are still called."""

    def on_participant_joined(self, participant: Participant) -> None: ...

    def on_participant_left(self, participant: Participant, reason: CloseReason) -> None: ...

    def on_track_published(self, up: UpTrack) -> None: ...

    def on_track_unpublished(self, up: UpTrack) -> None: ...

    def on_room_closed(self, reason: CloseReason) -> None:
        """Called first when the room closes, before its participants are closed."""


class Room(Protocol):
    @property
    def room_id(self) -> str: ...

    @property
    def closed(self) -> bool: ...

    @property
    def participants(self) -> Mapping[str, Participant]: ...

    def up_tracks(self) -> Sequence[UpTrack]:
        """Every live up-track: the participants' and the server's own (evidence display)."""

    def find_track(self, track_id: str) -> UpTrack | None: ...

    def subscribe_local(self, track_id: str, *, queue_size: int = 1024) -> Subscriber:
        """An in-process subscriber of one track of the room; ``KeyError`` if there is none."""

    def add_observer(self, observer: RoomObserver) -> None: ...

    def remove_observer(self, observer: RoomObserver) -> None: ...

    async def close(self, reason: CloseReason) -> None: ...
