"""The server under load: one the harness starts (remotecase or Janus) or one at ``--url``,
and the cores each side runs on.

A server the harness starts runs on one core and the generators (and the harness) on the others
(``--no-pin`` to share), so that its CPU share and its latency are its own. The server's CPU and
memory come from its ``/metrics`` (:mod:`bench.load.metrics`), so any running server can be
measured (``--url``); Janus's come from ``/proc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from . import metrics


@dataclass
class Target:
    """The server under load: where it answers, what it is, and how to read its CPU."""

    kind: str  # "remotecase" | "janus"
    base: str
    pid: int | None = None  # Janus's process (its CPU comes from /proc)
    address: str = "127.0.0.1"  # the address clients and server meet on

    async def sample(self, http: aiohttp.ClientSession) -> dict[str, float]:
        """CPU seconds, resident bytes, and forwarded packets when the server counts them
        (:func:`bench.load.metrics.parse`)."""
        if self.kind == "janus":
            from ..janus import process_cpu_seconds, process_rss_bytes

            assert self.pid is not None
            return {"cpu": process_cpu_seconds(self.pid), "rss": process_rss_bytes(self.pid)}
        async with http.get(f"{self.base}/metrics") as r:
            text = await r.text()
        return metrics.parse(text)

    async def wait_up(self, http: aiohttp.ClientSession) -> None:
        from ..forwarding import wait_healthy

        path = "/janus/info" if self.kind == "janus" else "/healthz"
        await wait_healthy(http, self.base + path)


@contextlib.asynccontextmanager
async def serve_remotecase(
    url: str | None, workers: int = 1, cpus: list[int] | None = None, server_log: str | None = None
) -> AsyncIterator[Target]:
    """A Target for the server at ``url``, or for one started here with ``workers`` worker
    processes (and stopped after)."""
    if url:
        yield Target("remotecase", url.rstrip("/"))
        return
    from ..forwarding import free_port

    tmp = Path(tempfile.mkdtemp(prefix="remotecase-load-"))
    port = free_port()
    env = {
        **os.environ,
        "REMOTECASE_SERVER__PORT": str(port),
        "REMOTECASE_STORAGE__DATA_DIR": str(tmp / "var"),
        "REMOTECASE_KEYS__DIR": str(tmp / "keys"),
        "REMOTECASE_MEDIA__HOST_ADDRESSES": '["127.0.0.1"]',
        "REMOTECASE_MEDIA__MAX_PARTICIPANTS": "100",
        "REMOTECASE_VERIFIER__ENABLED": "false",
        "REMOTECASE_SERVER__WORKERS": str(workers),
        "REMOTECASE_LOG__LEVEL": "WARNING",
        # its rooms are not case sessions: development tokens (/dev/token)
        "REMOTECASE_AUTH__DEV_JOIN": "true",
    }
    log = tmp / "server.log"
    with log.open("wb") as sink:
        server = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "control.cli",
            "serve",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=sink,
        )
    if cpus:
        pin(server.pid, cpus)
    try:
        yield Target("remotecase", f"http://127.0.0.1:{port}", pid=server.pid)
    finally:
        if not await terminate(server, 60):
            print("bench: the server did not stop within 60 s of SIGTERM; killed", file=sys.stderr)
        if server_log:
            shutil.copy(log, server_log)
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.asynccontextmanager
async def serve_janus(cpus: list[int] | None = None) -> AsyncIterator[Target]:
    """Debian's Janus with a generated configuration, stopped after."""
    from ..forwarding import free_port
    from ..janus import janus_available, own_address, start_janus

    problem = janus_available()
    if problem:
        raise RuntimeError(problem)
    tmp = Path(tempfile.mkdtemp(prefix="remotecase-janus-"))
    port = free_port()
    address = own_address()
    janus = await start_janus(tmp, port, address)
    if cpus:
        pin(janus.pid, cpus)
    try:
        yield Target("janus", f"http://127.0.0.1:{port}", pid=janus.pid, address=address)
    finally:
        await terminate(janus, 10)
        shutil.rmtree(tmp, ignore_errors=True)


async def terminate(proc: asyncio.subprocess.Process, limit: float) -> bool:
    """SIGTERM, then SIGKILL after ``limit`` seconds; False when it had to be killed."""
    if proc.returncode is not None:
        return True
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), limit)
        return True
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return False


# -- cores -----------------------------------------------------------------------------------
def pin(pid: int, cpus: list[int]) -> None:
    """Every thread of a process on these cores (threads it starts later inherit it)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(task), set(cpus))


def split_cores(pin: bool, workers: int = 1) -> tuple[list[int] | None, list[int] | None]:
    """With ``pin``: the server on one core, the generators (and this harness) on the others,
    so that the server's CPU and latency are its own and not its share of a contended machine.
    Not when the server has several workers, or there is only one core."""
    cores = sorted(os.sched_getaffinity(0))
    if not pin or workers != 1 or len(cores) < 2:
        return None, None
    return cores[:1], cores[1:]


def pinned(
    server: list[int] | None, generators: list[int] | None
) -> dict[str, list[int] | None] | None:
    """The cores as a report records them (None: not pinned)."""
    return None if server is None else {"server": server, "generators": generators}


@contextlib.contextmanager
def harness_on(cpus: list[int] | None) -> Iterator[None]:
    """This process on these cores (the generators'), and back after."""
    before = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
