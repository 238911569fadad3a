"""A notice sent through a provider (:mod:`.channels`), and its outcome written by an owner.

Two areas send a notice through a provider and keep what came of it: electronic delivery of a
document to a party (``delivery/api.py``) and an education record sent to a company
(``education/api.py``). Both do the same three things, here once: ask the provider; turn its
answer into a reference, or its refusal (:class:`~.channels.ChannelFailed`) or its own error
into a failure text; and write that outcome (the row, the audit trail, the custody log). What
each writes differs (a delivery's row and receipt fields; a send's link and the company's
earlier links revoked), so the write itself is the caller's ``outcome`` coroutine.

The write must happen even when the request that asked for the send is gone: the server
stopping cancels it once aiohttp's shutdown wait is over, and then goes on closing the custody
log and the database whether or not the handler has finished. So each write is a task of an
owner, :class:`OutcomeWriter` (one per app, ``control.appkeys.OUTCOMES``), which the request
awaits under a shield: a request cancelled mid-provider still writes its outcome ("中断 /
interrupted"); one cancelled during the write leaves it to the owner; and the app closes the
owner first, waiting up to :data:`OUTCOME_WAIT` seconds for the writes still running, before
anything they write to. A write still not done then is cancelled and logged; the row stays
``sending`` for the sweep, as does one of a server killed mid-provider: each area marks its rows
left ``sending`` failed at start-up (all of them when the server is alone on the database, else
those older than :func:`stale_after`) and again, for those older than that, when its officer
looks (deliveries: ``delivery/api.py`` ``abandon_stale``; education:
``education/api.py`` ``_abandon_stale_sends``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from common.tasks import TaskSet, TaskSetClosed

from .channels import Channel, ChannelFailed, Notice

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Seconds the app's close waits for outcome writes still running (under the shutdown step's
# own limit, control/app.py SHUTDOWN_STEP_LIMIT).
OUTCOME_WAIT = 15.0


def stale_after(provider_timeout: float) -> float:
    """Seconds after which a notice still ``sending`` can no longer be in progress: a provider
    gives up after ``delivery.timeout`` (SMTP per step: connect, greeting, a few commands),
    so six of them and half a minute more are past any live send."""
    return 6 * provider_timeout + 30


class _Failure:
    """A write's exception, handed to the caller that waits for it."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


class OutcomeWriter:
    """The owner of writes that must outlive the request that asked for them: providers'
    outcomes, and numbers voided for records nobody kept (``education/api.py``). Closed
    before the custody log and the database."""

    def __init__(self) -> None:
        self._tasks = TaskSet("outcome writes", logger)

    def __len__(self) -> int:
        """Writes not finished yet."""
        return len(self._tasks)

    async def write(self, coro: Coroutine[Any, Any, T], name: str) -> T:
        """Run ``coro`` as this owner's task and wait for it: a cancellation of the caller
        leaves it running here, and :meth:`close` waits for it. Raises
        :class:`~common.tasks.TaskSetClosed` once the owner is closing.

        A failing write is logged once: raised to the caller while it waits (its handler
        logs it), logged by the owner when the caller is gone."""
        awaited = True

        async def run() -> T | _Failure:
            try:
                return await coro
            except Exception as exc:
                if not awaited:
                    raise  # nobody to raise it to: the owner's task set logs it
                return _Failure(exc)

        try:
            task = self._tasks.spawn(run(), name)
        except TaskSetClosed:
            coro.close()  # never started: not left un-awaited
            raise
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            awaited = False
            if task.done() and not task.cancelled():
                failed = task.result()
                if isinstance(failed, _Failure):  # it ended as the caller was cancelled
                    logger.error("%s failed: %r", name, failed.exc, exc_info=failed.exc)
            raise
        if isinstance(result, _Failure):
            raise result.exc
        return result

    async def close(self, wait: float = OUTCOME_WAIT) -> None:
        """Wait for the writes still running (at most ``wait`` seconds), then cancel any left;
        refuses new ones. Idempotent."""
        if not self._tasks.closed and len(self._tasks):
            logger.info("waiting for %d provider outcome(s) to be written", len(self._tasks))
            try:
                await asyncio.wait_for(self._tasks.drain(), wait)
            except TimeoutError:
                logger.error(
                    "provider outcomes not written within %.0f s, left sending for the next "
                    "start's sweep (deliveries and education sends): %s",
                    wait,
                    ", ".join(self._tasks.names()),
                )
        await self._tasks.close()


async def send_notice(
    writer: OutcomeWriter,
    channel: Channel,
    notice: Notice,
    outcome: Callable[[str, str], Coroutine[Any, Any, T]],
    *,
    interrupted: str,
    what: str,
) -> T:
    """Send ``notice`` through ``channel``, then write ``outcome(reference, failure)`` (one of
    the two empty) as ``writer``'s task and answer what it answers. A provider's own error
    counts as a failed send (never one left ``sending``). Cancelled mid-provider (the server
    stopping, the request dropped): ``outcome("", interrupted)`` is written all the same, and
    the cancellation goes on. ``what`` names the send in logs (``delivery 12``)."""
    reference, failure = "", ""
    try:
        reference = await channel.send(notice)
    except ChannelFailed as exc:
        failure = str(exc)
    except Exception as exc:
        # a malformed address refused by the e-mail library, a bug: the send failed
        logger.exception("%s: the %s provider failed", what, channel.name)
        failure = f"发送出错 / the provider failed: {type(exc).__name__}"
    except asyncio.CancelledError:
        try:
            await writer.write(outcome("", interrupted), f"{what}: interrupted")
        except TaskSetClosed:
            logger.error("%s interrupted after the outcomes closed: left to the sweep", what)
        raise
    return await writer.write(outcome(reference, failure), f"{what}: outcome")
