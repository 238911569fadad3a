"""How late the event loop runs, and how long the garbage collector stops it.

Every forwarded packet waits for the event loop: whatever holds the loop (a slow callback, a
full garbage collection over hundreds of thousands of objects) is added to every packet's
latency. :class:`LoopWatch` wakes every ``interval`` and records how late it woke (the loop's
lag) and, through :data:`gc.callbacks`, every collection's pause, as Prometheus histograms in
``/metrics``; a lag past ``warn_after`` is logged with the collections that overlapped it.
``remotecase bench load`` reads the histograms at both ends of its window.

A wake-up later than ``stall_after`` is a stall, and the watch says where the time went, from
the loop thread's own scheduler counters (``/proc/thread-self/schedstat``, read at every
wake-up: time on a core and time runnable but waiting for one) and the collector's pauses:
``own`` (the loop's own work on a core, collections taken out), ``gc``, ``core_wait`` (runnable,
waiting for a core: the machine's other processes, or this process's other threads) and
``off_core`` (neither running nor runnable: waiting for the interpreter's lock another thread
held, or blocking I/O), with the process's other threads that ran on a core meanwhile. Each
stall is counted by its largest part in ``/metrics`` (``remotecase_event_loop_stalls_total``,
and the seconds of every part in ``remotecase_event_loop_stall_seconds_total``), the worst are
kept (:attr:`LoopWatch.worst`), and the worst of every ten seconds is logged.

:class:`GcPolicy` keeps full collections out of the media path. CPython's full collection walks
every tracked object, and a server with hundreds of participants holds millions of them (each
peer connection several thousand): measured, one full collection stopped forwarding for 100-250
ms about every 30 s at 400 participants. The policy freezes what has survived
(:func:`gc.freeze`, constant time) every ``freeze_every`` seconds (10), so the collector's automatic
passes only walk what is newer; garbage that was frozen (the reference cycles of participants
that have left) is reclaimed by a deliberate full collection (unfreeze, collect, freeze) when
enough participants have left, preferably when the server carries no call, and at the latest
after ``full_every`` seconds with departures. Each deliberate collection is logged with its pause.

"Enough" is as many as are connected (at least ``min_departures``, 8; at most
``full_after_departures``, 200): a full pass costs in proportion to everything tracked, the
start-up's objects (about 130,000 once the app is imported, some 30 ms a pass on this machine),
the connected participants' and the dead ones', so the memory of participants who left stays
about that of those connected, and on a loaded server a collection walks not much more than
twice what it frees. On a small one the start-up's objects dominate: a pause of some 30 ms
every 8 departures while calls go on, where before there was at most one every 15 minutes.
The fixed count alone (200) let a small server hold the objects of 200 departed participants,
about 0.7 MB each, while it carried two calls (docs/performance.md, "Session 16").
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from threading import get_native_id as threading_native_id
from typing import Any

from common.tasks import TaskSet
from mediaserver import memory

logger = logging.getLogger(__name__)

BUCKETS = (
    0.001,
    0.002,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

# a stall's parts, in the order they are reported
PARTS = ("own", "gc", "core_wait", "off_core")
PART_TEXT = {
    "own": "the loop's own work",
    "gc": "garbage collection",
    "core_wait": "waiting for a core",
    "off_core": "off the core (another thread held the interpreter's lock, or blocking I/O)",
}


@dataclass
class Stall:
    """One late wake-up of the loop watch and where its time went (seconds)."""

    at: float  # time.time() of the wake-up
    late: float
    span: float  # from the wake-up before to this one
    parts: dict[str, float]  # PARTS
    collections: list[str] = field(default_factory=list)  # "generation 1: 41 ms"
    threads: list[tuple[str, float]] = field(default_factory=list)  # others on a core

    @property
    def cause(self) -> str:
        return max(PARTS, key=lambda p: self.parts.get(p, 0.0))

    def text(self) -> str:
        parts = ", ".join(
            f"{PART_TEXT[p]} {1000 * self.parts[p]:.0f} ms"
            for p in PARTS
            if self.parts.get(p, 0.0) >= 0.0005
        )
        out = f"event loop {1000 * self.late:.0f} ms late (cause: {self.cause}; {parts}"
        if self.collections:
            out += f"; collections: {', '.join(self.collections)}"
        if self.threads:
            out += "; other threads on a core: " + ", ".join(
                f"{name} {1000 * s:.0f} ms" for name, s in self.threads
            )
        return out + ")"


def _read_schedstat(fd: int) -> tuple[float, float] | None:
    """(seconds on a core, seconds runnable waiting for one) from a schedstat file."""
    try:
        fields = os.pread(fd, 128, 0).split()
        return int(fields[0]) / 1e9, int(fields[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def thread_cpu(names: bool = True) -> dict[int, tuple[str, float]]:
    """(name, seconds on a core) of each of this process's threads (empty where /proc is not
    there); ``names`` False: the name left empty, one read a thread less."""
    out: dict[int, tuple[str, float]] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as fh:
                on_core = int(fh.read().split()[0]) / 1e9
            name = ""
            if names:
                with open(f"/proc/self/task/{tid}/comm") as fh:
                    name = fh.read().strip()
        except (OSError, IndexError, ValueError):
            continue  # the thread ended between the listing and the read
        out[int(tid)] = (name, on_core)
    return out


class Histogram:
    """Cumulative buckets, a sum and a count: Prometheus's histogram."""

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(BUCKETS):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value
        self.count += 1

    def samples(
        self, labels: dict[str, str] | None = None
    ) -> list[tuple[str, dict[str, str], float]]:
        base = dict(labels or {})
        out: list[tuple[str, dict[str, str], float]] = []
        running = 0
        for bound, n in zip((*[str(b) for b in BUCKETS], "+Inf"), self.counts, strict=True):
            running += n
            out.append(("_bucket", {**base, "le": bound}, running))
        out.append(("_sum", base, round(self.total, 6)))
        out.append(("_count", base, self.count))
        return out


class LoopWatch:
    KEEP_WORST = 5
    THREADS_EVERY = 1.0  # seconds between readings of the other threads' time on a core

    def __init__(
        self, interval: float = 0.05, warn_after: float = 0.25, stall_after: float = 0.1
    ) -> None:
        self.interval = interval
        self.warn_after = warn_after
        self.stall_after = stall_after
        self.lag = Histogram()
        self.gc_pause = Histogram()
        self.gc_collections = [0, 0, 0]
        self.stalls = dict.fromkeys(PARTS, 0)  # by cause (the largest part)
        self.stall_seconds = dict.fromkeys(PARTS, 0.0)  # every part of every stall
        self.worst: list[Stall] = []  # the KEEP_WORST latest-first worst, largest first
        self._gc_started: float | None = None
        self._gc_thread: int | None = None  # the thread the collection in progress runs on
        self._loop_thread: int | None = None  # start() is called on the loop's thread
        self._recent_gc: list[tuple[float, int, float]] = []  # (ended, generation, seconds)
        self._tasks = TaskSet("loopwatch", logger)
        self._started = False
        self._last_warning = 0.0
        self._unlogged: Stall | None = None  # the worst stall since the last warning
        self._sched_fd: int | None = None
        self._threads: tuple[float, dict[int, tuple[str, float]]] = (0.0, {})

    def start(self) -> None:
        if not self._started and not self._tasks.closed:
            self._started = True
            self._loop_thread = threading.get_ident()
            gc.callbacks.append(self._on_gc)
            try:  # the loop's own thread: start() is called on it
                self._sched_fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
            except OSError:
                self._sched_fd = None  # not Linux: stalls are told without their parts
            self._tasks.spawn(self._run(), "sampler")

    async def close(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        await self._tasks.close()
        if self._sched_fd is not None:
            fd, self._sched_fd = self._sched_fd, None
            os.close(fd)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_started = now
            self._gc_thread = threading.get_ident()
        elif self._gc_started is not None and self._gc_thread == threading.get_ident():
            pause = now - self._gc_started
            self._gc_started = None
            generation = int(info.get("generation", 0))
            if 0 <= generation <= 2:
                self.gc_collections[generation] += 1
            self.gc_pause.observe(pause)
            # a stall's "gc" part is the loop's own collections: another thread's collection
            # is the lock the loop waited for (off the core), not the loop's work
            if pause > 0.01 and self._gc_thread == self._loop_thread:
                self._recent_gc.append((now, generation, pause))
                del self._recent_gc[:-8]

    def _sched(self) -> tuple[float, float] | None:
        return _read_schedstat(self._sched_fd) if self._sched_fd is not None else None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        before, sched = time.perf_counter(), self._sched()
        while True:
            expected = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            late = max(0.0, loop.time() - expected)
            self.lag.observe(late)
            now, sched_now = time.perf_counter(), self._sched()
            if late >= self.stall_after:
                self._stall(late, before, now, sched, sched_now)
            if now - self._threads[0] >= self.THREADS_EVERY:
                # times only: a stall reads the names with its own reading (one file a thread
                # less each second)
                self._threads = (now, thread_cpu(names=False))
            if self._unlogged is not None and now - self._last_warning >= 10:
                self._warn()
            before, sched = now, sched_now

    def _stall(
        self,
        late: float,
        start: float,
        end: float,
        sched0: tuple[float, float] | None,
        sched1: tuple[float, float] | None,
    ) -> Stall:
        """Counts and keeps a stall between two wake-ups (perf_counter times)."""
        span = end - start
        pauses = [
            (ended, g, s) for ended, g, s in self._recent_gc if ended > start and ended <= end
        ]
        in_gc = min(span, sum(min(s, ended - start) for ended, _, s in pauses))
        parts = dict.fromkeys(PARTS, 0.0)
        if sched0 is not None and sched1 is not None:
            on_core = max(0.0, sched1[0] - sched0[0])
            waited = max(0.0, sched1[1] - sched0[1])
            # a collection's wall time may include waiting for a core (its thread preempted):
            # only its time on a core is "gc", the rest is counted as the wait it was
            parts["gc"] = min(in_gc, on_core)
            parts["own"] = on_core - parts["gc"]
            parts["core_wait"] = waited
            parts["off_core"] = max(0.0, span - on_core - waited)
        else:
            parts["gc"] = in_gc
            parts["own"] = max(0.0, span - in_gc)  # without the counters: not told apart
        threads: list[tuple[str, float]] = []
        taken, cpu0 = self._threads
        if cpu0:
            me = threading_native_id()
            cpu1 = thread_cpu()
            ran = sorted(
                ((c - cpu0[t][1], n) for t, (n, c) in cpu1.items() if t in cpu0 and t != me),
                reverse=True,
            )
            # since the last reading (at most THREADS_EVERY before the stall began)
            threads = [(n, s) for s, n in ran[:3] if s >= 0.1 * (end - min(taken, start))]
        stall = Stall(
            at=time.time(),
            late=late,
            span=span,
            parts=parts,
            collections=[f"generation {g}: {1000 * s:.0f} ms" for _, g, s in pauses],
            threads=threads,
        )
        self.stalls[stall.cause] += 1
        for p, s in parts.items():
            self.stall_seconds[p] += s
        self.worst = sorted([*self.worst, stall], key=lambda x: -x.late)[: self.KEEP_WORST]
        if late >= self.warn_after and (self._unlogged is None or late > self._unlogged.late):
            self._unlogged = stall
            if end - self._last_warning >= 10:
                self._warn()
        return stall

    def _warn(self) -> None:
        """Logs the worst stall since the last warning (at most one warning in ten seconds)."""
        stall, self._unlogged = self._unlogged, None
        if stall is None:
            return
        self._last_warning = time.perf_counter()
        logger.warning("%s", stall.text())

    def render(self) -> list[str]:
        """This watch's families in Prometheus's text format."""
        out: list[str] = []
        for name, help_text, histogram in (
            (
                "remotecase_event_loop_lag_seconds",
                f"How late a {self.interval:g} s timer fires: what every packet may wait for "
                "the event loop.",
                self.lag,
            ),
            ("python_gc_pause_seconds", "Pauses of the garbage collector.", self.gc_pause),
        ):
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
            for suffix, labels, value in histogram.samples():
                text = ",".join(f'{k}="{v}"' for k, v in labels.items())
                out.append(
                    f"{name}{suffix}{{{text}}} {value}" if text else f"{name}{suffix} {value}"
                )
        out += [
            "# HELP remotecase_event_loop_watch_interval_seconds What the loop watch sleeps: a "
            "loop that keeps up wakes it once this often.",
            "# TYPE remotecase_event_loop_watch_interval_seconds gauge",
            f"remotecase_event_loop_watch_interval_seconds {self.interval:g}",
            f"# HELP remotecase_event_loop_stalls_total Wake-ups {self.stall_after:g} s late "
            "or more, by their largest part (own, gc, core_wait, off_core).",
            "# TYPE remotecase_event_loop_stalls_total counter",
            *(
                f'remotecase_event_loop_stalls_total{{cause="{p}"}} {n}'
                for p, n in self.stalls.items()
            ),
            "# HELP remotecase_event_loop_stall_seconds_total The stalls' seconds by part.",
            "# TYPE remotecase_event_loop_stall_seconds_total counter",
            *(
                f'remotecase_event_loop_stall_seconds_total{{part="{p}"}} {round(s, 6)}'
                for p, s in self.stall_seconds.items()
            ),
            "# HELP python_gc_collections_total Collections by generation.",
            "# TYPE python_gc_collections_total counter",
        ]
        out += [
            f'python_gc_collections_total{{generation="{g}"}} {n}'
            for g, n in enumerate(self.gc_collections)
        ]
        return out


class GcPolicy:
    def __init__(
        self,
        departures: Any,
        participants: Any,
        *,
        freeze_every: float = 10.0,
        full_every: float = 900.0,
        full_after_departures: int = 200,
        min_departures: int = 8,
        idle_after: float = 5.0,
        trim: Callable[[], None] | None = None,
    ) -> None:
        """``departures()``: participants that have left so far; ``participants()``: how many
        are connected now; ``trim()``: asks for a ``malloc_trim`` after a full collection
        (the SFU's bounded :class:`~mediaserver.memory.HeapTrimmer`; None: one in a thread at
        once)."""
        self._departures = departures
        self._trim = trim
        self._participants = participants
        self.freeze_every = freeze_every
        self.full_every = full_every
        self.full_after_departures = full_after_departures
        self.min_departures = min_departures
        self.idle_after = idle_after
        self.full_collections = 0
        self._tasks = TaskSet("gc policy", logger)
        self._started = False

    def start(self) -> None:
        if not self._started and not self._tasks.closed:
            self._started = True
            gc.collect()
            gc.freeze()  # what start-up loaded: modules, models, configuration
            self._tasks.spawn(self._run(), "collector")

    async def close(self) -> None:
        await self._tasks.close()
        if self._started:
            self._started = False
            gc.unfreeze()  # hand everything back to the ordinary collector

    def departures_for_full(self, connected: int) -> int:
        """Departures since the last full collection that call for the next one while
        ``connected`` participants are in calls: as many as are connected, within
        ``min_departures`` and ``full_after_departures``."""
        return min(self.full_after_departures, max(self.min_departures, connected))

    def full_collection(self, why: str) -> float:
        started = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        pause = time.perf_counter() - started
        self.full_collections += 1
        logger.info(
            "full garbage collection (%s): %d unreachable objects, %.0f ms",
            why,
            found,
            1000 * pause,
        )
        return pause

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_full = loop.time()
        departed_at_full = self._departures()
        idle_since: float | None = None
        while True:
            await asyncio.sleep(self.freeze_every)
            now = loop.time()
            departed = self._departures() - departed_at_full
            connected = self._participants()
            if connected == 0:
                idle_since = now if idle_since is None else idle_since
            else:
                idle_since = None
            why = ""
            if departed and idle_since is not None and now - idle_since >= self.idle_after:
                why = f"no call in progress, {departed} departure(s)"
            elif departed >= self.departures_for_full(connected):
                why = f"{departed} departures, {connected} connected"
            elif departed and now - last_full >= self.full_every:
                why = f"{departed} departure(s) in {now - last_full:.0f} s"
            if why:
                self.full_collection(why)
                last_full, departed_at_full = loop.time(), self._departures()
                # what the collection freed goes back to the system (mediaserver/memory.py)
                if self._trim is not None:
                    self._trim()
                else:
                    await asyncio.to_thread(memory.trim_now)
            else:
                gc.freeze()
