"""Giving freed memory back to the system after calls end.

glibc's allocator keeps what the process freed inside its heap, for the next allocations:
measured (issue 19, docs/performance.md), after 13 one-to-one rooms had closed the heap in use
was back to where it started but 38.7 MB stayed resident, free inside the heap, until
``malloc_trim(0)`` gave 34.6 MB of it back. A server whose load falls kept its high-water
mark. :class:`HeapTrimmer` calls ``malloc_trim(0)`` once rooms have closed, in a thread (it
walks the heap; ctypes lets go of the GIL meanwhile). Only with glibc: elsewhere (musl, macOS)
it does nothing.

A trim in a thread still stops the event loop: glibc holds each arena's lock while it walks
it, and the loop's own allocations (every packet's) wait for the main arena. Measured here:
the loop's worst step while a trim ran was the trim's whole length, 4-14 ms for a heap with
60 MB freed under a live block, against 1-3 ms without. So a trim runs only when it is worth it
and the loop is quiet (:class:`TrimPolicy`): the process grew by ``TRIM_GROWTH`` since the
last one, at most one per ``TRIM_EVERY`` seconds, and no participant joined for
``TRIM_QUIET`` seconds (a join is when a call is most sensitive to a stall: ICE, DTLS and the
first keyframe), though one put off by joins runs after ``TRIM_WAIT`` seconds anyway.

Python's own small-object arenas are given back by Python itself when one is wholly empty;
objects still in reference cycles are freed only by the garbage collector
(``control/loopwatch.py`` ``GcPolicy``), which asks the SFU's trimmer for a trim after its
full collections too.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import resource
import time
from collections import Counter
from collections.abc import Callable

from common.tasks import TaskSet

logger = logging.getLogger(__name__)

# Seconds after the last room closed before the trim: rooms closing together share one.
TRIM_DELAY = 2.0
# At most one trim per TRIM_EVERY seconds; only once the resident size grew by TRIM_GROWTH bytes
# since the last one (less: not worth stopping the loop for, see the module's text); only once
# no participant joined for TRIM_QUIET seconds, unless the trim was asked TRIM_WAIT seconds ago.
TRIM_EVERY = 60.0
TRIM_GROWTH = 16 * 2**20
TRIM_QUIET = 5.0
TRIM_WAIT = 300.0


def _load_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return None
        trim = ctypes.CDLL(None).malloc_trim  # the process's own C library
    except (AttributeError, OSError, ValueError):  # no confstr, no such name, no glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


_MALLOC_TRIM = _load_malloc_trim()


def available() -> bool:
    """True where ``malloc_trim`` exists (glibc)."""
    return _MALLOC_TRIM is not None


def trim_now() -> tuple[bool, float]:
    """``malloc_trim(0)`` in the calling thread: (whether memory went back, seconds taken).
    Blocking: on the event loop, use :class:`HeapTrimmer`."""
    if _MALLOC_TRIM is None:
        return False, 0.0
    started = time.perf_counter()
    released = bool(_MALLOC_TRIM(0))
    return released, time.perf_counter() - started


def resident_bytes() -> int:
    """The process's resident size (``/proc/self/statm``; 0 where there is none). A read of a
    few bytes from procfs: cheap enough for the event loop."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


class TrimPolicy:
    """When a trim asked for may run: pure (every time and count is given), so that it is tested
    without waiting. ``activity``: a count that moves when a participant joins (the SFU's
    joins); ``resident``: the process's resident size in bytes."""

    def __init__(
        self,
        *,
        every: float = TRIM_EVERY,
        growth: int = TRIM_GROWTH,
        quiet: float = TRIM_QUIET,
        wait: float = TRIM_WAIT,
        activity: int = 0,
        resident: int = 0,
    ) -> None:
        self.every = every
        self.growth = growth
        self.quiet = quiet
        self.wait = wait
        self.skipped: Counter[str] = Counter()  # trims asked for and not run, by why
        self._activity = activity
        self._active_at = -1e18  # when the activity count was last seen to move
        self._last_trim = -1e18
        self._baseline = resident  # the lowest resident size since the last trim (or start)
        self._asked_at: float | None = None  # the first request not served yet

    @property
    def last_trim(self) -> float:
        """When the last trim ended (the loop's time; far in the past before the first)."""
        return self._last_trim

    @property
    def waiting(self) -> bool:
        """A trim was asked for and not yet run or dropped."""
        return self._asked_at is not None

    def asked(self, now: float, activity: int) -> None:
        """A trim was asked for (a room closed, or a full garbage collection)."""
        self._see(now, activity)
        if self._asked_at is None:
            self._asked_at = now

    def due(self, now: float, activity: int, resident: int) -> float | None:
        """The time has come for a trim asked for: 0 to run it now, seconds to look again in,
        or None: not worth it (the request is dropped, counted in ``skipped``)."""
        self._see(now, activity)
        self._baseline = min(self._baseline, resident)
        if self._asked_at is None:
            return None
        if now < self._last_trim + self.every:
            return self._last_trim + self.every - now
        if now < self._active_at + self.quiet and now < self._asked_at + self.wait:
            return min(self._active_at + self.quiet, self._asked_at + self.wait) - now
        self._asked_at = None
        if resident - self._baseline < self.growth:
            self.skipped["not_grown"] += 1
            return None
        return 0.0

    def trimmed(self, now: float, resident: int) -> None:
        """A trim ended, leaving the process ``resident`` bytes."""
        self._last_trim = now
        self._baseline = resident

    def _see(self, now: float, activity: int) -> None:
        if activity != self._activity:
            self._activity = activity
            self._active_at = now


class HeapTrimmer:
    """One trim a few seconds after the last of a batch of requests, in a thread, when
    :class:`TrimPolicy` lets it. Owned by the SFU (:class:`~mediaserver.room.Sfu`), which gives
    it ``activity``: its count of participants joined."""

    def __init__(
        self,
        delay: float = TRIM_DELAY,
        *,
        activity: Callable[[], int] = lambda: 0,
        resident: Callable[[], int] = resident_bytes,
    ) -> None:
        self.delay = delay
        self.trims = 0  # trims run (for tests and diagnostics)
        self.policy = TrimPolicy(activity=activity(), resident=resident())
        self._activity = activity
        self._resident = resident
        self._tasks = TaskSet("heap trimmer", logger)
        self._timer: asyncio.TimerHandle | None = None

    @property
    def pending(self) -> bool:
        """A trim is due or running."""
        return self._timer is not None or len(self._tasks) > 0

    @property
    def running(self) -> bool:
        """A trim is in its thread."""
        return len(self._tasks) > 0

    def request(self) -> None:
        """Trim once nothing more is asked for ``delay`` seconds (a room closed), when the
        policy lets it. Does nothing without glibc, or once closed."""
        if _MALLOC_TRIM is None or self._tasks.closed:
            return
        loop = asyncio.get_running_loop()
        self.policy.asked(loop.time(), self._activity())
        if len(self._tasks):
            return  # one is running: it looks again when it ends
        self._schedule(self.delay)

    def _schedule(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._due)

    def _due(self) -> None:
        self._timer = None
        if self._tasks.closed:
            return
        now = asyncio.get_running_loop().time()
        wait = self.policy.due(now, self._activity(), self._resident())
        if wait is None:
            logger.debug("malloc_trim: not worth it (%s)", dict(self.policy.skipped))
        elif wait > 0:
            self._schedule(wait)
        else:
            self._tasks.spawn(self._trim(), "malloc_trim")

    async def _trim(self) -> None:
        released, seconds = await asyncio.to_thread(trim_now)
        self.trims += 1
        self.policy.trimmed(asyncio.get_running_loop().time(), self._resident())
        logger.debug(
            "malloc_trim: %s in %.1f ms", "released" if released else "nothing", 1e3 * seconds
        )
        if self.policy.waiting and not self._tasks.closed and self._timer is None:
            self._schedule(self.delay)  # asked again meanwhile: the policy says when (or not)

    async def close(self) -> None:
        """Cancel a trim not begun; idempotent (one already in its thread ends there)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._tasks.close()
