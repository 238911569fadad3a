"""Who held the loop up: each thread's time on a core, and every thread's stack when the
sampler itself was kept waiting (a thread held the interpreter's lock in C code), so that a
slow callback whose loop thread waited off the core names the thread it waited for."""

from __future__ import annotations

import collections
import gc
import sys
import threading
import time
import traceback
from typing import Any

from control.loopwatch import thread_cpu


def _cpu_times() -> dict[int, float]:
    """Seconds on a core, per native thread id of this process."""
    return {tid: seconds for tid, (_, seconds) in thread_cpu(names=False).items()}


def _current_frames() -> dict[int, Any]:
    """``sys._current_frames()`` with the garbage collector held off. CPython 3.11 before 3.11.9
    (here 3.11.7) allocates under its thread-list lock in that call, and a collection there that
    frees a ``threading.local`` takes the lock again: the process deadlocks (CPython gh-106883,
    fixed in 3.11.9 by this same hold). A fresh-clone run of the suite hung so, in this sampler,
    with every thread waiting for the interpreter's lock."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return sys._current_frames()
    finally:
        if enabled:
            gc.enable()


def _stacks() -> dict[int, tuple[str, str]]:
    """(thread name, its Python stack), per native thread id, for the threads Python knows."""
    by_ident = {t.ident: t for t in threading.enumerate()}
    stacks: dict[int, tuple[str, str]] = {}
    for ident, frame in _current_frames().items():
        thread = by_ident.get(ident)
        if thread is None or thread.native_id is None:
            continue
        lines = traceback.format_stack(frame, limit=8)
        stacks[thread.native_id] = (thread.name, "".join(lines))
    return stacks


class ThreadTimes:
    """Samples every thread's time on a core each ``PERIOD``; when a sample comes more than
    ``LATE`` seconds after the last (this sampler waited for the interpreter's lock too), takes
    every thread's stack at once: the thread that held the lock has just let it go, and is
    still where it held it."""

    PERIOD = 0.05
    LATE = 0.25

    def __init__(self, watch: int | None = None) -> None:
        self._watch = watch  # the loop's thread: its stack when it stays on one line
        self._samples: collections.deque[tuple[float, dict[int, float]]] = collections.deque(
            maxlen=1200
        )
        self._stacks: collections.deque[tuple[float, float, dict[int, tuple[str, str]]]] = (
            collections.deque(maxlen=20)
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="thread-times", daemon=True)

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def _sample(self) -> None:
        # Stamped when the read is done, not when it starts: the read lets the interpreter's
        # lock go at every file it opens, and a thread that takes it then may run a long while
        # before the read goes on. A sample stamped at its start would then hold that thread's
        # time as if it were spent before, and the stall would seem to have had no one on a core.
        times = _cpu_times()
        self._samples.append((time.monotonic(), times))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        last = time.monotonic()
        ident = next((t.ident for t in threading.enumerate() if t.native_id == self._watch), None)
        where: tuple[int, int] | None = None  # the watched thread's frame and instruction
        since = last
        while not self._stop.wait(self.PERIOD):
            now = time.monotonic()
            if now - last > self.PERIOD + self.LATE:
                self._stacks.append((now, now - last, _stacks()))
            elif ident is not None:
                # the loop's thread on one instruction (not in its selector) for LATE: blocked
                frame = _current_frames().get(ident)
                here = (id(frame), frame.f_lasti) if frame is not None else None
                if here != where or frame is None or frame.f_code.co_name == "select":
                    where, since = here, now
                elif now - since > self.LATE:
                    self._stacks.append((now, now - since, _stacks()))
                    since = float("inf")  # once a stall
            self._sample()
            last = now

    def report(self, start: float, end: float, *, exclude: int | None = None) -> str:
        """The threads that ran most on a core between ``start`` and ``end`` (monotonic), the
        loop's own (``exclude``) left out, with the stacks taken when this sampler was late
        in that span. Waits (briefly) for the sampler's first turn after ``end``: when the loop's
        thread took the lock back before it, the stacks are not taken yet."""
        deadline = time.monotonic() + 4 * self.PERIOD + self.LATE
        while self._thread.is_alive() and self._samples[-1][0] <= end:
            if time.monotonic() > deadline:
                break
            time.sleep(self.PERIOD / 5)
        before = next((s for t, s in reversed(self._samples) if t <= start), None)
        if before is None:
            before = self._samples[0][1] if self._samples else {}
        after = _cpu_times()
        names = {t.native_id: t.name for t in threading.enumerate()}
        ran = sorted(
            ((after[tid] - before.get(tid, 0.0), tid) for tid in after if tid != exclude),
            reverse=True,
        )
        busiest = [(seconds, tid) for seconds, tid in ran[:3] if seconds > 0.05]
        parts = [
            "other threads on a core then: "
            + (
                ", ".join(
                    f"{names.get(tid, 'not Python')} ({tid}) {seconds:.3f} s"
                    for seconds, tid in busiest
                )
                or "none over 0.05 s"
            )
        ]
        for taken, late, stacks in self._stacks:
            if start - self.PERIOD <= taken <= end + 2 * self.PERIOD:
                parts.append(f"stacks taken {late:.3f} s into a stall:")
                for tid, (name, stack) in stacks.items():
                    if tid == exclude or tid in {t for _, t in busiest}:
                        parts.append(f"-- {name} ({tid}):\n{stack}")
        return "\n".join(parts)
