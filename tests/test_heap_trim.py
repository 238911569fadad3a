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
    """Two rooms end together: one trim, a moment after the last closed, none while open; a
    participant joining meanwhile puts it off until the joins have been quiet."""
    trimmer = server.sfu.trimmer
    trimmer.delay = 6.0  # both rooms close within it, even on a busy machine
    trimmer.policy.growth = 0  # these small rooms grow the process by little
    trimmer.policy.every = 0.0
    trimmer.policy.quiet = 3.0
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
    loop = asyncio.get_running_loop()
    await join(server, clients, "trim3", "c")  # someone joins another room meanwhile
    joined = loop.time()
    begun = trimmer.trims > trims or trimmer.running  # (only on a very busy machine)
    await wait_until(lambda: trimmer.trims > trims, timeout=30, what="a trim")
    if not begun:  # the join counted before the trim began: it waited quiet seconds after
        assert trimmer.policy.last_trim - joined >= trimmer.policy.quiet - 0.5
    await asyncio.sleep(1.0)
    assert trimmer.trims == trims + 1 and not trimmer.pending  # one for both rooms


def test_a_trim_waits_for_quiet_and_runs_at_most_once_a_minute() -> None:
    """A trim stops the loop for its whole length (glibc's arena lock): it runs only when no
    participant has joined for TRIM_QUIET seconds, at most once per TRIM_EVERY seconds, and
    one put off by joins runs after TRIM_WAIT seconds anyway."""
    mb = 2**20
    policy = memory.TrimPolicy(every=60, growth=16 * mb, quiet=5, wait=300, resident=100 * mb)
    assert policy.due(0.0, 0, 200 * mb) is None  # nothing asked
    policy.asked(10.0, activity=0)
    assert policy.due(12.0, 0, 200 * mb) == 0.0  # asked, quiet, grown: now
    policy.trimmed(12.1, resident=150 * mb)
    # asked again at once, the process grown again: not before a minute after the last trim
    policy.asked(13.0, activity=0)
    assert policy.due(15.0, 0, 200 * mb) == pytest.approx(57.1)
    # meanwhile participants join: put off until 5 s after the last join seen
    assert policy.due(72.1, 3, 200 * mb) == pytest.approx(5.0)
    assert policy.due(77.1, 4, 200 * mb) == pytest.approx(5.0)
    assert policy.due(82.1, 4, 200 * mb) == 0.0
    policy.trimmed(82.2, resident=150 * mb)
    # joins that never stop: the trim asked runs 300 s after it was asked, not never
    policy.asked(200.0, activity=4)
    now, activity, runs = 202.0, 4, 0
    while now < 600:
        activity += 1
        wait = policy.due(now, activity, 200 * mb)
        assert wait is not None
        if wait == 0:
            runs += 1
            break
        now += min(wait, 1.0)  # one join a second
    assert runs == 1 and 500 <= now < 502


def test_a_trim_is_not_run_when_the_process_did_not_grow() -> None:
    """Less than TRIM_GROWTH more resident than after the last trim (or the lowest since):
    there is little to give back, not worth stopping the loop; the request is dropped."""
    mb = 2**20
    policy = memory.TrimPolicy(every=60, growth=16 * mb, quiet=5, wait=300, resident=100 * mb)
    policy.asked(0.0, activity=0)
    assert policy.due(2.0, 0, 110 * mb) is None and not policy.waiting
    assert policy.skipped == {"not_grown": 1}
    # the lowest seen counts: down to 90 MB, then up to 107 MB is growth enough
    policy.asked(3.0, activity=0)
    assert policy.due(5.0, 0, 90 * mb) is None
    policy.asked(6.0, activity=0)
    assert policy.due(8.0, 0, 107 * mb) == 0.0
