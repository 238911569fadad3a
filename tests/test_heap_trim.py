"""Freed memory goes back to the system after rooms close (mediaserver/memory.py)."""

from __future__ import annotations

import asyncio
import resource

import pytest

from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from mediaserver import memory
from tests.conftest import Server, join, wait_until

pytestmark = pytest.mark.skipif(not memory.available(), reason="malloc_trim is glibc's")


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def test_trim_gives_back_what_the_heap_kept() -> None:
    """60 MB in blocks malloc serves from its heap, freed under one block still in use at the
    heap's top: glibc keeps the free pages until malloc_trim."""
    memory.trim_now()
    blocks = [bytes(1100) for _ in range(55_000)]  # over 512 bytes: malloc, not pymalloc
    pin = bytes(1100)  # allocated after them: the heap cannot shrink from its top
    before_free = _rss_mb()
    del blocks
    kept = _rss_mb()
    released, seconds = memory.trim_now()
    after = _rss_mb()
    assert before_free - kept < 20, "freed memory went back without a trim: nothing to test"
    assert released and kept - after > 40, (before_free, kept, after)
    assert seconds < 5
    del pin


async def test_a_trim_follows_the_close_of_rooms(server: Server, clients: list[PeerClient]) -> None:
    """Two rooms end together: one trim, a moment after the last closed, none while open."""
    trimmer = server.sfu.trimmer
    trimmer.delay = 6.0  # both rooms close within it, even on a busy machine
    trims = trimmer.trims
    pairs = []
    for room in ("trim1", "trim2"):
        a = await join(server, clients, room, "a")
        b = await join(server, clients, room, "b")
        await a.publish(PatternVideoTrack(fps=15), ToneAudioTrack(440))
        pairs.append((a, b))
    await wait_until(
        lambda: all(b.mids_for_participant("a") for _, b in pairs), timeout=20, what="media"
    )
    await asyncio.sleep(1.0)
    assert trimmer.trims == trims and not trimmer.pending  # rooms open: no trim
    for a, b in pairs:
        await a.leave()
        await b.leave()
    await wait_until(lambda: not server.sfu.rooms, timeout=20, what="rooms closed")
    # pending, or (a poll late by the whole delay on a busy machine) already done
    assert trimmer.pending or trimmer.trims == trims + 1
    await wait_until(lambda: trimmer.trims > trims, timeout=20, what="a trim")
    await asyncio.sleep(1.0)
    assert trimmer.trims == trims + 1 and not trimmer.pending  # one for both rooms
