"""How late the event loop runs, and how long the garbage collector stops it.

Every forwarded packet waits for the event loop: whatever holds the loop (a slow callback, a
full garbage collection over hundreds of thousands of objects) is added to every packet's
latency. :class:`LoopWatch` wakes every ``interval`` and records how late it woke (the loop's
lag) and, through :data:`gc.callbacks`, every collection's pause, as Prometheus histograms in
``/metrics``; a lag past ``warn_after`` is logged with the collections that overlapped it.
``remotecase bench load`` reads the histograms at both ends of its window.

:class:`GcPolicy` keeps full collections out of the media path. CPython's full collection walks
every tracked object, and a server with hundreds of participants holds millions of them (each
peer connection several thousand): measured, one full collection stopped forwarding for 100-250
ms about every 30 s at 400 participants. The policy freezes what has survived
(:func:`gc.freeze`, constant time) every ``freeze_every`` seconds (10), so the collector's automatic
passes only walk what is newer; garbage that was frozen (the reference cycles of participants
that have left) is reclaimed by a deliberate full collection (unfreeze, collect, freeze) when
enough participants have left, preferably when the server carries no call, and at the latest
after ``full_every`` seconds with departures. Each deliberate collection is logged with its pause.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
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
)


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
    def __init__(self, interval: float = 0.02, warn_after: float = 0.25) -> None:
        self.interval = interval
        self.warn_after = warn_after
        self.lag = Histogram()
        self.gc_pause = Histogram()
        self.gc_collections = [0, 0, 0]
        self._gc_started: float | None = None
        self._recent_gc: list[tuple[float, int, float]] = []  # (ended, generation, seconds)
        self._tasks = TaskSet("loopwatch", logger)
        self._started = False
        self._last_warning = 0.0

    def start(self) -> None:
        if not self._started and not self._tasks.closed:
            self._started = True
            gc.callbacks.append(self._on_gc)
            self._tasks.spawn(self._run(), "sampler")

    async def close(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        await self._tasks.close()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_started = now
        elif self._gc_started is not None:
            pause = now - self._gc_started
            self._gc_started = None
            generation = int(info.get("generation", 0))
            if 0 <= generation <= 2:
                self.gc_collections[generation] += 1
            self.gc_pause.observe(pause)
            if pause > 0.01:
                self._recent_gc.append((now, generation, pause))
                del self._recent_gc[:-8]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            late = max(0.0, loop.time() - expected)
            self.lag.observe(late)
            if late >= self.warn_after:
                self._warn(late)

    def _warn(self, late: float) -> None:
        now = time.perf_counter()
        if now - self._last_warning < 10:
            return
        self._last_warning = now
        collections = [
            f"generation {g}: {1000 * s:.0f} ms"
            for ended, g, s in self._recent_gc
            if now - ended <= late + self.interval
        ]
        logger.warning(
            "event loop %.0f ms late%s",
            1000 * late,
            f" (garbage collection {', '.join(collections)})" if collections else "",
        )

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
        idle_after: float = 5.0,
    ) -> None:
        """``departures()``: participants that have left so far; ``participants()``: how many
        are connected now."""
        self._departures = departures
        self._participants = participants
        self.freeze_every = freeze_every
        self.full_every = full_every
        self.full_after_departures = full_after_departures
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
            if self._participants() == 0:
                idle_since = now if idle_since is None else idle_since
            else:
                idle_since = None
            why = ""
            if departed and idle_since is not None and now - idle_since >= self.idle_after:
                why = f"no call in progress, {departed} departure(s)"
            elif departed >= self.full_after_departures:
                why = f"{departed} departures"
            elif departed and now - last_full >= self.full_every:
                why = f"{departed} departure(s) in {now - last_full:.0f} s"
            if why:
                self.full_collection(why)
                last_full, departed_at_full = loop.time(), self._departures()
                # what the collection freed goes back to the system (mediaserver/memory.py)
                await asyncio.to_thread(memory.trim_now)
            else:
                gc.freeze()
