"""Several worker processes behind one port (``server.workers``): every core forwards media.

The supervisor (``remotecase serve`` with ``server.workers`` > 1) prepares what the workers share
(keys, token secret, database schema), starts one worker per core (each a whole ``create_app``
on a loopback port it binds itself, port 0, and reports on a pipe the supervisor gives it,
sharing the data directory: SQLite in WAL mode, the custody log with its inter-process lock,
recordings with owner locks), and serves this front on the public port.

Rooms are placed on workers, and the front sends each request where its room lives:

* a case session's room ``case-<id>-...`` lives on worker ``id % N``, and so do the case's API
  calls (``/api/cases/{id}/...``): session actions, evidence display, recording control and
  enrollment run where the room is;
* other rooms (development tokens) by a hash of the room name;
* the signalling WebSocket is held until its ``join`` message names the room (read from the
  token's claims; the worker verifies the token), then piped to that worker;
* the officers' event stream opens one stream per worker and merges them;
* ``/metrics`` and ``/healthz`` add up the workers' figures (and the front's own CPU);
* everything else (logins, invitations, parties, materials, recordings, pages) goes to worker 0,
  so that the in-memory delays on failed logins and invitations hold across workers.

Workers see every request come from 127.0.0.1; the front passes each client's address on with
an HMAC under a secret the supervisor makes at every start and gives only to its workers
(``control/http/webguard.py``), and drops any such header a client sent.

Media never passes through the front: ICE connects clients to the worker's own UDP sockets.
A worker that dies is started again and routed to on the port it reports (its calls are lost;
the new worker's recovery seals its recordings as interrupted); more than five deaths a minute
stop the server. Workers die with the supervisor. Every task of the front (the pipes of a
signalling socket, the relays of an event stream, the supervisor's watchers) is owned by a
``common.tasks.TaskSet``, cancelled and awaited on close.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import secrets
import socket
import sys
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from common.tasks import TaskSet
from mediaserver.protocols import CloseReason

from .appkeys import CLIENT, SECRET, WORKERS
from .http.jsonio import loads
from .http.webguard import (
    FORWARDING_HEADERS,
    PLAIN_HTTP_WARNING,
    add_security_headers,
    body_deadline,
    forwarding_headers,
)
from .sessions.heartbeat import CLOSE_CLIENT_GONE, HeartbeatSocket, socket_end

logger = logging.getLogger(__name__)

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
_CASE_PATH = re.compile(r"^/api/cases/(\d{1,18})(/|$)")
_CASE_ROOM = re.compile(r"^case-(\d+)-")
REPORT_FD = "REMOTECASE_WORKER_REPORT_FD"  # the pipe a worker reports its port on
MAX_RESTARTS = 5  # worker deaths within RESTART_WINDOW before the supervisor gives up
RESTART_WINDOW = 60.0


def _client_headers(request: web.Request) -> dict[str, str]:
    """The client's address, vouched for (any such header the client sent is dropped)."""
    secret = request.app[SECRET]
    return forwarding_headers(secret, request.remote) if secret else {}


def worker_for_room(room: str, count: int) -> int:
    match = _CASE_ROOM.match(room)
    if match:
        return int(match.group(1)) % count
    return zlib.crc32(room.encode()) % count


def worker_for_path(path: str, count: int) -> int:
    match = _CASE_PATH.match(path)
    return int(match.group(1)) % count if match else 0


def worker_for_request(path: str, authorization: str, count: int) -> int:
    """A party's check before the call runs where its session's room lives (the officer's
    view of the party's latest picture is that worker's memory), found from its call token."""
    if path.startswith("/api/party/prejoin"):
        room = room_claim(authorization.removeprefix("Bearer ").strip())
        if room is not None:
            return worker_for_room(room, count)
    return worker_for_path(path, count)


def room_claim(token: object) -> str | None:
    """The room a signalling token names (unverified: only for routing)."""
    if not isinstance(token, str) or token.count(".") != 2:
        return None
    body = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, TypeError):
        return None
    room = claims.get("room") if isinstance(claims, dict) else None
    return room if isinstance(room, str) else None


# On SIGTERM: how long the front waits for connections still open after its workers were told
# to stop, and how long for the workers themselves (a little over their own bound).
FRONT_SHUTDOWN_WAIT = 5.0
WORKER_STOP_LIMIT = 45.0


def create_front(
    worker_urls: list[str],
    *,
    secret: str,
    body_timeout: float,
    ws_heartbeat: tuple[float, float] = (2.5, 8.0),
) -> web.Application:
    """``secret``: what the workers were given to believe the client addresses it sends;
    ``ws_heartbeat``: (interval, pong timeout) of the pings to signalling clients
    (``server.ws_heartbeat``, ``server.ws_pong_timeout``), which the front sends for its
    workers."""
    # bodies are streamed to the workers, under the same deadline as theirs
    app = web.Application(client_max_size=1024**3, middlewares=[body_deadline(body_timeout)])
    add_security_headers(app)
    app[WORKERS] = worker_urls
    app[SECRET] = secret
    app.cleanup_ctx.append(_client_ctx)

    async def signalling(request: web.Request) -> web.WebSocketResponse:
        return await _signalling(request, *ws_heartbeat)

    app.router.add_get("/ws", signalling)
    app.router.add_get("/api/events", _events)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_route("*", "/{path:.*}", _proxy)
    return app


async def _client_ctx(app: web.Application) -> AsyncIterator[None]:
    app[CLIENT] = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        # no cap on connections to the workers: every piped signalling socket and every
        # officer's event stream holds one for its whole life, and aiohttp's default of 100
        # made the 101st wait for ever, with /metrics and the API behind it
        connector=aiohttp.TCPConnector(limit=0),
        auto_decompress=False,
    )
    yield
    await app[CLIENT].close()


async def _proxy(request: web.Request) -> web.StreamResponse:
    workers = request.app[WORKERS]
    base = workers[
        worker_for_request(request.path, request.headers.get("Authorization", ""), len(workers))
    ]
    headers = {
        k: v
        for k, v in request.headers.items()
        if k.lower() not in HOP_BY_HOP and k.lower() not in FORWARDING_HEADERS
    }
    headers.update(_client_headers(request))
    body = request.content if request.body_exists else None
    try:
        async with request.app[CLIENT].request(
            request.method,
            base + request.rel_url.raw_path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    response.headers.add(key, value)
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(1 << 16):
                await response.write(chunk)
            await response.write_eof()
            return response
    except aiohttp.ClientError:
        return web.json_response(
            {
                "error": "worker_unavailable",
                "message": "the worker for this request is not answering",
            },
            status=503,
        )


async def _pipe(source: Any, sink: Any) -> WSMsgType | None:
    """Copy ``source``'s messages to ``sink``; the type of what ended it (None: a send failed)."""
    # either side going away ends the pipe; it is no fault of the front's
    with contextlib.suppress(ConnectionError, aiohttp.ClientError):
        while True:
            message = await source.receive()
            if message.type == WSMsgType.TEXT:
                await sink.send_str(message.data)
            elif message.type == WSMsgType.BINARY:
                await sink.send_bytes(message.data)
            else:
                return WSMsgType(message.type)
    return None


async def _first_text(ws: web.WebSocketResponse, code: int, why: bytes) -> str | None:
    """The client's first message, which says where to route; None (socket closed) if it
    sends none in 10 s or sends something else than text."""
    try:
        first = await ws.receive(timeout=10.0)
    except TimeoutError:
        await ws.close(code=code, message=why)
        return None
    if first.type != WSMsgType.TEXT:
        await ws.close()
        return None
    text: str = first.data
    return text


async def _signalling(
    request: web.Request, heartbeat: float, pong_timeout: float
) -> web.WebSocketResponse:
    """Hold the socket until ``join`` names the room, then pipe it to the room's worker."""
    ws = HeartbeatSocket(interval=heartbeat, timeout=pong_timeout, max_msg_size=1 << 20)
    await ws.prepare(request)
    workers = request.app[WORKERS]
    first = await _first_text(ws, 4002, b"join first")
    if first is None:
        return ws
    try:
        message = loads(first)
    except ValueError:
        message = None
    room = room_claim(message.get("token")) if isinstance(message, dict) else None
    target = workers[worker_for_room(room, len(workers))] if room else workers[0]
    url = target.replace("http://", "ws://", 1) + "/ws"
    try:
        upstream = await request.app[CLIENT].ws_connect(
            url, max_msg_size=1 << 22, heartbeat=20.0, headers=_client_headers(request)
        )
    except aiohttp.ClientError:
        await ws.close(code=4011, message=b"worker unavailable")
        return ws
    pipes = TaskSet(f"signalling pipe to {target}", logger)
    try:
        async with upstream:
            await upstream.send_str(first)  # the worker answers it, errors included
            down = pipes.spawn(_pipe(upstream, ws), "down")
            up = pipes.spawn(_pipe(ws, upstream), "up")
            await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
            if up.done() and not up.cancelled():
                # how the client's socket ended, for the worker, which hears only this one:
                # the worker's own rule (socket_end) read here on the client's socket; a page
                # whose process died (its connection ended without a close, or a close 1001)
                # is told with 4020, anything else (a missed pong, the client's own close)
                # ends the worker's socket plainly, which the worker waits the resume for
                ended = up.result()
                if ended is not None and (
                    socket_end(ended, ws.close_code, ws.exception()) is CloseReason.GONE
                ):
                    await upstream.close(code=CLOSE_CLIENT_GONE)
            await pipes.close()
            code = upstream.close_code
    finally:
        await pipes.close()
    if not ws.closed:
        await ws.close(code=code or 1000)
    return ws


async def _events(request: web.Request) -> web.WebSocketResponse:
    """One event stream per worker, merged; commands go to every worker, replies from one."""
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=4096)
    await ws.prepare(request)
    workers = request.app[WORKERS]
    first = await _first_text(ws, 4001, b"unauthorized")
    if first is None:
        return ws
    streams = []
    relays = TaskSet("event stream relays", logger)
    try:
        for base in workers:
            stream = await request.app[CLIENT].ws_connect(
                base.replace("http://", "ws://", 1) + "/api/events",
                heartbeat=20.0,
                headers=_client_headers(request),
            )
            await stream.send_str(first)
            streams.append(stream)

        async def relay(index: int, stream: Any) -> None:
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                async for message in stream:
                    if message.type != WSMsgType.TEXT:
                        break
                    kind = json.loads(message.data).get("type")
                    # replies to the client's own messages come once, from worker 0
                    if index == 0 or kind not in ("ready", "subscribed", "error", "dropped"):
                        await ws.send_str(message.data)
                if index == 0 and not ws.closed:
                    await ws.close(code=stream.close_code or 1000)

        async def commands() -> None:
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                async for message in ws:
                    if message.type != WSMsgType.TEXT:
                        break
                    for stream in streams:
                        await stream.send_str(message.data)

        spawned = [
            relays.spawn(relay(i, s), f"relay from worker {i}") for i, s in enumerate(streams)
        ]
        client = relays.spawn(commands(), "commands")
        # worker 0's stream or the client's ending ends the merged stream
        await asyncio.wait({spawned[0], client}, return_when=asyncio.FIRST_COMPLETED)
    except aiohttp.ClientError:
        pass
    finally:
        await relays.close()
        for stream in streams:
            await stream.close()
        if not ws.closed:
            await ws.close()
    return ws


async def _gather_text(request: web.Request, path: str) -> list[str]:
    async def one(base: str) -> str:
        try:
            async with request.app[CLIENT].get(base + path) as r:
                return await r.text()
        except aiohttp.ClientError:
            return ""

    return list(await asyncio.gather(*(one(b) for b in request.app[WORKERS])))


async def _metrics(request: web.Request) -> web.Response:
    """The workers' samples added up by name and labels, with the front's CPU and memory."""
    families: dict[str, dict[str, Any]] = {}  # name -> {"meta": [...], "samples": {key: v}}

    def family(name: str) -> dict[str, Any]:
        return families.setdefault(name, {"meta": [], "samples": {}})

    for text in await _gather_text(request, "/metrics"):
        for line in text.splitlines():
            parts = line.split()
            if line.startswith("#"):
                if len(parts) > 2 and line not in family(parts[2])["meta"]:
                    family(parts[2])["meta"].append(line)
                continue
            if len(parts) < 2:
                continue
            key, value = line.rsplit(" ", 1)
            samples = family(key.split("{")[0])["samples"]
            if key == "process_start_time_seconds":
                samples[key] = float(value)
            else:
                samples[key] = samples.get(key, 0.0) + float(value)
    from .metrics import _resident_bytes

    cpu = os.times()
    own: dict[str, float] = {
        "process_cpu_seconds_total": cpu.user + cpu.system,
        "process_resident_memory_bytes": float(_resident_bytes()),
    }
    for name, amount in own.items():
        samples = family(name)["samples"]
        samples[name] = samples.get(name, 0.0) + amount
    family("remotecase_workers")["samples"]["remotecase_workers"] = len(request.app[WORKERS])
    lines = []
    for data in families.values():
        lines += data["meta"]
        lines += [f"{key} {round(value, 3)}" for key, value in data["samples"].items()]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


async def _healthz(request: web.Request) -> web.Response:
    per_worker: list[dict[str, Any] | None] = []
    dev_join = False
    for text in await _gather_text(request, "/healthz"):
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("dev_join") is True:
            dev_join = True  # the workers share one configuration
        per_worker.append(
            {"rooms": int(body.get("rooms", 0)), "participants": int(body.get("participants", 0))}
            if isinstance(body, dict)
            else None
        )
    alive = [w for w in per_worker if w is not None]
    status = "ok" if len(alive) == len(per_worker) else "degraded"
    return web.json_response(
        {
            "status": status,
            "workers": len(per_worker),
            "workers_up": len(alive),
            "dev_join": dev_join,
            "rooms": sum(w["rooms"] for w in alive),
            "participants": sum(w["participants"] for w in alive),
            "per_worker": per_worker,
        },
        status=200 if status == "ok" else 503,
    )


async def run_supervised(config: Any, workers: int, host: str, port: int, ssl_context: Any) -> None:
    """Start the workers, serve the front, stop the workers when the front stops."""
    from recorder.keys import KeyEncryptionKey, load_or_create_signing_key

    from .db import Database
    from .sessions.tokens import TokenSigner

    # what the workers share, made once here so that they never race to create it
    TokenSigner.from_file(config.secret_path())
    load_or_create_signing_key(config.keys_dir / "custody-ed25519.pem")
    KeyEncryptionKey.load_or_create(config.keys_dir / "recording-kek.key")
    database = Database(config.data_dir / "control.sqlite3")
    database.run_sync(lambda c: None)  # migrations
    database.close_sync()

    # the workers believe the client addresses the front sends only under this secret (new at
    # every start, in the workers' environment only: readable by this user alone)
    secret = "front-" + secrets.token_hex(32)

    async def spawn(index: int) -> tuple[asyncio.subprocess.Process, int | None]:
        """Start worker ``index`` on a port of its own choosing (it binds port 0); the process
        and the port it reported, None when it died before binding one."""
        report, report_to = os.pipe()
        env = {
            **os.environ,
            "REMOTECASE_SERVER__PORT": "0",
            "REMOTECASE_SERVER__FRONT_SECRET": secret,
            "REMOTECASE_SERVER__HOST": "127.0.0.1",
            "REMOTECASE_SERVER__WORKERS": "1",
            "REMOTECASE_SERVER__TLS_CERT": "",
            "REMOTECASE_SERVER__TLS_KEY": "",
            "REMOTECASE_WORKER_INDEX": str(index),
            REPORT_FD: str(report_to),
        }
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "control.cli",
                *(sys.argv[1:] or ["serve"]),
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                pass_fds=(report_to,),
            )
        except BaseException:
            os.close(report)
            raise
        finally:
            os.close(report_to)  # the worker holds the only write end: its exit is our EOF
        port = await _reported_port(report)
        if port is None:
            logger.error("worker %d exited before it bound a port", index)
        return proc, port

    started = await asyncio.gather(*(spawn(i) for i in range(workers)))
    procs = [proc for proc, _ in started]
    # a worker that died before binding is routed nowhere until it is started again
    urls = [f"http://127.0.0.1:{port or 0}" for _, port in started]
    # the front's deadline a little after the workers': a slow body is answered by its worker
    # (which the front relays), and the front holds only what reaches no worker
    runner = web.AppRunner(
        create_front(
            urls,
            secret=secret,
            body_timeout=config.server.body_timeout + 5.0,
            ws_heartbeat=(config.server.ws_heartbeat, config.server.ws_pong_timeout),
        ),
        access_log=None,
        shutdown_timeout=FRONT_SHUTDOWN_WAIT,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    logger.warning("front on %s:%d, %d workers on %s", host, port, workers, ", ".join(urls))
    if ssl_context is None and config.server.plain_http_exposed():
        logger.warning(PLAIN_HTTP_WARNING, host, host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    supervision = TaskSet("supervisor", logger)  # the stop signal and a watcher per worker
    try:
        await _supervise(supervision, stop, procs, urls, spawn, loop)
    finally:
        # the workers first: their calls end and their WebSockets close, which ends the ones
        # the front relays, so that the front's own wait for open connections is short
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        await runner.cleanup()
        # one deadline for all (each worker bounds its own stop, app.SHUTDOWN_LIMIT)
        try:
            await asyncio.wait_for(
                asyncio.gather(*(proc.wait() for proc in procs)), WORKER_STOP_LIMIT
            )
        except TimeoutError:
            for proc in procs:
                if proc.returncode is None:
                    logger.error(
                        "worker %d did not stop in %.0f s; killed", proc.pid, WORKER_STOP_LIMIT
                    )
                    proc.kill()
                    await proc.wait()
        await supervision.close()


async def _supervise(
    supervision: TaskSet,
    stop: asyncio.Event,
    procs: list[asyncio.subprocess.Process],
    urls: list[str],
    spawn: Callable[[int], Awaitable[tuple[asyncio.subprocess.Process, int | None]]],
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Until a stop signal: start each worker that dies again, and route to its new port
    (``urls`` is the front's own list); give up after too many deaths."""
    stopper = supervision.spawn(stop.wait(), "stop signal")
    watchers = {supervision.spawn(p.wait(), f"worker {i}"): i for i, p in enumerate(procs)}
    restarts: list[float] = []
    while True:
        done, _ = await asyncio.wait({stopper, *watchers}, return_when=asyncio.FIRST_COMPLETED)
        if stopper in done:
            break
        # a worker died (a crash, an OOM kill): its calls are gone, its recordings are sealed
        # as interrupted by the new worker's recovery; the others never noticed
        now = loop.time()
        restarts = [t for t in restarts if now - t < RESTART_WINDOW] + [now]
        if len(restarts) > MAX_RESTARTS:
            logger.error("workers died %d times in %.0f s: stopping", len(restarts), RESTART_WINDOW)
            break
        for watcher in done:
            index = watchers.pop(watcher)
            logger.error(
                "worker %d exited (code %s): starting it again", index, procs[index].returncode
            )
            procs[index], port = await spawn(index)
            urls[index] = f"http://127.0.0.1:{port or 0}"
            watchers[supervision.spawn(procs[index].wait(), f"worker {index}")] = index


async def _reported_port(report: int) -> int | None:
    """The port a worker writes to its report pipe (``REMOTECASE_WORKER_REPORT_FD``) once it
    has bound it; None at the end of the pipe without one (the worker died first)."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(report, "rb", buffering=0)
    )
    try:
        line = await reader.readline()
    finally:
        transport.close()
    text = line.decode("ascii", "replace").strip()
    return int(text) if text.isdigit() and 0 < int(text) < 65536 else None


def report_port(sock: socket.socket) -> None:
    """In a worker: tell the supervisor the port its listening socket got, on the pipe the
    supervisor gave in ``REMOTECASE_WORKER_REPORT_FD`` (nothing without one)."""
    fd = os.environ.pop(REPORT_FD, "")
    if not fd.isdigit():
        return
    port = sock.getsockname()[1]
    with os.fdopen(int(fd), "wb", buffering=0) as pipe:  # closed: no child of ours keeps it
        pipe.write(f"{port}\n".encode("ascii"))
