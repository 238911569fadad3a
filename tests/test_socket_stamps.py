"""TWCC arrival times from the kernel (issue 18, mediaserver/sockets.py): a drained socket that
carried a TWCC packet takes the kernel's receive stamps, so a datagram's recorded arrival is
when the host received it, not when a stalled loop got round to reading it."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from mediaserver import sockets, twcc


class _Recording(asyncio.DatagramProtocol):
    """Records, for each datagram, what ``_record_twcc`` would (``twcc.arrival_ns()``) and
    when it was read (the loop's clock at the call)."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, int, int]] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.seen.append((data, twcc.arrival_ns(), time.monotonic_ns()))


async def _endpoint() -> tuple[asyncio.DatagramTransport, _Recording, sockets.DrainedReader]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        _Recording, local_addr=("127.0.0.1", 0)
    )
    assert sockets.drain_reads(transport)
    reader = transport._remotecase_reader  # type: ignore[attr-defined]
    assert isinstance(reader, sockets.DrainedReader)
    return transport, protocol, reader


def _stall(seconds: float) -> None:
    """Block the event loop (what a slow callback does: the loop does not read meanwhile)."""
    time.sleep(seconds)


async def _turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def _kernel_stamping(
    sender: socket.socket,
    address: tuple[str, int],
    protocol: _Recording,
    reader: sockets.DrainedReader,
) -> None:
    """Wait until the kernel stamps datagrams when they arrive, then forget the probes.

    Linux turns receive stamping on for the whole host through a static key it flips later,
    from a work queue, after the first socket asks (``net_enable_timestamp``); until then a
    datagram is stamped when it is read. A server gets that for its first packets, which is
    harmless; a test that sends at once would read it as a wrong stamp (stop 25's CI)."""
    for _ in range(200):
        sender.sendto(b"probe", address)
        _stall(0.02)
        await _turns()
        if protocol.seen:
            _, arrival, read = protocol.seen[-1]
            if read - arrival >= 10_000_000:
                break
    else:
        raise AssertionError("the kernel never stamped a datagram at its arrival")
    protocol.seen.clear()
    reader.stamped = reader.unstamped = 0


async def test_a_datagram_read_after_a_stall_keeps_its_kernel_arrival() -> None:
    transport, protocol, reader = await _endpoint()
    address = transport.get_extra_info("sockname")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            # the first TWCC packet through a reader without stamps: the read time, and the
            # socket takes stamps from then on
            assert not reader.stamps
            sender.sendto(b"first", address)
            await asyncio.sleep(0.05)
            assert [d for d, _, _ in protocol.seen] == [b"first"]
            _, arrival, read = protocol.seen[0]
            assert 0 <= read - arrival < 50_000_000
            assert reader.stamps
            first = protocol.seen[0]
            await _kernel_stamping(sender, address, protocol, reader)
            protocol.seen.append(first)
            # now a datagram, then the loop blocked 300 ms, then the read
            sent = time.monotonic_ns()
            sender.sendto(b"late", address)
            _stall(0.3)
            await _turns()
        assert [d for d, _, _ in protocol.seen] == [b"first", b"late"]
        _, arrival, read = protocol.seen[1]
        assert read - sent >= 300_000_000
        # the recorded arrival is the kernel's (just after the send), ~300 ms before the read
        assert sent - 5_000_000 <= arrival <= sent + 50_000_000, (arrival - sent) / 1e6
        assert read - arrival >= 250_000_000, (read - arrival) / 1e6
        assert reader.stamped == 1 and reader.unstamped == 0
        # outside a read nothing is set: aiortc's own queued path gets the time it runs
        before = time.monotonic_ns()
        assert before <= twcc.arrival_ns() <= time.monotonic_ns()
        assert twcc.CURRENT.ns == 0 and twcc.CURRENT.source is None
    finally:
        transport.close()


async def test_many_stamped_datagrams_each_keep_their_own_arrival() -> None:
    transport, protocol, reader = await _endpoint()
    reader.want_stamps()
    reader.want_stamps()  # idempotent
    address = transport.get_extra_info("sockname")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            await _kernel_stamping(sender, address, protocol, reader)
            sends = []
            for i in range(sockets.READS_PER_WAKEUP + 6):  # more than one wakeup reads
                sends.append(time.monotonic_ns())
                sender.sendto(i.to_bytes(2, "big"), address)
                if i % 10 == 9:
                    _stall(0.02)
            await _turns(8)
        assert [d for d, _, _ in protocol.seen] == [i.to_bytes(2, "big") for i in range(70)]
        arrivals = [a for _, a, _ in protocol.seen]
        # each its own, in order, spread as they were sent (not one read time for all)
        assert arrivals == sorted(arrivals)
        assert arrivals[-1] - arrivals[0] >= 100_000_000
        for sent, arrival in zip(sends, arrivals, strict=True):
            assert sent - 5_000_000 <= arrival, (arrival - sent) / 1e6
        assert reader.stamped == 70
    finally:
        transport.close()


async def test_a_realtime_clock_step_falls_back_to_the_read_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The kernel stamps CLOCK_REALTIME: a step of it (NTP, an operator's date) between two
    wakeups must not move arrivals by the step; that wakeup uses the read time."""
    transport, protocol, reader = await _endpoint()
    reader.want_stamps()
    address = transport.get_extra_info("sockname")
    clock = sockets._clock()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"a", address)
            await _turns()
            real = time.time_ns
            monkeypatch.setattr(time, "time_ns", lambda: real() + 3_600_000_000_000)
            steps = clock.steps
            sender.sendto(b"b", address)
            _stall(0.1)
            await _turns()
        assert [d for d, _, _ in protocol.seen] == [b"a", b"b"]
        assert clock.steps == steps + 1
        _, arrival, read = protocol.seen[1]
        assert 0 <= read - arrival < 50_000_000  # the read time, not an hour off
        assert reader.unstamped == 1
    finally:
        transport.close()


def test_the_clock_offset_is_kept_through_small_drift() -> None:
    clock = sockets._Clock()
    first = clock.offset_now()
    assert first is not None
    second = clock.offset_now()
    assert second is not None
    assert abs(second[0] - first[0]) < sockets.CLOCK_STEP_NS
    # realtime + offset is the monotonic clock
    assert abs(time.time_ns() + second[0] - time.monotonic_ns()) < 5_000_000
