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

    def burn(seconds):
        # CPU work of the thread itself, measured in its own CPU time
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    async def main(kind):
        loop = asyncio.get_running_loop()
        loop.set_debug(True)
        loop.slow_callback_duration = BLOCKING_LIMIT
        delay = _RunDelay(threading.get_native_id())
        delay.start()
        handler = _SlowCallbacks(delay)
        logging.getLogger("asyncio").addHandler(handler)
        await asyncio.sleep(0.1)
        if kind == "sleep":
            loop.call_soon(time.sleep, BLOCKING_LIMIT + 0.3)
        elif kind == "burn":
            loop.call_soon(burn, 0.15)
        await asyncio.sleep(0.2)
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
