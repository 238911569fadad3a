"""The aiohttp application: ``create_app(config)`` wires the areas' routes and opens, in
order, what they share (the database, the custody log, the SFU, the recorder, the verifier,
the event hub), closing it in reverse. No handler lives here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSCloseCode, web

from documents.pool import DocumentPool
from mediaserver import aiortc_hooks
from mediaserver.room import Sfu, SfuRoom
from recorder.custody import CustodyLog
from recorder.keys import KeyEncryptionKey, load_or_create_signing_key, public_key_pem
from recorder.recording import Recorder
from recorder.witness import configured_witness

from . import login, service, statistics
from .accounts import api as accounts
from .appkeys import (
    ATTENDANCE,
    CONFIG,
    CUSTODY,
    DB,
    DESK,
    DISPLAYS,
    DOCS,
    ERRORS,
    EVENTS,
    LIVE,
    LOGIN_ADDRESS_LIMIT,
    LOGIN_LIMIT,
    OPENAPI,
    OUTCOMES,
    RECORDER,
    REDEEM_LIMIT,
    RULES,
    SFU,
    SIGNER,
    SOCKETS,
    STORE,
    VERIFIER,
    WATCH,
)
from .appointments import api as appointments
from .auth import Throttle
from .casefile import api as casefile
from .cases import api as cases
from .cases import audit, parties
from .config import Config
from .db import Database
from .deadlines import api as deadlines
from .deadlines import investigation
from .deadlines.api import calendar_errors
from .deadlines.rules import load_rules
from .delivery import api as delivery
from .delivery import penalty, reviews
from .delivery.outcomes import OutcomeWriter
from .documents import api as documents
from .documents.desk import DocumentDesk
from .education import api as education
from .education import talks
from .education.attendance import Rules
from .education.desk import AttendanceDesk, LiveDesk
from .events import EventHub, case_of_room
from .http import openapi
from .http.jsonio import localized_errors
from .http.webguard import PLAIN_HTTP_WARNING, add_security_headers, body_deadline, client_address
from .loopwatch import GcPolicy, LoopWatch
from .materials import api as materials
from .materials.store import MaterialStore
from .mediation import api as mediation
from .recordings import api as recordings
from .recordings import sealed_exports
from .records import api as records
from .sessions import api as sessions
from .sessions import calls, display, invitations
from .sessions.signalling import websocket_handler
from .sessions.tokens import TokenSigner
from .verification import api as verification
from .verification import prejoin_api as prejoin
from .verification.prejoin import PrejoinDesk
from .verification.wiring import bind_verifier_to_cases, make_verifier

logger = logging.getLogger(__name__)

# every area: its add_routes(app) and its describe(add) for the OpenAPI description
AREAS = (
    service,
    login,
    accounts,
    cases,
    parties,
    audit,
    casefile,
    sessions,
    calls,
    invitations,
    display,
    appointments,
    materials,
    recordings,
    verification,
    prejoin,
    statistics,
    records,
    documents,
    delivery,
    reviews,
    penalty,
    mediation,
    deadlines,
    investigation,
    education,
    talks,
)
# the description in the order of the reference page's sections (tags in order of appearance)
DESCRIBED = (
    service,
    login,
    accounts,
    statistics,
    cases,
    audit,
    casefile,
    parties,
    verification,
    prejoin,
    sessions,
    calls,
    recordings,
    display,
    invitations,
    appointments,
    materials,
    records,
    documents,
    delivery,
    reviews,
    penalty,
    mediation,
    deadlines,
    investigation,
    education,
    talks,
)
SPEC = openapi.assemble(area.describe for area in DESCRIBED)


def create_app(config: Config) -> web.Application:
    # JSON bodies are small; reference photos are streamed by their handler with its own limit
    app = web.Application(
        client_max_size=64 * 1024,
        middlewares=[
            localized_errors,  # outermost: the others' errors are worded too
            client_address(config.server.front_secret),
            body_deadline(config.server.body_timeout),
            calendar_errors,
        ],
    )
    add_security_headers(app)
    app[CONFIG] = config
    app[OPENAPI] = SPEC
    app[ERRORS] = Counter()
    app[SOCKETS] = weakref.WeakSet()
    app.cleanup_ctx.append(_sfu_ctx)
    app.on_shutdown.append(_close_calls_and_sockets)
    app.router.add_get("/ws", websocket_handler)
    for area in AREAS:
        area.add_routes(app)
    return app


SHUTDOWN_STEP_LIMIT = 20.0
# The whole stop, from SIGTERM to the process's exit, is bounded: each step above is, and
# aiohttp's wait for open connections (cli.py SHUTDOWN_WAIT); should the event loop be too
# starved even for those, a watchdog thread ends the process after this long.
SHUTDOWN_LIMIT = 40.0


def start_shutdown_watchdog(limit: float = SHUTDOWN_LIMIT) -> threading.Timer:
    """A thread that ends this process ``limit`` seconds from now (for ``remotecase serve``,
    armed when it starts to stop; never in a process that runs the app among other things)."""

    def expired() -> None:
        logger.error("shutdown: not finished %.0f s after the signal; exiting now", limit)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(limit, expired)
    timer.name = "shutdown-watchdog"
    timer.daemon = True  # a process that finishes in time exits without waiting for it
    timer.start()
    return timer


def _stop_media_intake(sfu: Sfu) -> None:
    """Before the calls close: no more received packets (a flood of them would starve the
    loop that closes them)."""
    sockets = 0
    for room in list(sfu.rooms.values()):
        for participant in list(room.participants.values()):
            for pc in (participant.publisher_pc, participant.subscriber_pc):
                sockets += aiortc_hooks.stop_receiving(pc)
    if sockets:
        logger.info("shutdown: stopped receiving media on %d socket(s)", sockets)


async def _close_calls_and_sockets(app: web.Application) -> None:
    """On SIGTERM, before aiohttp waits for open connections: stop taking in media, end every
    call (participants hear ``bye`` with reason ``shutdown``, recordings seal), then close every
    WebSocket as going away, so that the process stops in moments, not after the wait."""
    sfu = app.get(SFU)
    if sfu is not None:
        _stop_media_intake(sfu)
        await _closing("calls", sfu.close)()
    registry: weakref.WeakSet[web.WebSocketResponse] = app[SOCKETS]
    # each signalling session says bye itself once its participant is closed: a moment for that
    for _ in range(40):  # at most 2 s
        if all(ws.closed for ws in list(registry)):
            break
        await asyncio.sleep(0.05)
    sockets = [ws for ws in list(registry) if not ws.closed]
    await asyncio.gather(
        *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping") for ws in sockets),
        return_exceptions=True,
    )
    if sockets:
        logger.info("shutdown: closed %d WebSocket(s)", len(sockets))


def _closing(name: str, close: Any) -> Any:
    """A shutdown step that logs how long it took and never holds the exit for ever."""

    async def run() -> None:
        started = time.monotonic()
        try:
            await asyncio.wait_for(close(), SHUTDOWN_STEP_LIMIT)
        except TimeoutError:
            logger.error(
                "shutdown: %s did not close within %.0f s; going on", name, SHUTDOWN_STEP_LIMIT
            )
        else:
            logger.info("shutdown: %s closed in %.2f s", name, time.monotonic() - started)

    return run


async def _sfu_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open everything in order; close it in reverse, also when start-up fails half-way
    (a refused model file must not leave the database's or the custody log's threads)."""
    config = app[CONFIG]
    if config.server.plain_http_exposed():
        logger.warning(PLAIN_HTTP_WARNING, config.server.host, config.server.host)
    async with contextlib.AsyncExitStack() as stack:
        watch = app[WATCH] = LoopWatch(interval=config.server.loop_watch_interval)
        watch.start()
        stack.push_async_callback(watch.close)
        app[SIGNER] = TokenSigner.from_file(config.secret_path())
        database = Database(config.data_dir / "control.sqlite3")
        await database.open()
        stack.push_async_callback(_closing("database", database.close))
        app[DB] = database
        # growing delays, never a lockout: an account's owner waits at most a minute whatever
        # others try; one address guessing over many names waits up to a quarter of an hour
        delay = config.auth.login_delay
        app[LOGIN_LIMIT] = Throttle(free=5, base=delay, cap=60.0)
        app[LOGIN_ADDRESS_LIMIT] = Throttle(free=10, base=delay, cap=900.0)
        app[REDEEM_LIMIT] = Throttle(free=20, base=delay, cap=900.0)
        # key files are read and checked (git, modes, published keys) in a thread
        signing_key = await asyncio.to_thread(
            load_or_create_signing_key, config.keys_dir / "custody-ed25519.pem"
        )
        kek = await asyncio.to_thread(
            KeyEncryptionKey.load_or_create, config.keys_dir / "recording-kek.key"
        )
        public_path = config.keys_dir / "custody-ed25519.pub.pem"
        if not public_path.exists():
            public_path.write_bytes(public_key_pem(signing_key))
        custody = CustodyLog(
            config.data_dir / "custody",
            signing_key,
            witness=configured_witness(
                config.custody.witness,
                config.custody.witness_path(config.keys_dir),
                config.custody.checkpoints_path(config.keys_dir),
            ),
        )
        stack.push_async_callback(_closing("custody", custody.close_async))
        app[CUSTODY] = custody
        # the media loop takes the interpreter's lock back sooner from a busy worker thread
        # (server.gil_switch_interval); the process's own setting again when the app is done
        stack.callback(sys.setswitchinterval, sys.getswitchinterval())
        sys.setswitchinterval(config.server.gil_switch_interval)
        sfu = Sfu(config.media_options())
        stack.push_async_callback(_closing("sfu", sfu.close))
        app[SFU] = sfu
        if config.server.gc_freeze:
            policy = GcPolicy(
                lambda: sum(sfu.close_reasons.values()),
                lambda: sum(len(r.participants) for r in sfu.rooms.values()),
                trim=sfu.trimmer.request,
            )
            stack.push_async_callback(policy.close)
        recorder = Recorder(
            data_dir=config.data_dir,
            custody=custody,
            kek=kek,
            signing_key=signing_key,
            segment_seconds=config.recording.segment_seconds,
            retention_days=config.recording.retention_days,
            reorder_wait=config.recording.reorder_wait,
            outage_seconds=config.recording.outage_seconds,
        )
        stack.push_async_callback(_closing("recorder", recorder.close))
        app[RECORDER] = recorder
        app[STORE] = MaterialStore(config.data_dir / "materials", recorder.kek)
        # the templates are checked here: a bad edit stops the start, not the first document
        # rendering and the built-in signers' signatures run in worker processes, started on
        # the first document (documents/pool.py); stopped before the recorder and the database
        doc_pool = DocumentPool(config.server.document_workers)
        stack.push_async_callback(_closing("document workers", doc_pool.close))
        app[DOCS] = await asyncio.to_thread(
            DocumentDesk, config.data_dir, config.keys_dir, kek=recorder.kek, pool=doc_pool
        )
        # the working-day calendar and the limits, checked here: a bad line stops the start
        d = config.deadlines
        app[RULES] = await asyncio.to_thread(load_rules, d.calendar, d.limits, d.warn_days)
        verifier = await make_verifier(config, custody, recorder)
        if verifier is not None:
            stack.push_async_callback(_closing("verifier", verifier.close))
        events = app[EVENTS] = EventHub(database)
        stack.push_async_callback(_closing("events", events.close))
        sfu.on_room_created.append(events.watch_room)
        recorder.listeners.append(events.on_room_event)
        displays = app[DISPLAYS] = display.DisplayManager(custody, database, events)
        stack.push_async_callback(_closing("displays", displays.close))
        if verifier is not None:
            app[VERIFIER] = verifier
            verifier.listeners.append(events.on_room_event)
            bind_verifier_to_cases(
                verifier, database, education_interval=config.education.sample_interval
            )
            sfu.on_room_created.append(verifier.watch_room)
        # education sessions' attendance: joins and leaves from the rooms, samples from the
        # verifier's listener list; it closes before the verifier and the database
        e = config.education
        attendance = app[ATTENDANCE] = AttendanceDesk(
            database, Rules(e.check_interval, e.check_window, e.verdict_gap), custody, events
        )
        stack.push_async_callback(_closing("attendance", attendance.close))
        sfu.on_room_created.append(attendance.watch_room)
        if verifier is not None:
            verifier.listeners.append(attendance.on_room_event)
        live = app[LIVE] = LiveDesk(
            database,
            floor_holders=e.floor_holders,
            floor_seconds=e.floor_seconds,
            custody=custody,
            events=events,
        )
        stack.push_async_callback(_closing("education live", live.close))
        # providers' answers still being written (a send whose request the stop cancelled):
        # closed first, before the custody log and the database they write to
        outcomes = app[OUTCOMES] = OutcomeWriter()
        stack.push_async_callback(_closing("provider outcomes", outcomes.close))
        app[DESK] = PrejoinDesk(
            database, custody, recorder, events, verifier, required=config.auth.prejoin_check
        )
        # decrypted exports being built when a process died (control/recordings/sealed_exports.py)
        await asyncio.to_thread(sealed_exports.clear_stale_builds, config.data_dir / "tmp")
        recovered = await recorder.recover()
        if recovered:
            logger.warning("sealed %d interrupted recording(s): %s", len(recovered), recovered)
        if config.recording.always_on or config.recording.sessions:

            def record(room: SfuRoom) -> None:
                case_id = case_of_room(room.room_id)
                if case_id is not None and config.recording.sessions:
                    recorder.start_soon(
                        room, actor="server", reason="session recording", case=str(case_id)
                    )
                elif config.recording.always_on:
                    recorder.start_soon(room, actor="server", reason="always-on recording")

            sfu.on_room_created.append(record)
        if config.server.gc_freeze:
            policy.start()  # after start-up has loaded what it keeps
        yield
        # closing runs in reverse: displays, events, verifier, recorder, SFU, custody, database
