"""The SFU's vocabulary: four small protocols, in the spirit of Galene's ``conn/conn.go``.

* an :class:`UpTrack` is one track published into a room (audio or video from one publisher);
* a :class:`DownTrack` is one destination of an up-track: a subscriber's RTP sender or an
  in-process consumer (recorder, verifier). The up-track calls ``write`` for every packet;
* a :class:`Participant` owns its up-tracks and its down-tracks;
* a :class:`Room` holds participants and routes up-tracks to them.

Everything else in :mod:`mediaserver` implements these; the recorder and the verifier only need
this module and :mod:`mediaserver.local`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class CloseReason(enum.StrEnum):
    """Why something closed. Logged and counted (bounded label values)."""

    LEFT = "left"  # the participant said leave
    REMOVED = "removed"  # an officer or the server removed it
    SIGNALLING_LOST = "signalling_lost"  # the WebSocket went away
    CONNECT_TIMEOUT = "connect_timeout"  # ICE/DTLS never got to connected
    CONNECTION_FAILED = "connection_failed"  # ICE or DTLS failed after connecting
    PEER_CLOSED = "peer_closed"  # the client closed its media connection (DTLS close_notify)
    PROTOCOL_ERROR = "protocol_error"  # the client broke the signalling protocol
    DUPLICATE = "duplicate"  # the same participant joined again elsewhere
    ROOM_CLOSED = "room_closed"  # the parent room closed
    ROOM_EMPTY = "room_empty"  # the last participant left
    UNPUBLISHED = "unpublished"  # the up-track went away
    UNSUBSCRIBED = "unsubscribed"  # the subscriber asked to stop
    SHUTDOWN = "shutdown"  # the server is stopping


@dataclass(frozen=True, slots=True)
class Packet:
    """One RTP packet as an up-track hands it to its down-tracks.

    ``payload`` excludes the header and padding; ``padding`` is the number of padding bytes the
    publisher sent (forwarded as padding so that bandwidth probes stay what they were).
    ``keyframe`` is true on the first packet of a video keyframe (always true for audio).
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

    def close(self, reason: CloseReason) -> None:
        """Detach from the up-track; idempotent."""


class UpTrack(Protocol):
    """A track published into a room."""

    @property
    def info(self) -> TrackInfo: ...

    @property
    def muted(self) -> bool: ...

    def add_down_track(self, down: DownTrack) -> None: ...

    def remove_down_track(self, down: DownTrack) -> None: ...

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe (rate-limited)."""

    def get_packet(self, sequence_number: int) -> Packet | None:
        """A recent packet by its publisher sequence number, for retransmission."""


class Participant(Protocol):
    @property
    def participant_id(self) -> str: ...

    @property
    def up_tracks(self) -> dict[str, UpTrack]: ...

    async def close(self, reason: CloseReason) -> None: ...


class Room(Protocol):
    @property
    def room_id(self) -> str: ...

    @property
    def participants(self) -> dict[str, Participant]: ...

    def up_tracks(self) -> list[UpTrack]: ...

    async def close(self, reason: CloseReason) -> None: ...
