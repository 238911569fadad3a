"""``common.tasks.TaskSet``: every background task has an owner that names it, logs its failure
with the owner's context, and cancels and awaits it on close."""

from __future__ import annotations

import asyncio
import inspect
import logging

import pytest

from common.tasks import TaskSet, TaskSetClosed


async def test_spawned_tasks_are_named_counted_and_forgotten_when_done() -> None:
    tasks = TaskSet("participant p1")
    release = asyncio.Event()

    async def wait() -> str:
        await release.wait()
        return "done"

    first = tasks.spawn(wait(), "negotiator")
    second = tasks.spawn(wait(), "close")
    assert first.get_name() == "participant p1: negotiator"
    assert len(tasks) == 2
    assert tasks.names() == ["participant p1: close", "participant p1: negotiator"]
    release.set()
    assert await first == "done" and await second == "done"
    await asyncio.sleep(0)  # done callbacks run on the next turn of the loop
    assert len(tasks) == 0 and tasks.names() == []


async def test_a_failure_is_logged_on_the_owners_logger_with_its_context(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.LoggerAdapter(
        logging.getLogger("tests.tasks"), {"room": "r1", "participant": "p1"}
    )
    tasks = TaskSet("participant p1", log)

    async def fail() -> None:
        raise ValueError("bad answer")

    with caplog.at_level(logging.ERROR, logger="tests.tasks"):
        task = tasks.spawn(fail(), "unpublish")
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)
    [record] = [r for r in caplog.records if r.name == "tests.tasks"]
    assert "participant p1: unpublish" in record.getMessage()
    assert "bad answer" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is ValueError
    assert (record.room, record.participant) == ("r1", "p1")  # type: ignore[attr-defined]
    assert len(tasks) == 0


async def test_close_cancels_and_awaits_every_task_and_refuses_new_ones() -> None:
    tasks = TaskSet("up-track TR_1")
    started = asyncio.Event()
    cleaned: list[str] = []

    async def forever(name: str) -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # a clean-up that itself awaits
            cleaned.append(name)

    for name in ("pli-1", "pli-2"):
        tasks.spawn(forever(name), name)
    await started.wait()
    await tasks.close()
    # awaited, not only cancelled: their clean-up ran before close returned
    assert sorted(cleaned) == ["pli-1", "pli-2"]
    assert len(tasks) == 0 and tasks.closed
    await tasks.close()  # idempotent

    async def late() -> None:
        raise AssertionError("must never run")

    coro = late()
    with pytest.raises(TaskSetClosed):
        tasks.spawn(coro, "late")
    # closed unstarted: never run, and never reported as "was never awaited"
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


async def test_a_task_that_closes_its_owner_is_not_cancelled_by_it() -> None:
    tasks = TaskSet("participant p2")
    other_cancelled = asyncio.Event()
    closed = asyncio.Event()

    async def other() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            other_cancelled.set()
            raise

    async def closer() -> str:
        await tasks.close()  # as a participant's close task closes the participant
        closed.set()
        return "closed itself"

    tasks.spawn(other(), "negotiator")
    closing = tasks.spawn(closer(), "close")
    assert await closing == "closed itself"
    assert other_cancelled.is_set() and closed.is_set()


async def test_drain_waits_without_cancelling_even_for_tasks_spawned_meanwhile() -> None:
    tasks = TaskSet("verifier")
    logged: list[int] = []

    async def record(n: int) -> None:
        await asyncio.sleep(0.01)
        logged.append(n)
        if n < 3:
            tasks.spawn(record(n + 1), f"record {n + 1}")  # a verdict that leads to another

    tasks.spawn(record(1), "record 1")
    await tasks.drain()
    assert logged == [1, 2, 3]
    assert len(tasks) == 0 and not tasks.closed
    tasks.spawn(record(3), "after drain")  # draining does not close
    await tasks.close()


async def test_cancel_is_the_synchronous_close() -> None:
    tasks = TaskSet("down-track d1")
    task = tasks.spawn(asyncio.sleep(60), "relayed rtp")
    tasks.cancel()
    assert tasks.closed
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert len(tasks) == 0
