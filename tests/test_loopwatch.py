"""The event-loop watch and the garbage-collection policy (control/loopwatch.py), with the real
collector and a real event loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from control.loopwatch import BUCKETS, GcPolicy, LoopWatch
from tests.conftest import make_config, start_server

# What both policy scripts share: garbage only the cycle collector can reclaim, and a wait.
POLICY_PRELUDE = """
import asyncio, gc, sys, weakref
from control.loopwatch import GcPolicy


class Cyclic:
    # garbage only the cycle collector can reclaim, as a closed peer connection is
    def __init__(self):
        self.me = self


async def until(predicate, what):
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.01)
    sys.exit(f"timed out waiting for {what}")
"""

POLICY_SCRIPT = (
    POLICY_PRELUDE
    + """

async def main():
    counts = {"departures": 0, "participants": 3}
    trims = []  # each full collection asks the SFU's trimmer for a trim
    policy = GcPolicy(lambda: counts["departures"], lambda: counts["participants"],
                      freeze_every=0.05, full_after_departures=2, idle_after=0.1,
                      trim=lambda: trims.append(policy.full_collections))
    policy.start()
    kept = [Cyclic()]
    ref = weakref.ref(kept[0])
    await asyncio.sleep(0.2)  # a freeze tick passes: the object is now frozen
    assert gc.get_freeze_count() > 0
    kept.clear()
    gc.collect()  # an ordinary collection does not walk frozen objects
    assert ref() is not None, "frozen garbage waits for the deliberate collection"
    counts["departures"] = 1
    await asyncio.sleep(0.2)
    assert ref() is not None and policy.full_collections == 0, "one departure is not enough"
    counts["departures"] = 2
    await until(lambda: ref() is None, "a full collection after two departures")
    assert policy.full_collections == 1
    # with nobody connected, any departure is collected once the server has been idle
    kept.append(Cyclic())
    ref = weakref.ref(kept[0])
    await asyncio.sleep(0.2)
    kept.clear()
    counts["departures"], counts["participants"] = 3, 0
    await until(lambda: ref() is None, "an idle collection")
    assert policy.full_collections == 2
    assert trims == [1, 2], trims
    await policy.close()
    assert gc.get_freeze_count() == 0, "closing hands every object back to the collector"
    print("OK", policy.full_collections)


asyncio.run(main())
"""
)


def test_frozen_garbage_waits_for_departures_then_is_reclaimed() -> None:
    """The collector is process-wide, and a full collection walks the whole process: the policy
    runs in a process of its own, not inside pytest's."""
    result = subprocess.run(
        [sys.executable, "-c", POLICY_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["OK", "2"]


SCALED_SCRIPT = (
    POLICY_PRELUDE
    + """

async def main():
    counts = {"departures": 0, "participants": 5}
    policy = GcPolicy(lambda: counts["departures"], lambda: counts["participants"],
                      freeze_every=0.05, min_departures=2, full_after_departures=200)
    policy.start()
    kept = [Cyclic()]
    ref = weakref.ref(kept[0])
    await asyncio.sleep(0.2)
    kept.clear()
    counts["departures"] = 4  # fewer than the five connected
    await asyncio.sleep(0.3)
    assert ref() is not None and policy.full_collections == 0, "4 departures with 5 in calls"
    counts["departures"] = 5  # as many as are connected: far below 200
    await until(lambda: ref() is None, "a full collection after five departures")
    assert policy.full_collections == 1
    await policy.close()
    print("OK")


asyncio.run(main())
"""
)


def test_a_full_collection_comes_after_as_many_departures_as_are_connected() -> None:
    """The departures that call for a full collection follow the participants connected, so the
    dead participants' memory a server holds stays about that of its live calls: a small server
    does not keep 200 departed participants' objects (0.7 MB each) while it carries two calls."""
    policy = GcPolicy(lambda: 0, lambda: 0)
    assert [policy.departures_for_full(n) for n in (0, 2, 8, 56, 199, 200, 400)] == [
        8, 8, 8, 56, 199, 200, 200,
    ]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", SCALED_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["OK"]


async def test_a_blocked_loop_and_collections_show_in_metrics(tmp_path: Path) -> None:
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
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{server.base_url}/metrics") as response,
        ):
            body = await response.text()
        assert "remotecase_event_loop_lag_seconds_count" in body
        assert 'python_gc_collections_total{generation="2"}' in body
    finally:
        await server.runner.cleanup()


async def test_a_stall_says_where_its_time_went(caplog: Any) -> None:
    """The loop's own work shows as ``own`` (time on a core), a blocking call as ``off_core``
    (neither running nor waiting for a core), each counted by cause in /metrics and the worst
    logged with its parts, at most once in ten seconds."""
    caplog.set_level(logging.WARNING, logger="control.loopwatch")
    watch = LoopWatch(interval=0.01, warn_after=0.2, stall_after=0.1)
    watch.start()
    try:
        await asyncio.sleep(1.2)  # the other threads' time on a core is read once
        started = time.thread_time()
        while time.thread_time() - started < 0.3:  # 0.3 s on a core, however busy the machine
            pass
        await asyncio.sleep(0.05)
        time.sleep(0.35)  # noqa: ASYNC251 - a blocking call, off the core
        await asyncio.sleep(0.05)
        text = "\n".join(watch.render())
    finally:
        await watch.close()
    busy = next(s for s in watch.worst if s.parts["own"] >= 0.25)
    assert busy.cause in ("own", "core_wait"), busy  # a busy machine may keep it waiting longer
    blocked = next(s for s in watch.worst if s.parts["off_core"] >= 0.25)
    assert blocked.cause == "off_core" and blocked.parts["own"] < 0.1, blocked
    for stall in (busy, blocked):
        # the parts add up to the time between the two wake-ups (to the reading's precision)
        assert abs(sum(stall.parts.values()) - stall.span) < 0.02, stall
        assert stall.late >= 0.25
    assert watch.stalls["off_core"] >= 1 and sum(watch.stalls.values()) >= 2
    assert 'remotecase_event_loop_stalls_total{cause="off_core"}' in text
    assert 'remotecase_event_loop_stall_seconds_total{part="own"}' in text
    assert "remotecase_event_loop_watch_interval_seconds 0.01" in text
    logged = [r.getMessage() for r in caplog.records if "late (cause" in r.getMessage()]
    # the first stall is logged at once; the second, within ten seconds, waits for the next
    assert len(logged) == 1 and "the loop's own work" in logged[0], logged
