"""Shared fixtures: a real server on a free loopback port, token minting, real aiortc clients."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import gc
import logging
import os
import re
import resource
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web_app
import pytest
from aiohttp import web

from bench.peer import PeerClient
from control.app import create_app
from control.appkeys import RECORDER, SFU, SIGNER, VERIFIER
from control.config import Config, load_config
from control.sessions.tokens import TokenSigner
from mediaserver.room import Sfu
from tests.loopstall import ThreadTimes

# A callback whose own time on the loop (wall time less the time the kernel kept the loop's thread
# waiting for a core) passes this fails the test. Blocking calls, sleeps and waits for the GIL
# count; time another process took the cores does not, so a busy 2-core machine cannot fail it.
BLOCKING_LIMIT = 0.5


def make_config(tmp_path: Path, **sections: dict[str, Any]) -> Config:
    overrides: dict[str, dict[str, Any]] = {
        "storage": {"data_dir": str(tmp_path / "var")},
        "keys": {"dir": str(tmp_path / "keys")},
        # aioice skips loopback when gathering; tests stay on 127.0.0.1
        "media": {
            "host_addresses": ["127.0.0.1"],
            "connect_timeout": 10.0,
            "negotiation_timeout": 10.0,
            "pli_min_interval": 0.2,
            # a lost connection is the ordinary leave at once, as the tests of leaving and
            # cleaning up expect; tests/test_resume*.py turn resume on (the default is 20 s)
            "resume_grace": 0.0,
        },
        "log": {"level": "INFO"},
        # The GC policy's deliberate collections walk the whole process, here pytest's with
        # every module it loaded: over a second on this machine, which the blocking check
        # below would rightly flag. It is tested in a process of its own
        # (test_loopwatch.py), and servers started as subprocesses run it.
        "server": {"port": 0, "gc_freeze": False},
        # Development mode, as `remotecase serve --dev`: the media-plane tests meet in ad-hoc
        # rooms with tokens they mint themselves (`Server.token`). A real server's default is
        # off; the admission tests (test_admission.py) pass auth={"dev_join": False}. The
        # identity check before a party joins (on by default) is tested in test_prejoin.py
        # and its browser tests; other tests let parties join straight after redeeming.
        "auth": {"dev_join": True, "prejoin_check": False},
    }
    for name, table in sections.items():
        overrides.setdefault(name, {}).update(table)
    return load_config(None, environ={}, overrides=overrides)


@dataclass
class Server:
    base_url: str
    app: web.Application
    runner: web.AppRunner

    @property
    def sfu(self) -> Sfu:
        return self.app[SFU]

    @property
    def signer(self) -> TokenSigner:
        return self.app[SIGNER]

    def token(self, room: str, participant: str, **kwargs: Any) -> str:
        return self.signer.mint(room, participant, **kwargs)


async def start_server(config: Config, host: str = "127.0.0.1") -> Server:
    app = create_app(config)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = runner.addresses[0][1]
    return Server(f"http://{host}:{port}", app, runner)


class _RunDelay:
    """Samples how long the kernel has kept one thread runnable but not running
    (``/proc/self/task/<tid>/schedstat``, second field), so that the part of a slow callback
    that was only a wait for a core can be taken out of it; and how long it ran on a core (the
    first field), so that a report says how much of a slow step was the thread's own work and
    how much a wait off the core (for the interpreter's lock another thread held, or I/O)."""

    PERIOD = 0.02

    def __init__(self, tid: int) -> None:
        self.tid = tid
        self._path = f"/proc/self/task/{tid}/schedstat"
        self._samples: collections.deque[tuple[float, float, float]] = collections.deque(
            maxlen=3000
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="run-delay", daemon=True)
        self.available = self._read() is not None

    def _read(self) -> tuple[float, float] | None:
        """(run-queue wait, time on a core), seconds."""
        try:
            with open(self._path) as fh:
                fields = fh.read().split()
            return int(fields[1]) / 1e9, int(fields[0]) / 1e9
        except (OSError, IndexError, ValueError):
            return None

    def _sample(self) -> None:
        while not self._stop.wait(self.PERIOD):
            value = self._read()
            if value is not None:
                self._samples.append((time.monotonic(), *value))

    def start(self) -> None:
        if self.available:
            self._samples.append((time.monotonic(), *(self._read() or (0.0, 0.0))))
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _since(self, start: float, field: int) -> float:
        now = self._read()
        if now is None:
            return 0.0
        before = next((s[field] for s in reversed(self._samples) if s[0] <= start), None)
        if before is None:
            before = self._samples[0][field] if self._samples else now[field - 1]
        return max(0.0, now[field - 1] - before)

    def waited_since(self, start: float) -> float:
        """Run-queue wait of the thread from ``start`` (monotonic) until now."""
        return self._since(start, 1)

    def on_cpu_since(self, start: float) -> float:
        """Time the thread ran on a core from ``start`` (monotonic) until now."""
        return self._since(start, 2)


_TOOK = re.compile(r" took (\d+(?:\.\d+)?) seconds")


class _GcTime:
    """The spans the garbage collector ran in (any thread: it holds the GIL), so that a slow
    callback's time spent in a collection, not in the callback's own code, is taken out."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []
        self._start: float | None = None

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.monotonic()
        elif self._start is not None:
            self.spans.append((self._start, time.monotonic()))
            self._start = None

    def within(self, start: float, end: float) -> float:
        return sum(max(0.0, min(b, end) - max(a, start)) for a, b in self.spans)


class _SlowCallbacks(logging.Handler):
    """Collects asyncio's slow-callback warnings whose own time passes the limit."""

    def __init__(
        self,
        run_delay: _RunDelay,
        gc_time: _GcTime | None = None,
        threads: ThreadTimes | None = None,
    ) -> None:
        super().__init__(logging.WARNING)
        self.run_delay = run_delay
        self.threads = threads
        self.gc_time = gc_time if gc_time is not None else _GcTime()  # none: no collection
        self.messages: list[str] = []
        self.excused: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not (message.startswith("Executing") and " took " in message):
            return
        match = _TOOK.search(message)
        took = float(match.group(1)) if match else float("inf")
        # The warning is logged right after the callback returned.
        now = time.monotonic()
        waited = self.run_delay.waited_since(now - took)
        collecting = self.gc_time.within(now - took, now)
        if took - waited - collecting > BLOCKING_LIMIT:
            on_cpu = self.run_delay.on_cpu_since(now - took)
            self.messages.append(
                f"{message} (of which {waited:.3f} s waiting for a core, "
                f"{collecting:.3f} s in the garbage collector; the loop's thread ran "
                f"{on_cpu:.3f} s on a core: the rest it waited off the core, for the "
                "interpreter's lock another thread held or for I/O)"
                + (
                    "; " + self.threads.report(now - took, now, exclude=self.run_delay.tid)
                    if self.threads is not None
                    else ""
                )
            )
        else:
            self.excused.append(message)


@pytest.fixture(autouse=True)
async def no_blocking_on_the_loop() -> AsyncIterator[None]:
    """Fail a test whose code blocks the event loop (asyncio debug mode names the callback;
    the loop thread's run-queue wait and the garbage collector's runs are taken out, so only
    what the loop's own code did counts)."""
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = BLOCKING_LIMIT
    run_delay = _RunDelay(threading.get_native_id())
    run_delay.start()
    threads = ThreadTimes(watch=threading.get_native_id())
    threads.start()
    gc_time = _GcTime()
    gc.callbacks.append(gc_time)
    handler = _SlowCallbacks(run_delay, gc_time, threads)
    logging.getLogger("asyncio").addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger("asyncio").removeHandler(handler)
        gc.callbacks.remove(gc_time)
        threads.stop()
        run_delay.stop()
    assert handler.messages == [], f"blocking calls on the event loop: {handler.messages}"


# Officers' passwords are hashed at a test cost: scrypt at N=2^10 instead of today's 2^17
# (128 MiB and most of a second per hash on this machine; every officer_login is two of them,
# and they were the largest share of the suite's time). The same code runs, at a lower N;
# tests marked ``production_scrypt`` (the cost itself: test_hardening.py) run at today's cost,
# as servers started in subprocesses do.
TEST_SCRYPT = {"n": 1 << 10, "r": 8, "p": 1}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "production_scrypt: officers' passwords hashed at today's cost, not the test's"
    )


@pytest.fixture(autouse=True)
def password_hashing_cost(request: pytest.FixtureRequest) -> Iterator[None]:
    import control.auth as auth

    real = auth.SCRYPT
    if request.node.get_closest_marker("production_scrypt") is None:
        auth.SCRYPT = TEST_SCRYPT
    auth._dummy_hash.cache_clear()  # made at the cost in force
    try:
        yield
    finally:
        auth.SCRYPT = real
        auth._dummy_hash.cache_clear()


def leftovers(app: web.Application) -> dict[str, int]:
    """What a stopped server still holds: the SFU's rooms, participants, tracks, local
    subscribers and tasks, the verifier's rooms, watches and tasks, and the recorder's active
    recordings, tasks, pumps and subscribers (empty when clean)."""
    counts = {f"sfu.{k}": v for k, v in app[SFU].dump().items() if v}
    verifier = app.get(VERIFIER)
    if verifier is not None:
        counts.update({f"verifier.{k}": v for k, v in verifier.dump().items() if v})
    recorder = app.get(RECORDER)
    if recorder is not None:
        counts.update({f"recorder.{k}": v for k, v in recorder.dump().items() if v})
    return counts


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """A server for the test; once it has stopped, nothing of it may be left alive
    (docs/architecture.md, Lifecycle and cleanup)."""
    srv = await start_server(make_config(tmp_path))
    yield srv
    await srv.runner.cleanup()
    assert leftovers(srv.app) == {}, "left behind after the server stopped"


@pytest.fixture
async def clients() -> AsyncIterator[list[PeerClient]]:
    """Clients created by a test; all closed at teardown, even when the test fails."""
    made: list[PeerClient] = []
    yield made
    for client in made:
        await client.close()


PASSWORD = "correct horse battery"
CONSENT = {"recording": True, "face": True, "electronic_delivery": False}


class Api:
    """The HTTP API as a test calls it: (status, JSON body)."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base = http, base

    async def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        json: Any = None,
        data: bytes | None = None,
        lang: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
        if lang is not None:
            headers["Accept-Language"] = lang
        async with self.http.request(
            method, self.base + path, json=json, data=data, headers=headers
        ) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.read()

    async def login(self, username: str, password: str = PASSWORD) -> str:
        status, body = await self.call(
            "POST", "/api/login", json={"username": username, "password": password}
        )
        assert status == 200, body
        token: str = body["token"]
        return token


@dataclass
class ServeProcess:
    """``remotecase serve`` in a subprocess, with an officer ``li`` (brigade ``b1``)."""

    base: str
    proc: asyncio.subprocess.Process
    log: Path

    @property
    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.asynccontextmanager
async def serve_process(tmp_path: Path, **env: str) -> AsyncIterator[ServeProcess]:
    """Start the server as an operator would (settings in ``REMOTECASE_*`` variables), wait
    until it is healthy, and stop it with SIGTERM afterwards (killed if it takes 30 s)."""
    import os
    import signal
    import sys

    from bench.forwarding import free_port, wait_healthy

    port = free_port()
    environ = {
        **os.environ,
        "REMOTECASE_SERVER__PORT": str(port),
        "REMOTECASE_STORAGE__DATA_DIR": str(tmp_path / "var"),
        "REMOTECASE_KEYS__DIR": str(tmp_path / "keys"),
        "REMOTECASE_MEDIA__HOST_ADDRESSES": '["127.0.0.1"]',
        "REMOTECASE_LOG__LEVEL": "WARNING",
        "REMOTECASE_NEW_PASSWORD": PASSWORD,
        "REMOTECASE_AUTH__PREJOIN_CHECK": "false",  # as make_config
        **{f"REMOTECASE_{k.upper()}": v for k, v in env.items()},
    }
    add = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "control.cli",
        "officer",
        "add",
        "--username",
        "li",
        "--brigade",
        "b1",
        env=environ,
        stdout=asyncio.subprocess.DEVNULL,
    )
    assert await add.wait() == 0
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "control.cli", "serve", env=environ, stdout=log, stderr=log
        )
    server = ServeProcess(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, f"{server.base}/healthz")
        yield server
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def officer_login(
    server: Server,
    api: Api,
    username: str = "li",
    brigade: str = "brigade-1",
    role: str = "officer",
) -> str:
    """Create an officer account and log it in."""
    from control.appkeys import DB
    from control.auth import create_officer

    await server.app[DB].run(lambda c: create_officer(c, username, PASSWORD, role, brigade))
    return await api.login(username)


async def case_with_party(
    api: Api, officer: str, *, kind: str = "accident", name: str = "Wang Wei"
) -> tuple[int, int]:
    status, case = await api.call(
        "POST", "/api/cases", officer, {"kind": kind, "title": "test case"}
    )
    assert status == 201, case
    status, party = await api.call(
        "POST", f"/api/cases/{case['id']}/parties", officer, {"role": "driver", "name": name}
    )
    assert status == 201, party
    return case["id"], party["id"]


async def party_link(
    api: Api, officer: str, case_id: int, party_id: int, consent: dict[str, bool] | None = None
) -> dict[str, Any]:
    """Invite a party and redeem the link (a session must be open): the party's token."""
    status, invite = await api.call(
        "POST", f"/api/cases/{case_id}/invitations", officer, {"party_id": party_id}
    )
    assert status == 201, invite
    status, redeemed = await api.call(
        "POST",
        "/api/invitations/redeem",
        json={"token": invite["token"], "consent": consent or CONSENT},
    )
    assert status == 200, redeemed
    return dict(redeemed)


async def wait_until(
    predicate: Callable[[], bool],
    timeout: float = 10.0,  # noqa: ASYNC109
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


async def join(
    server: Server, clients: list[PeerClient], room: str, participant: str, **kwargs: Any
) -> PeerClient:
    client = PeerClient(server.base_url, server.token(room, participant), **kwargs)
    clients.append(client)
    await client.connect()
    return client


Joiner = Callable[..., Awaitable[PeerClient]]


# The C heap's freed memory goes back to the system after each test. The verifier's worker
# threads each load the face models (ONNX Runtime sessions, hundreds of MB); freed when a
# server stops, that memory stays with the threads' malloc arenas, and over the suite the
# pytest process grew to 2.4 GB of memory it no longer used (malloc_trim gives it back: a
# server's verifier loaded and stopped twice leaves ~700 MB resident, ~220 MB after the trim).
try:
    _malloc_trim: Callable[[int], int] | None = ctypes.CDLL(None).malloc_trim
except (AttributeError, OSError):  # not glibc
    _malloc_trim = None

# REMOTECASE_TEST_RSS=FILE appends, after each test, its id, the wall clock (s), the process's
# resident size (MB) before and after the trim, its peak, and the count of objects the garbage
# collector tracks: to see which tests make the pytest process grow. Off by default.
_RSS_LOG = os.environ.get("REMOTECASE_TEST_RSS")


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    yield  # the test with its fixtures' setup and teardown
    # aiohttp caches each handler's middleware chain by (handler, the apps it ran in), up to
    # 1024 entries: every server a test started stayed alive through it, with its SFU, recorder,
    # verifier and database objects (a few hundred apps over the suite, ~250,000 objects that
    # every full collection walked). A real server has one app, which lives anyway.
    build_cache = getattr(aiohttp.web_app, "_cached_build_middleware", None)
    if build_cache is not None:
        build_cache.cache_clear()
    before = _rss_mb() if _RSS_LOG else 0.0
    if _malloc_trim is not None:
        _malloc_trim(0)
    if _RSS_LOG:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        fields = [item.nodeid, f"{time.time():.2f}", f"{before:.0f}", f"{_rss_mb():.0f}"]
        fields += [f"{peak:.0f}", str(len(gc.get_objects()))]
        with open(_RSS_LOG, "a") as log:
            log.write("\t".join(fields) + "\n")
