"""The media plane's settings: a frozen slice of :class:`control.config.Config`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IceServer:
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True, slots=True)
class MediaOptions:
    # STUN/TURN servers handed to aiortc and to clients; empty means none is contacted.
    ice_servers: tuple[IceServer, ...] = ()
    # Addresses to gather host candidates on; empty means every interface but loopback.
    host_addresses: tuple[str, ...] = ()
    # A peer connection not connected this long after an offer/answer is closed.
    connect_timeout: float = 15.0
    # A client that does not answer a subscriber offer within this is closed.
    negotiation_timeout: float = 15.0
    # A connected media connection from which nothing at all arrives for this long (no RTP,
    # RTCP or ICE consent check: a live client sends RTCP about every second and consent
    # checks every 2.5-6 s) is closed as media_timeout; aioice's own consent expiry takes 30 s.
    media_timeout: float = 10.0
    # A participant whose signalling socket or media connections were lost stays in the room
    # this long (seconds), reconnecting, and may come back under the same participant ID with
    # the resume token of its joined message (docs/signalling.md, Resume); 0 turns resume off.
    resume_grace: float = 20.0
    # A participant whose page said it was going (``unload``: the tab closed, or it reloads)
    # waits this long instead, enough for a reload to resume; then it leaves as ``closed``.
    unload_grace: float = 8.0
    # Keyframe requests relayed to a publisher at most this often (seconds).
    pli_min_interval: float = 0.5
    # A publisher sending VP8 temporal layers to at most this many subscribers is held to what
    # leaves the weakest its layer 0; with more, to what leaves that to all but the lowest
    # layered_quantile of them (docs/performance.md, "Temporal layers").
    layered_small_room: int = 4
    layered_quantile: float = 0.1
    # Answer a publisher that offers transport-wide congestion control (browsers do) with it:
    # feedback from the SFU, the publisher's own estimator, REMB only as the subscribers' cap
    # (docs/signalling.md); False: REMB from the SFU's delay-based estimate, as before. On by
    # default since session 15: with REMB alone a browser party's picture collapsed (to 2-3 fps
    # at about 43 kbit/s) in 3 of 10 quiet-machine windows, after an outage and on a lossy
    # link, where with TWCC it kept 20 fps or more; on a loaded machine REMB fell to 38-88
    # kbit/s in 8 of 10 runs across conditions (docs/performance.md, "Session 12", "Session 15").
    twcc: bool = True
    # Most participants in one room.
    max_participants: int = 50
