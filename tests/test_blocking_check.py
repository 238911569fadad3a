"""The suite's blocking-call check: it still catches a callback that holds the loop, and it
excuses the part of a slow callback that was only a wait for a core on a busy machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Runs in a process of its own, so that its deliberate stalls do not meet this test's own
# check. Once its imports are done it says "ready" and waits for a line on stdin (the busy-core
# test starts its hogs then: importing under them took most of that test's time). It prints
# what the check flagged and what it excused.
SCRIPT = textwrap.dedent("""
    import asyncio, json, logging, os, sys, threading, time
    sys.path.insert(0, {root!r})
    from tests.conftest import BLOCKING_LIMIT, _RunDelay, _SlowCallbacks
    from tests.loopstall import ThreadTimes

    def burn(seconds):
        # CPU work of the thread itself, measured in its own CPU time
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    def sum_to(n):
        # one call into C that keeps the interpreter's lock all the while
        return sum(range(n))

    def holder(go, n):
        go.wait()
        sum_to(n)
        time.sleep(5)  # still here when a late report takes its stack (a daemon: no wait at exit)

    async def main(kind):
        loop = asyncio.get_running_loop()
        loop.set_debug(True)
        loop.slow_callback_duration = BLOCKING_LIMIT
        delay = _RunDelay(threading.get_native_id())
        delay.start()
        threads = ThreadTimes(watch=threading.get_native_id())
        threads.start()
        handler = _SlowCallbacks(delay, threads=threads)
        logging.getLogger("asyncio").addHandler(handler)
        await asyncio.sleep(0.1)
        if kind == "sleep":
            loop.call_soon(time.sleep, BLOCKING_LIMIT + 0.3)
        elif kind == "burn":
            loop.call_soon(burn, 0.15)
        elif kind == "gil":
            # calibrated on this thread's time on a core, not the wall clock: on a busy
            # machine a preempted calibration made the hold too short to be flagged at all
            sum_to(1_000_000)
            start = time.thread_time()
            sum_to(2_000_000)
            n = int(2_000_000 * (BLOCKING_LIMIT + 0.6) / max(time.thread_time() - start, 1e-3))
            go = threading.Event()
            threading.Thread(target=holder, args=(go, n), name="gil-holder", daemon=True).start()

            def wait_for_the_lock():
                go.set()
                time.sleep(0.02)  # lets the lock go; taking it back waits for the holder

            loop.call_soon(wait_for_the_lock)
        await asyncio.sleep(0.2)
        threads.stop()
        delay.stop()
        print(json.dumps({{"flagged": handler.messages, "excused": handler.excused}}))

    logging.basicConfig(level=logging.WARNING, stream=open(os.devnull, "w"))
    print("ready", flush=True)
    sys.stdin.readline()
    asyncio.run(main(sys.argv[1]))
""").format(root=str(ROOT))


def run(
    kind: str, cpu: int | None = None, when_ready: Callable[[], object] | None = None
) -> dict[str, list[str]]:
    """The script in a child (pinned to ``cpu`` if given); ``when_ready`` is called once the
    child has imported what it needs, before it starts."""

    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    child = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=pin,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready", child.stderr
        if when_ready is not None:
            when_ready()
        out, errors = child.communicate("go\n", timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, errors
    result: dict[str, list[str]] = json.loads(out.strip().splitlines()[-1])
    return result


def test_a_blocking_sleep_is_flagged() -> None:
    result = run("sleep")
    assert len(result["flagged"]) == 1, result
    assert "sleep" in result["flagged"][0]


@pytest.mark.skipif(
    not Path(f"/proc/self/task/{os.getpid()}/schedstat").exists(),
    reason="the kernel has no per-thread schedstat",
)
def test_a_thread_holding_the_interpreter_lock_is_named() -> None:
    # The loop's callback waits to take the lock back from a thread in one long C call: the
    # report names that thread and shows where it held the lock.
    # its stack is taken once it let the lock go: still in sum_to, or already back in the
    # function that called it (the C call returned, and the thread went on to its sleep).
    # On a busy machine one run may not make the case at all (the holder preempted for most of
    # its hold, so the loop's wait reads as one for a core; the sampler itself kept off a core
    # past the report): up to three runs, each report kept for the failure's message.
    results = []
    for _ in range(3):
        result = run("gil")
        results.append(result)
        flagged = result["flagged"]
        if (
            len(flagged) == 1
            and "wait_for_the_lock" in flagged[0]
            and "other threads on a core then: gil-holder" in flagged[0]
            and "-- gil-holder" in flagged[0]
            and "in holder" in flagged[0]
        ):
            break
    else:
        raise AssertionError(f"no run named the lock's holder: {results}")


@pytest.mark.skipif(
    not Path(f"/proc/self/task/{os.getpid()}/schedstat").exists(),
    reason="the kernel has no per-thread schedstat",
)
def test_waiting_for_a_busy_core_is_not_counted() -> None:
    # Four processes spinning on the same core: a callback doing 0.15 s of its own work takes
    # well over the limit in wall time, almost all of it waiting for the core.
    cpu = sorted(os.sched_getaffinity(0))[0]
    hogs: list[subprocess.Popen[bytes]] = []

    def start_hogs() -> None:
        hogs.extend(
            subprocess.Popen(
                [sys.executable, "-c", "print('spinning', flush=True)\nwhile True: pass"],
                stdout=subprocess.PIPE,
                preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
            )
            for _ in range(4)
        )
        for hog in hogs:  # each is spinning before the child's callback starts
            assert hog.stdout is not None and hog.stdout.readline() == b"spinning\n"

    try:
        result = run("burn", cpu, when_ready=start_hogs)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert len(hogs) == 4
    assert result["flagged"] == [], result
    # The callback was slow in wall time (so the check looked at it) and was excused.
    assert len(result["excused"]) == 1, result
