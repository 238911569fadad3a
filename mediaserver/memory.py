"""Giving freed memory back to the system after calls end.

glibc's allocator keeps what the process freed inside its heap, for the next allocations:
measured (issue 19, docs/performance.md), after 13 one-to-one rooms had closed the heap in use
was back to where it started but 38.7 MB stayed resident, free inside the heap, until
``malloc_trim(0)`` gave 34.6 MB of it back. A server whose load falls kept its high-water
mark. :class:`HeapTrimmer` calls ``malloc_trim(0)`` once rooms have closed: once for a batch of
rooms closing together (the end of a hearing day, a benchmark step), a few seconds after the
last, in a thread (it walks the heap; ctypes lets go of the GIL meanwhile). Only with glibc:
elsewhere (musl, macOS) it does nothing.

Python's own small-object arenas are given back by Python itself when one is wholly empty;
objects still in reference cycles are freed only by the garbage collector
(``control/loopwatch.py`` ``GcPolicy``), which asks for a trim after its full collections too.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import time
from collections.abc import Callable

from common.tasks import TaskSet

logger = logging.getLogger(__name__)

# Seconds after the last room closed before the trim: rooms closing together share one.
TRIM_DELAY = 2.0


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


class HeapTrimmer:
    """One trim a few seconds after the last of a batch of requests, in a thread. Owned by the
    SFU (:class:`~mediaserver.room.Sfu`)."""

    def __init__(self, delay: float = TRIM_DELAY) -> None:
        self.delay = delay
        self.trims = 0  # trims run (for tests and diagnostics)
        self._tasks = TaskSet("heap trimmer", logger)
        self._timer: asyncio.TimerHandle | None = None

    @property
    def pending(self) -> bool:
        """A trim is due or running."""
        return self._timer is not None or len(self._tasks) > 0

    def request(self) -> None:
        """Trim once nothing more is asked for ``delay`` seconds (a room closed). Does
        nothing without glibc, or once closed."""
        if _MALLOC_TRIM is None or self._tasks.closed:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self.delay, self._start)

    def _start(self) -> None:
        self._timer = None
        if not self._tasks.closed:
            self._tasks.spawn(self._trim(), "malloc_trim")

    async def _trim(self) -> None:
        released, seconds = await asyncio.to_thread(trim_now)
        self.trims += 1
        logger.debug(
            "malloc_trim: %s in %.1f ms", "released" if released else "nothing", 1e3 * seconds
        )

    async def close(self) -> None:
        """Cancel a trim not begun; idempotent (one already in its thread ends there)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._tasks.close()
