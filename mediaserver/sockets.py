"""The server's ICE sockets: kernel buffers sized for a busy loop, and every waiting datagram
read when the socket is ready, not one.

Issue 17: in a recorded education session (one presenter, 60-100 viewers, every camera
recorded) the viewers lost 42-48% of the presenter's packets, and the server's own sockets
were where they went (/proc/net/udp's drops, the kernel's ``RcvbufErrors``). Two causes, both
in how asyncio reads a UDP socket:

- asyncio's datagram transport reads **one** datagram per socket per turn of the event loop.
  The presenter's socket takes some 75 packets a second (15 fps video, 50 audio packets), so
  once a turn of the loop takes longer than 13 ms (every camera recorded, every viewer a
  subscriber, a loaded machine), that socket is read more slowly than it fills, stays full,
  and the kernel drops what comes: a steady loss, and ICE consent answers among it (a
  connection closed 30 s later for lack of them).
  :func:`drain_reads` reads what is waiting, up to :data:`READS_PER_WAKEUP` datagrams, each
  time the socket is ready (uvloop does the same; it reads up to 32).
- The kernel's default receive buffer (``net.core.rmem_default``, 208 KiB: some 90 datagrams
  of video) holds less than a second of the presenter while the loop is late (a garbage
  collection, a recorder's segment). :func:`size_buffers` asks for :data:`RECEIVE_BUFFER`
  (the kernel caps it at ``net.core.rmem_max`` silently; the size it granted is read back and
  logged once, and shown on /metrics as ``remotecase_sfu_ice_socket_buffer_bytes``), as
  LiveKit and mediasoup do. Only the nominated pair's socket gets them (the one media flows on
  once connected): the other candidates' sockets carry a few STUN checks and keep the
  256 KiB aioice asks for each; asking on every one (100 viewers, two connections each,
  several candidates) would let a flood pin that much more kernel memory once ``rmem_max`` is
  raised. (aiortc does not renominate, so the nominated socket is known at "connected".)

Issue 18: a TWCC publisher's feedback reports when each packet arrived; stamped when the loop
got to it, every loop stall (0.1-0.6 s on a busy machine) read as queueing delay at the
publisher's estimator. A drained socket that carried a TWCC packet takes the kernel's receive
stamps (``SO_TIMESTAMPNS``, read with ``recvmsg``; :class:`DrainedReader`), handed to the
fast path through :data:`mediaserver.twcc.CURRENT`; the others keep ``recvfrom``.

The operator's part: a stock Debian kernel caps a socket's receive buffer at
``net.core.rmem_max`` = 212,992 bytes (it reports 425,984), far below the 4 MiB asked, and says
nothing. Raise the caps (docs/performance.md, "Session 10"; README, "Defaults worth knowing")::

    # /etc/sysctl.d/60-remotecase.conf
    net.core.rmem_max = 4194304
    net.core.wmem_max = 1048576
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import logging
import socket
import struct
import threading
import time
from typing import Any

from . import twcc
from .aiortc_hooks import ice_datagram_transports, nominated_datagram_transports

logger = logging.getLogger(__name__)

RECEIVE_BUFFER = 4 << 20  # bytes asked for each ICE socket's receive buffer
SEND_BUFFER = 1 << 20  # and its send buffer (a burst to many subscribers at once)
READS_PER_WAKEUP = 64  # datagrams read at most each time a socket is ready (others wait)

# asyncio's own datagram transport (private: the one whose reads this module changes)
_SELECTOR_EVENTS: Any = asyncio.selector_events
_DATAGRAM_TRANSPORT: type[asyncio.DatagramTransport] = _SELECTOR_EVENTS._SelectorDatagramTransport
_logged: list[bool] = []  # whether the granted sizes were logged (once per process)


def size_buffers(sock: Any) -> tuple[int, int]:
    """Ask for :data:`RECEIVE_BUFFER` and :data:`SEND_BUFFER` on ``sock``; the sizes the kernel
    granted, as it reports them (Linux reports twice what it accounts for payload, and caps the
    request at ``net.core.rmem_max``/``wmem_max`` without an error)."""
    for option, size in ((socket.SO_RCVBUF, RECEIVE_BUFFER), (socket.SO_SNDBUF, SEND_BUFFER)):
        try:
            if sock.getsockopt(socket.SOL_SOCKET, option) < size:
                sock.setsockopt(socket.SOL_SOCKET, option, size)
        except OSError as exc:  # a closed socket, or a platform without the option
            logger.debug("socket buffer not set: %s", exc)
    granted = (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
    )
    if not _logged:
        _logged.append(True)
        logger.info(
            "ICE socket buffers: receive %d bytes, send %d bytes (asked %d and %d; "
            "net.core.rmem_max and wmem_max cap them)",
            *granted,
            RECEIVE_BUFFER,
            SEND_BUFFER,
        )
    return granted


def drain_reads(transport: Any, limit: int = READS_PER_WAKEUP) -> bool:
    """Make an asyncio datagram transport read up to ``limit`` waiting datagrams each time its
    socket is ready, instead of one; False (nothing changed) for another loop's transport
    (uvloop's reads in batches itself) or a closed one. Idempotent.

    The same as asyncio's own ``_SelectorDatagramTransport._read_ready``, in a loop: errors go
    where asyncio sends them (``error_received``, or the transport's fatal error). Once a TWCC
    packet came through it (:func:`mediaserver.twcc.arrival_ns` asks), the socket takes the
    kernel's receive stamps (:class:`DrainedReader`)."""
    loop = asyncio.get_running_loop()
    if (
        not isinstance(transport, _DATAGRAM_TRANSPORT)
        or not isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop)
        or transport.is_closing()
        or getattr(transport, "_remotecase_drained", False)
    ):
        return False
    reader = DrainedReader(transport, limit)
    # replaces the transport's own reader (the selector keeps one per descriptor); closing the
    # transport removes it as it would asyncio's
    loop._add_reader(transport._sock_fd, reader.read_ready)  # type: ignore[attr-defined]
    transport._remotecase_drained = True  # type: ignore[attr-defined]
    transport._remotecase_reader = reader  # type: ignore[attr-defined]
    return True


# SO_TIMESTAMPNS (Linux, asm-generic and x86: 35; Python's socket module does not name it);
# its control message is a struct timespec of two native longs, on CLOCK_REALTIME
SO_TIMESTAMPNS: int = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@ll")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 64
# The realtime clock stepped (NTP, an operator's date) when its offset to the monotonic one
# moved more than this between two reads, plus what a slew can do (0.1%) in the time between.
CLOCK_STEP_NS = 2_000_000
# a pair of clock reads further apart than this (preempted between them) gives no offset
OFFSET_READ_NS = 200_000
# a stamp older than this (or in the future) is not believed: the loop's read time is used
MAX_STAMP_AGE_NS = 10_000_000_000


class _Clock:
    """The realtime-to-monotonic offset, read once per wakeup, shared by a thread's readers
    (a step is seen by the first reader that reads it)."""

    __slots__ = ("offset", "read_at", "steps")

    def __init__(self) -> None:
        self.offset: int | None = None
        self.read_at = 0
        self.steps = 0  # clock steps seen (the stamps of that wakeup were not used)

    def offset_now(self) -> tuple[int, int] | None:
        """(offset, monotonic now): monotonic = realtime + offset; None when the realtime
        clock stepped since the last read (that wakeup's stamps are not used)."""
        mono, real = time.monotonic_ns, time.time_ns
        for _ in range(3):
            before = mono()
            wall = real()
            after = mono()
            if after - before <= OFFSET_READ_NS:
                break
        offset = (before + after) // 2 - wall
        last, elapsed = self.offset, after - self.read_at
        if after - before > OFFSET_READ_NS:
            # preempted at every try: keep the last offset (or, the first time, this one)
            return (offset if last is None else last), after
        self.offset, self.read_at = offset, after
        if last is not None and abs(offset - last) > CLOCK_STEP_NS + elapsed // 1000:
            self.steps += 1
            return None
        return offset, after


class _Clocks(threading.local):
    clock: _Clock | None = None


_CLOCKS = _Clocks()


def _clock() -> _Clock:
    clock = _CLOCKS.clock
    if clock is None:
        clock = _CLOCKS.clock = _Clock()
    return clock


def _read_failed(transport: Any, protocol: Any, exc: BaseException) -> None:
    """A read's error where asyncio's own reader sends it: an OS error to the protocol's
    ``error_received``, anything else to the transport's fatal error."""
    if isinstance(exc, OSError):
        protocol.error_received(exc)
    else:
        transport._fatal_error(exc, "Fatal read error on datagram transport")


class DrainedReader:
    """The reader :func:`drain_reads` installs on one transport's socket.

    Without stamps it reads with ``recvfrom``. Once :meth:`want_stamps` was called (a TWCC
    packet came through, issue 18) the socket has ``SO_TIMESTAMPNS`` on and each datagram is
    read with ``recvmsg`` and its kernel receive stamp, converted to the monotonic clock
    (an offset read once per wakeup; a realtime step in between, or a stamp not believable,
    and the read time is used instead), and set in :data:`mediaserver.twcc.CURRENT` around
    the synchronous ``datagram_received`` call, where the fast path's ``_record_twcc``
    reads it (:func:`mediaserver.twcc.arrival_ns`). A loop stall then no longer reads as
    queueing delay at the publisher's estimator. Other sockets pay nothing of it."""

    __slots__ = ("limit", "stamped", "stamps", "transport", "unstamped")

    def __init__(self, transport: Any, limit: int) -> None:
        self.transport = transport
        self.limit = limit
        self.stamps = False
        self.stamped = 0  # datagrams handed on with their kernel stamp
        self.unstamped = 0  # with stamps on, datagrams handed on with the read time instead

    def want_stamps(self) -> None:
        if self.stamps:
            return
        self.stamps = True
        try:
            self.transport._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError as exc:  # a platform without it: the read time, as before
            logger.debug("no kernel receive stamps: %s", exc)

    def read_ready(self) -> None:
        transport = self.transport
        current = twcc.CURRENT
        current.source = self
        try:
            if self.stamps:
                self._read_stamped(transport, current)
            else:
                self._read(transport)
        finally:
            current.source = None
            current.ns = 0

    def _read(self, transport: Any) -> None:
        recvfrom = transport._sock.recvfrom
        size = transport.max_size
        protocol = transport._protocol
        for _ in range(self.limit):
            if transport._conn_lost:
                return
            try:
                data, addr = recvfrom(size)
            except (BlockingIOError, InterruptedError):
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                _read_failed(transport, protocol, exc)
                return
            protocol.datagram_received(data, addr)

    def _read_stamped(self, transport: Any, current: Any) -> None:
        recvmsg = transport._sock.recvmsg
        size = transport.max_size
        protocol = transport._protocol
        unpack = _TIMESPEC.unpack
        clock = _clock().offset_now()
        offset, now = (0, time.monotonic_ns()) if clock is None else clock
        believed = clock is not None
        for _ in range(self.limit):
            if transport._conn_lost:
                return
            try:
                data, ancillary, _flags, addr = recvmsg(size, _ANCILLARY)
            except (BlockingIOError, InterruptedError):
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                _read_failed(transport, protocol, exc)
                return
            arrival = 0
            if believed and ancillary:
                level, kind, stamp = ancillary[0]
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanoseconds = unpack(stamp)
                    arrival = seconds * 1_000_000_000 + nanoseconds + offset
                    # stamped before this wakeup's clock read, within reason: a stamp from
                    # the future or from long ago is a clock step or garbage
                    if not now - MAX_STAMP_AGE_NS < arrival <= now + MAX_STAMP_AGE_NS // 10:
                        arrival = 0
            if arrival:
                self.stamped += 1
            else:
                self.unstamped += 1
                arrival = time.monotonic_ns()
            current.ns = arrival
            protocol.datagram_received(data, addr)


def tune_ice_sockets(pc: Any) -> int:
    """Drain the reads on every ICE socket of a connected aiortc peer connection
    (:func:`mediaserver.aiortc_hooks.ice_datagram_transports`) and size the buffers of its
    nominated pairs' sockets (:func:`~mediaserver.aiortc_hooks.nominated_datagram_transports`);
    the number of sockets whose reads changed. Idempotent."""
    for transport in nominated_datagram_transports(pc):
        sock = _socket_of(transport)
        if sock is not None:
            size_buffers(sock)
    changed = 0
    for transport in ice_datagram_transports(pc):
        if _socket_of(transport) is not None:
            changed += drain_reads(transport)
    return changed


def granted_buffers(pc: Any) -> list[tuple[int, int]]:
    """The receive and send buffer sizes the kernel reports for each nominated ICE socket of
    ``pc`` (what /metrics shows: below twice the asked size, the kernel's caps cut it)."""
    out: list[tuple[int, int]] = []
    for transport in nominated_datagram_transports(pc):
        sock = _socket_of(transport)
        if sock is None:
            continue
        try:
            out.append(
                (
                    sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                    sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                )
            )
        except OSError:  # closed between the look and the read
            continue
    return out


def _socket_of(transport: Any) -> Any:
    """An open asyncio transport's socket (asyncio's TransportSocket view of it); None for a
    wrapper (bench.impair's impaired link: its own business) or a closing transport."""
    if not isinstance(transport, asyncio.BaseTransport) or transport.is_closing():
        return None
    return transport.get_extra_info("socket")
