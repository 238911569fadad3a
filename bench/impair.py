"""An impaired network between a real aiortc peer and the server, in user space.

This machine's kernel has no ``netem`` (see ``/work/shared/notes/impairment.md``), so the
impairment sits in the peer's own UDP I/O: every datagram its ICE sockets send or receive
(STUN, DTLS, SRTP, SRTCP alike) goes through an :class:`ImpairedLink`, which drops, delays,
reorders, rate-limits or blackholes it before it reaches the socket or the peer. The server
sees exactly what a bad network would hand it; nothing in the server is touched.

    link = ImpairedLink(up=Impairment(loss=0.05, delay=0.075, jitter=0.03))
    client = PeerClient(url, token, link=link)   # bench.peer wires every peer connection
    ...
    link.outage(5.0)                              # both directions dark for 5 s
    link.cut()                                    # dark for good: a client that died

``hold_up`` reorders on purpose: a function of each datagram the peer sends that answers an
extra delay for it (0: none), e.g. one packet of every large video frame held back behind the
next frame's, so that a test meets the reordering it needs every time rather than by chance.

``up`` is what the peer sends (towards the server), ``down`` what it receives. Delays use the
event loop's timers, so the peer must run on a loop (the tests' and the bench's do). Each
direction draws from its own seeded generator, so a run is repeatable for the same traffic.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCPeerConnection


@dataclass(frozen=True, slots=True)
class Impairment:
    """One direction of a link."""

    loss: float = 0.0  # probability that a datagram is lost, independently
    delay: float = 0.0  # one-way delay, seconds
    jitter: float = 0.0  # each datagram's delay varies uniformly by +-jitter (it reorders)
    rate_bps: float | None = None  # link rate; datagrams queue behind each other
    queue: float = 0.2  # a datagram that would wait longer than this in the queue is dropped

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError("loss is a probability")
        if self.delay < 0 or self.jitter < 0 or self.queue < 0:
            raise ValueError("delay, jitter and queue are not negative")
        if self.jitter > self.delay:
            raise ValueError("jitter larger than the delay would send datagrams back in time")
        if self.rate_bps is not None and self.rate_bps <= 0:
            raise ValueError("rate_bps is positive")


@dataclass(slots=True)
class DirectionStats:
    datagrams: int = 0
    delivered: int = 0
    lost: int = 0  # random loss
    queue_dropped: int = 0  # over the rate limit's queue
    outage_dropped: int = 0  # during an outage or after a cut
    reordered: int = 0  # delivered before a datagram handed over earlier


@dataclass(slots=True)
class _Direction:
    impairment: Impairment
    rng: random.Random
    stats: DirectionStats = field(default_factory=DirectionStats)
    next_free: float = 0.0  # when the rate-limited link is free again
    last_due: float = 0.0


class ImpairedLink:
    """Impairs every UDP datagram of the peer connections it is attached to."""

    def __init__(
        self,
        up: Impairment | None = None,
        down: Impairment | None = None,
        *,
        seed: int = 1,
        hold_up: Callable[[bytes], float] | None = None,
    ) -> None:
        self._up = _Direction(up or Impairment(), random.Random(seed))
        self._hold_up = hold_up
        self.held = 0  # datagrams hold_up delayed
        self._down = _Direction(down or Impairment(), random.Random(seed + 1))
        self._dark_until = 0.0
        self._cut = False
        self._handles: set[asyncio.TimerHandle] = set()
        self._closed = False

    # -- control ---------------------------------------------------------------------------
    @property
    def up(self) -> DirectionStats:
        return self._up.stats

    @property
    def down(self) -> DirectionStats:
        return self._down.stats

    def set_impairment(self, up: Impairment | None = None, down: Impairment | None = None) -> None:
        """Change the conditions from now on (datagrams already in flight keep theirs)."""
        if up is not None:
            self._up.impairment = up
        if down is not None:
            self._down.impairment = down

    def outage(self, seconds: float) -> None:
        """Nothing gets through either way for ``seconds`` from now."""
        loop = asyncio.get_running_loop()
        self._dark_until = max(self._dark_until, loop.time() + seconds)

    def cut(self) -> None:
        """Nothing gets through any more: the peer's network is gone."""
        self._cut = True

    def restore(self) -> None:
        """End an outage or a cut."""
        self._cut = False
        self._dark_until = 0.0

    def close(self) -> None:
        """Drop what is still in flight. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for handle in self._handles:
            handle.cancel()
        self._handles.clear()

    # -- wiring ----------------------------------------------------------------------------
    def impair(self, pc: RTCPeerConnection) -> None:
        """Impair ``pc`` from its next local description on (that is when aiortc gathers its
        sockets); call before ``setLocalDescription``. Idempotent."""
        if getattr(pc, "_remotecase_impaired", None) is self:
            return
        pc._remotecase_impaired = self  # type: ignore[attr-defined]
        original = pc.setLocalDescription

        async def set_local_description(*args: Any, **kwargs: Any) -> None:
            await original(*args, **kwargs)
            self.attach(pc)

        pc.setLocalDescription = set_local_description  # type: ignore[method-assign]

    def attach(self, pc: RTCPeerConnection) -> None:
        """Impair the sockets ``pc`` has gathered so far. Idempotent per socket."""
        seen: set[int] = set()
        for transceiver in pc.getTransceivers():
            dtls = transceiver.sender.transport
            if dtls is None:
                continue
            connection = dtls.transport._connection
            if id(connection) in seen:
                continue
            seen.add(id(connection))
            for protocol in connection._protocols:
                self._wrap(protocol)

    def _wrap(self, protocol: Any) -> None:
        if getattr(protocol, "_remotecase_link", None) is not None:
            return
        transport = getattr(protocol, "transport", None)
        if transport is None:
            return
        protocol._remotecase_link = self
        protocol.transport = _ImpairedTransport(transport, self)
        received: Callable[[bytes, tuple[Any, ...]], None] = protocol.datagram_received

        def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
            self._pass(self._down, lambda: received(data, addr), len(data))

        protocol.datagram_received = datagram_received

    # -- the impairment --------------------------------------------------------------------
    def _pass(
        self,
        direction: _Direction,
        deliver: Callable[[], None],
        size: int = 0,
        extra: float = 0.0,
    ) -> None:
        stats = direction.stats
        stats.datagrams += 1
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._cut or now < self._dark_until:
            stats.outage_dropped += 1
            return
        imp = direction.impairment
        if imp.loss and direction.rng.random() < imp.loss:
            stats.lost += 1
            return
        start = now
        if imp.rate_bps is not None:
            start = max(now, direction.next_free)
            if start - now > imp.queue:
                stats.queue_dropped += 1
                return
            direction.next_free = start + (size + 28) * 8 / imp.rate_bps  # with UDP/IP headers
        delay = imp.delay + extra
        if imp.jitter:
            delay += direction.rng.uniform(-imp.jitter, imp.jitter)
        due = start + delay
        if due < direction.last_due:
            stats.reordered += 1
        direction.last_due = max(direction.last_due, due)
        if due <= now:
            stats.delivered += 1
            deliver()
            return

        def later() -> None:
            self._handles.discard(handle)
            if not self._closed:
                stats.delivered += 1
                deliver()

        handle = loop.call_at(due, later)
        self._handles.add(handle)


class _ImpairedTransport:
    """Stands in for a datagram transport: ``sendto`` goes through the link."""

    def __init__(self, transport: asyncio.DatagramTransport, link: ImpairedLink) -> None:
        self._transport = transport
        self._link = link

    def sendto(self, data: bytes, addr: Any = None) -> None:
        transport = self._transport

        def deliver() -> None:
            if not transport.is_closing():
                transport.sendto(data, addr)

        link = self._link
        extra = link._hold_up(data) if link._hold_up is not None else 0.0
        if extra > 0:
            link.held += 1
        link._pass(link._up, deliver, len(data), max(0.0, extra))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


__all__ = ["DirectionStats", "ImpairedLink", "Impairment"]
