"""The event-loop watch and the garbage-collection policy (control/loopwatch.py), with the real
collector and a real event loop."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref

import aiohttp

from control.loopwatch import BUCKETS, GcPolicy, LoopWatch
from tests.conftest import make_config, start_server, wait_until


class _Cyclic:
    """Garbage only the cycle collector can reclaim, as a closed peer connection is."""

    def __init__(self) -> None:
        self.me = self


async def test_frozen_garbage_waits_for_departures_then_is_reclaimed() -> None:
    departures = 0
    participants = 3
    policy = GcPolicy(lambda: departures, lambda: participants, freeze_every=0.05,
                      full_after_departures=2, idle_after=0.1)
    policy.start()
    try:
        kept = [_Cyclic()]
        ref = weakref.ref(kept[0])
        await asyncio.sleep(0.2)  # a freeze tick passes: the object is now frozen
        assert gc.get_freeze_count() > 0
        kept.clear()
        gc.collect()  # an ordinary collection does not walk frozen objects
        assert ref() is not None, "frozen garbage is left for the deliberate collection"
        departures = 1
        await asyncio.sleep(0.2)
        assert ref() is not None and policy.full_collections == 0, "one departure is not enough"
        departures = 2
        await wait_until(lambda: ref() is None, timeout=2, what="a full collection")
        assert policy.full_collections == 1

        # with nobody connected, any departure is collected once the server has been idle
        kept.append(_Cyclic())
        ref = weakref.ref(kept[0])
        await asyncio.sleep(0.2)
        kept.clear()
        departures, participants = 3, 0
        await wait_until(lambda: ref() is None, timeout=2, what="an idle collection")
        assert policy.full_collections == 2
    finally:
        await policy.close()
    assert gc.get_freeze_count() == 0, "closing hands every object back to the collector"


async def test_a_blocked_loop_and_collections_show_in_metrics(tmp_path) -> None:
    watch = LoopWatch(interval=0.01, warn_after=10.0)
    watch.start()
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.12)  # noqa: ASYNC251 - holds the loop, as a long callback would
        await asyncio.sleep(0.05)
        gc.collect()
        text = "\n".join(watch.render())
    finally:
        await watch.close()
    assert watch.lag.count >= 3
    # the held loop lands in a bucket above 100 ms, and below it the buckets are cumulative
    assert 'remotecase_event_loop_lag_seconds_bucket{le="0.1"}' in text
    over = watch.lag.counts[BUCKETS.index(0.25)]  # (0.1, 0.25]
    assert over >= 1, watch.lag.counts
    assert watch.gc_pause.count >= 1 and watch.gc_collections[2] >= 1

    server = await start_server(make_config(tmp_path))
    try:
        async with aiohttp.ClientSession() as http, \
                http.get(f"{server.base_url}/metrics") as response:
            body = await response.text()
        assert "remotecase_event_loop_lag_seconds_count" in body
        assert 'python_gc_collections_total{generation="2"}' in body
    finally:
        await server.runner.cleanup()

