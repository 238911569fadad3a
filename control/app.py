"""The aiohttp application: ``create_app(config)`` wires the SFU, signalling and pages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import sqlite3
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, web

from mediaserver.room import Sfu, SfuRoom
from recorder.custody import CustodyLog
from recorder.keys import KeyEncryptionKey, load_or_create_signing_key, public_key_pem
from recorder.recording import Recorder
from recorder.witness import configured_witness
from verifier.service import Verifier

from . import (
    access,
    appointments_api,
    cases_api,
    display_api,
    materials_api,
    prejoin_api,
    recordings_api,
    sealed_exports,
    statistics_api,
    verifier_api,
)
from .auth import Throttle
from .config import Config
from .db import Database
from .events import EVENTS, EventHub, case_of_room
from .http_json import loads
from .loopwatch import GcPolicy, LoopWatch
from .materials import MaterialStore
from .metrics import render_metrics
from .prejoin import PrejoinDesk
from .tokens import TokenSigner, valid_id
from .webguard import PLAIN_HTTP_WARNING, add_security_headers, body_deadline, client_address

logger = logging.getLogger(__name__)

WEB_DIR = Path(__file__).parent / "web"

CONFIG = web.AppKey("config", Config)
SFU = web.AppKey("sfu", Sfu)
SIGNER = web.AppKey("signer", TokenSigner)
RECORDER = web.AppKey("recorder", Recorder)
CUSTODY = web.AppKey("custody", CustodyLog)
VERIFIER = web.AppKey("verifier", Verifier)
ERRORS = web.AppKey("signalling_errors", Counter)
WATCH = web.AppKey("loop_watch", LoopWatch)
# every open WebSocket (signalling and officers' events), closed first when the server stops
SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("sockets")


def create_app(config: Config) -> web.Application:
    from .signalling import websocket_handler

    # JSON bodies are small; reference photos are streamed by their handler with its own limit
    app = web.Application(client_max_size=64 * 1024, middlewares=[
        client_address(config.server.front_secret), body_deadline(config.server.body_timeout)])
    add_security_headers(app)
    app[CONFIG] = config
    app[ERRORS] = Counter()
    app[SOCKETS] = weakref.WeakSet()
    app.cleanup_ctx.append(_sfu_ctx)
    app.on_shutdown.append(_close_calls_and_sockets)
    app.router.add_get("/", _index)
    app.router.add_get("/ws", websocket_handler)
    app.router.add_get("/api/events", _events)
    app.router.add_get("/api/openapi.json", _openapi)
    app.router.add_get("/api/docs", _api_docs)
    app.router.add_get("/console", _console)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_post("/dev/token", _dev_token)
    app.router.add_static("/static/", WEB_DIR, show_index=False)
    recordings_api.add_routes(app)
    verifier_api.add_routes(app)
    cases_api.add_routes(app)
    appointments_api.add_routes(app)
    materials_api.add_routes(app)
    display_api.add_routes(app)
    statistics_api.add_routes(app)
    prejoin_api.add_routes(app)
    return app


SHUTDOWN_STEP_LIMIT = 20.0


async def _close_calls_and_sockets(app: web.Application) -> None:
    """On SIGTERM, before aiohttp waits for open connections (up to a minute): end every call
    (participants hear ``bye`` with reason ``shutdown``, recordings seal), then close every
    WebSocket as going away, so that the process stops in moments, not after the wait."""
    sfu = app.get(SFU)
    if sfu is not None:
        await _closing("calls", sfu.close)()
    registry: weakref.WeakSet[web.WebSocketResponse] = app[SOCKETS]
    # each signalling session says bye itself once its participant is closed: a moment for that
    for _ in range(40):  # at most 2 s
        if all(ws.closed for ws in list(registry)):
            break
        await asyncio.sleep(0.05)
    sockets = [ws for ws in list(registry) if not ws.closed]
    await asyncio.gather(*(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")
                           for ws in sockets), return_exceptions=True)
    if sockets:
        logger.info("shutdown: closed %d WebSocket(s)", len(sockets))


def _closing(name: str, close: Any) -> Any:
    """A shutdown step that logs how long it took and never holds the exit for ever."""

    async def run() -> None:
        started = time.monotonic()
        try:
            await asyncio.wait_for(close(), SHUTDOWN_STEP_LIMIT)
        except TimeoutError:
            logger.error("shutdown: %s did not close within %.0f s; going on", name,
                         SHUTDOWN_STEP_LIMIT)
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
        watch = app[WATCH] = LoopWatch()
        watch.start()
        stack.push_async_callback(watch.close)
        app[SIGNER] = TokenSigner.from_file(config.secret_path())
        database = Database(config.data_dir / "control.sqlite3")
        await database.open()
        stack.push_async_callback(_closing("database", database.close))
        app[access.DB] = database
        # growing delays, never a lockout: an account's owner waits at most a minute whatever
        # others try; one address guessing over many names waits up to a quarter of an hour
        delay = config.auth.login_delay
        app[access.LOGIN_LIMIT] = Throttle(free=5, base=delay, cap=60.0)
        app[access.LOGIN_ADDRESS_LIMIT] = Throttle(free=10, base=delay, cap=900.0)
        app[access.REDEEM_LIMIT] = Throttle(free=20, base=delay, cap=900.0)
        signing_key = load_or_create_signing_key(config.keys_dir / "custody-ed25519.pem")
        public_path = config.keys_dir / "custody-ed25519.pub.pem"
        if not public_path.exists():
            public_path.write_bytes(public_key_pem(signing_key))
        custody = CustodyLog(config.data_dir / "custody", signing_key, witness=configured_witness(
            config.custody.witness, config.custody.witness_path(config.keys_dir),
            config.custody.checkpoints_path(config.keys_dir)))
        stack.callback(custody.close)
        app[CUSTODY] = custody
        sfu = Sfu(config.media_options())
        stack.push_async_callback(_closing("sfu", sfu.close))
        app[SFU] = sfu
        if config.server.gc_freeze:
            policy = GcPolicy(lambda: sum(sfu.close_reasons.values()),
                              lambda: sum(len(r.participants) for r in sfu.rooms.values()))
            stack.push_async_callback(policy.close)
        recorder = Recorder(
            data_dir=config.data_dir, custody=custody,
            kek=KeyEncryptionKey.load_or_create(config.keys_dir / "recording-kek.key"),
            signing_key=signing_key, segment_seconds=config.recording.segment_seconds,
            retention_days=config.recording.retention_days)
        stack.push_async_callback(_closing("recorder", recorder.close))
        app[RECORDER] = recorder
        app[materials_api.STORE] = MaterialStore(config.data_dir / "materials", recorder.kek)
        verifier = await _make_verifier(config, custody, recorder)
        if verifier is not None:
            stack.push_async_callback(_closing("verifier", verifier.close))
        events = app[EVENTS] = EventHub(database)
        stack.push_async_callback(_closing("events", events.close))
        sfu.on_room_created.append(events.watch_room)
        recorder.listeners.append(events.on_room_event)
        displays = app[display_api.DISPLAYS] = display_api.DisplayManager(custody, database,
                                                                           events)
        stack.push_async_callback(_closing("displays", displays.close))
        if verifier is not None:
            app[VERIFIER] = verifier
            verifier.listeners.append(events.on_room_event)
            _bind_verifier_to_cases(verifier, database)
            sfu.on_room_created.append(verifier.watch_room)
        app[prejoin_api.DESK] = PrejoinDesk(database, custody, recorder, events, verifier,
                                              required=config.auth.prejoin_check)
        # decrypted exports being built when a process died (control/sealed_exports.py)
        await asyncio.to_thread(sealed_exports.clear_stale_builds, config.data_dir / "tmp")
        recovered = await recorder.recover()
        if recovered:
            logger.warning("sealed %d interrupted recording(s): %s", len(recovered), recovered)
        if config.recording.always_on or config.recording.sessions:
            def record(room: SfuRoom) -> None:
                case_id = case_of_room(room.room_id)
                if case_id is not None and config.recording.sessions:
                    recorder.start_soon(room, actor="server", reason="session recording",
                                        case=str(case_id))
                elif config.recording.always_on:
                    recorder.start_soon(room, actor="server", reason="always-on recording")

            sfu.on_room_created.append(record)
        if config.server.gc_freeze:
            policy.start()  # after start-up has loaded what it keeps
        yield
        # closing runs in reverse: displays, events, verifier, recorder, SFU, custody, database


def _bind_verifier_to_cases(verifier: Verifier, database: Database) -> None:
    """A session room's parties are compared with their case's references, with consent."""

    def scope_of(room_id: str) -> str:
        case_id = case_of_room(room_id)
        return room_id if case_id is None else f"case-{case_id}"

    async def may_verify(room_id: str, participant_id: str) -> bool:
        case_id = case_of_room(room_id)
        if case_id is None:
            return True  # development rooms have no consent model
        if not participant_id.startswith("party-") or not participant_id[6:].isdigit():
            return False

        def consented(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT consent FROM parties WHERE id = ? AND case_id = ?",
                               (int(participant_id[6:]), case_id)).fetchone()
            return row is not None and bool(json.loads(row["consent"]).get("face"))

        return await database.run(consented)

    verifier.scope_of = scope_of
    verifier.may_verify = may_verify


async def _make_verifier(config: Config, custody: CustodyLog,
                         recorder: Recorder) -> Verifier | None:
    from verifier.engine import ModelError, default_spec
    from verifier.enrollment import EnrollmentStore, QualityRules
    from verifier.service import VerifierSettings

    v = config.verifier
    if not v.enabled:
        return None
    try:
        if v.engine == "pack":
            from verifier.engine import check_files
            from verifier.insightface_pack import pack_spec

            spec = pack_spec(v.pack_name, Path(v.pack_dir), v.pack_sha256,
                             threshold=v.threshold, calibrated_on=v.calibrated_on,
                             licence=v.pack_licence or "not stated: check the pack's terms")
        else:
            from verifier.engine import check_files

            spec = default_spec(threshold=v.threshold, calibrated_on=v.calibrated_on,
                                min_face=v.min_live_face, runtime=v.facenet_runtime)
        # refuse to start on a model that is not the pinned one (hashing is off the loop)
        await asyncio.to_thread(check_files, spec)
        if spec.runtime == "onnxruntime" and "facenet" in spec.files:
            from verifier.facenet import prepare
            from verifier.tf_graph import GraphError

            try:
                await prepare(Path(spec.files["facenet"]))
            except GraphError as exc:
                raise ModelError(f"{spec.name}: FaceNet: {exc}") from None
        liveness = None
        if v.liveness_model:
            from verifier.liveness import LivenessModel, LivenessSpec

            liveness = LivenessSpec(v.liveness_model, v.liveness_sha256, v.liveness_threshold)
            await asyncio.to_thread(LivenessModel, liveness)  # hash, load and shape checks
    except ModelError as exc:
        raise RuntimeError(f"verifier: {exc}") from None
    logger.warning("verifier engine %s; licence: %s; threshold %.3f calibrated on %s",
                   spec.name, spec.licence, spec.threshold, spec.calibrated_on)
    settings = VerifierSettings(
        sample_interval=v.sample_interval, workers=v.workers, alert_after=v.alert_after,
        no_face_after=v.no_face_after, min_live_face=v.min_live_face,
        enrollment=QualityRules(min_face=v.min_enroll_face,
                                min_sharpness=v.min_enroll_sharpness))
    store = EnrollmentStore(config.data_dir / "faces", recorder.kek)
    if liveness is not None:
        logger.warning("liveness model %s (sha256 %s), live at %.2f", liveness.path,
                       liveness.sha256, liveness.threshold)
    return Verifier(spec, settings, store, custody=custody, recorder=recorder,
                    liveness=liveness)


async def _openapi(request: web.Request) -> web.Response:
    from .openapi import SPEC

    return web.json_response(SPEC)


async def _api_docs(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "api.html")


async def _console(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "console.html", headers={"Cache-Control": "no-store"})


async def _events(request: web.Request) -> web.WebSocketResponse:
    return await request.app[EVENTS].stream(request, request.app[SOCKETS].add)


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-store"})


async def _healthz(request: web.Request) -> web.Response:
    sfu = request.app[SFU]
    dump = sfu.dump()
    # dev_join tells the page whether it may mint its own tokens (or must say it cannot)
    return web.json_response({"status": "ok", "rooms": dump["rooms"],
                              "participants": dump["participants"],
                              "dev_join": request.app[CONFIG].auth.dev_join})


async def _metrics(request: web.Request) -> web.Response:
    body = render_metrics(request.app[SFU], request.app[ERRORS], request.app.get(WATCH))
    return web.Response(text=body, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def _dev_token(request: web.Request) -> web.Response:
    """Development only: mint a token for the page, so two tabs can meet without set-up."""
    config = request.app[CONFIG]
    if not config.auth.dev_join:
        return web.json_response(
            {"error": "dev_join_off",
             "message": "未开启开发模式：加入通话需要民警发出的邀请链接（开发时可用 "
                        "remotecase serve --dev） / development mode is off: joining a call "
                        "needs an officer's "
                        "invitation link (for development: remotecase serve --dev)"},
            status=404)
    try:
        body = loads(await request.read())
    except ValueError:
        return web.json_response({"error": "bad_json", "message": "body is not JSON"}, status=400)
    if not isinstance(body, dict):
        return web.json_response({"error": "bad_request", "message": "object expected"},
                                 status=400)
    room = body.get("room", "demo")
    name = body.get("name") or ""
    if not isinstance(room, str) or not valid_id(room) or not isinstance(name, str):
        return web.json_response(
            {"error": "bad_request", "message": "room: 1-64 of A-Z a-z 0-9 _ . : -"}, status=400)
    participant = f"P_{secrets.token_hex(4)}"
    token = request.app[SIGNER].mint(room, participant, name=name[:64] or participant,
                                     ttl=config.auth.token_ttl)
    return web.json_response({"token": token, "room": room, "participant": participant})
