"""Where mypy proves that the concrete classes are the protocols of :mod:`.protocols`.

Each function below takes a concrete object and returns it as its protocol: if a class loses
or changes a member a consumer relies on, ``mypy`` fails here, next to the protocol's name,
rather than in the recorder or the verifier. Nothing calls these at run time.
"""

from __future__ import annotations

from .forwarding import ForwardedUpTrack, RtpDownTrack
from .local import LocalSubscriber
from .participant import ParticipantRoom, SfuParticipant
from .protocols import DownTrack, Participant, Room, Subscriber, UpTrack
from .room import SfuRoom


def up_track(up: ForwardedUpTrack) -> UpTrack:
    return up


def rtp_down_track(down: RtpDownTrack) -> DownTrack:
    return down


def local_down_track(local: LocalSubscriber) -> DownTrack:
    return local


def local_subscriber(local: LocalSubscriber) -> Subscriber:
    return local


def participant(member: SfuParticipant) -> Participant:
    return member


def room(sfu_room: SfuRoom) -> Room:
    return sfu_room


def participant_room(sfu_room: SfuRoom) -> ParticipantRoom:
    return sfu_room
