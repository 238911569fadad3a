"""Owned background tasks: the one way a part of the service starts a task.

Every task has an owner (a participant, an up-track, a signalling session, the verifier) that
holds it in a :class:`TaskSet`. The set names each task after its owner, logs a task's failure
on the owner's logger (so the line carries its room, participant or track), counts what is
running (``Sfu.dump()``), and on :meth:`TaskSet.close` refuses new tasks, cancels the running
ones and awaits them, so that nothing outlives its owner (aiortc's ``RTCRtpSender.stop()``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

logger = logging.getLogger(__name__)


class TaskSetClosed(RuntimeError):
    """A task was spawned on a set whose owner is closing or closed."""


class TaskSet:
    """The background tasks of one owner."""

    def __init__(
        self, owner: str, log: logging.Logger | logging.LoggerAdapter[Any] | None = None
    ) -> None:
        self._owner = owner
        self._log = log if log is not None else logger
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def closed(self) -> bool:
        """True once :meth:`cancel` or :meth:`close` ran: no new task is accepted."""
        return self._closed

    def __len__(self) -> int:
        """Tasks not finished yet (for ``dump()``: 0 once the owner closed)."""
        return len(self._tasks)

    def names(self) -> list[str]:
        """The running tasks' names, sorted (for diagnostics)."""
        return sorted(task.get_name() for task in self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Run ``coro`` as a task of this owner; raises :class:`TaskSetClosed` once closing
        (the coroutine is closed unstarted, so it is never left un-awaited)."""
        if self._closed:
            coro.close()
            raise TaskSetClosed(f"{self._owner} is closed: not starting {name}")
        task = asyncio.get_running_loop().create_task(coro, name=f"{self._owner}: {name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here, so asyncio never reports it as unhandled
        if exc is not None:
            self._log.error("task %s failed: %r", task.get_name(), exc, exc_info=exc)

    def _others(self) -> list[asyncio.Task[Any]]:
        # a task of this set may close its own owner: it is not cancelled nor awaited by itself
        current = asyncio.current_task()
        return [task for task in self._tasks if task is not current]

    async def drain(self) -> None:
        """Wait until every task has finished, without cancelling any: work that must end on
        its own (verdicts still to log). Tasks spawned meanwhile are waited for too."""
        while pending := self._others():
            await asyncio.gather(*pending, return_exceptions=True)

    def cancel(self) -> None:
        """Refuse new tasks and cancel the running ones, for a synchronous close; the caller's
        owner (or its parent) awaits them with :meth:`close`."""
        self._closed = True
        for task in self._others():
            task.cancel()

    async def close(self) -> None:
        """Refuse new tasks, cancel the running ones and wait until they have finished.
        Idempotent; the task that calls it (when it is one of the set's) is left running."""
        self.cancel()
        pending = self._others()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
