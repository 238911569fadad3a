"""Janus (Debian's ``janus``, VideoRoom plugin) for side-by-side runs of ``bench load``.

:func:`start_janus` writes a minimal configuration (the VideoRoom plugin and the HTTP transport
only, ICE on the loopback interface) into a temporary directory and starts Janus on it.
:class:`JanusSession` is the little of Janus's HTTP API the load generator needs: a session, a
handle per plugin attachment, messages with or without JSEP, events by long poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import aiohttp

JANUS = "/usr/bin/janus"
PLUGINS = Path("/usr/lib/x86_64-linux-gnu/janus/plugins")
TRANSPORTS = Path("/usr/lib/x86_64-linux-gnu/janus/transports")


def janus_available() -> str | None:
    """Why Janus cannot run here, or None."""
    if shutil.which("janus") is None and not Path(JANUS).exists():
        return "Janus is not installed (apt-get install janus)"
    if not (PLUGINS / "libjanus_videoroom.so").exists():
        return f"the VideoRoom plugin is not in {PLUGINS}"
    return None


def own_address() -> str:
    """The machine's own IPv4 address (libnice does not gather loopback candidates, so Janus
    and its clients meet on this address; the traffic stays on the machine)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            address: str = probe.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    return address


def write_config(directory: Path, port: int, address: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    other_plugins = sorted(
        p.name for p in PLUGINS.glob("libjanus_*.so") if p.name != "libjanus_videoroom.so"
    )
    other_transports = sorted(
        p.name for p in TRANSPORTS.glob("libjanus_*.so") if p.name != "libjanus_http.so"
    )
    (directory / "janus.jcfg").write_text(f"""general: {{
    configs_folder = "{directory}"
    plugins_folder = "{PLUGINS}"
    transports_folder = "{TRANSPORTS}"
    events_folder = "{directory}/events"
    loggers_folder = "{directory}/loggers"
    debug_level = 3
    session_timeout = 120
    protected_folders = []
}}
certificates: {{}}
media: {{
    rtp_port_range = "30000-60000"
}}
nat: {{
    ice_enforce_list = "{address}"
    nice_debug = false
}}
plugins: {{
    disable = "{",".join(other_plugins)}"
}}
transports: {{
    disable = "{",".join(other_transports)}"
}}
events: {{
    broadcast = false
}}
""")
    (directory / "janus.transport.http.jcfg").write_text(f"""general: {{
    base_path = "/janus"
    http = true
    port = {port}
    ip = "127.0.0.1"
    https = false
}}
admin: {{
    admin_http = false
    admin_https = false
}}
""")
    (directory / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")
    return directory


async def start_janus(directory: Path, port: int, address: str) -> asyncio.subprocess.Process:
    config = write_config(directory, port, address)
    return await asyncio.create_subprocess_exec(
        JANUS,
        "-F",
        str(config),
        "-C",
        str(config / "janus.jcfg"),
        "-N",
        "-L",
        str(directory / "janus.log"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def process_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class JanusError(RuntimeError):
    pass


class JanusSession:
    """One Janus session over HTTP, with its long-poll reader."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base.rstrip("/")
        self.session_id: int | None = None
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._poller: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": body.get("transaction") or secrets.token_hex(6)}
        async with self.http.post(self.base + path, json=body) as r:
            reply: dict[str, Any] = await r.json(content_type=None)
        if reply.get("janus") == "error":
            raise JanusError(f"janus: {reply.get('error')}")
        return reply

    async def create(self) -> None:
        reply = await self._post("/janus", {"janus": "create"})
        self.session_id = int(reply["data"]["id"])
        loop = asyncio.get_running_loop()
        self._poller = loop.create_task(self._poll())
        self._keepalive = loop.create_task(self._keep_alive())

    async def attach(self, plugin: str = "janus.plugin.videoroom") -> int:
        reply = await self._post(f"/janus/{self.session_id}", {"janus": "attach", "plugin": plugin})
        return int(reply["data"]["id"])

    async def message(
        self,
        handle: int,
        body: dict[str, Any],
        jsep: dict[str, str] | None = None,
        timeout: float = 30.0,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """Send a plugin message; the plugin's event for it (synchronous replies too)."""
        transaction = secrets.token_hex(8)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[transaction] = future
        request: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            request["jsep"] = jsep
        try:
            reply = await self._post(f"/janus/{self.session_id}/{handle}", request)
            # a synchronous request answers at once, an asynchronous one with an event
            event = (
                reply
                if reply.get("janus") == "success"
                else await asyncio.wait_for(future, timeout)
            )
        finally:
            self._waiting.pop(transaction, None)
        data = event.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise JanusError(f"videoroom: {data['error']}")
        return event

    async def candidates_done(self, handle: int) -> None:
        """Our SDP carried every candidate (aiortc does not trickle): tell Janus so, or its ICE
        keeps waiting for more."""
        await self._post(
            f"/janus/{self.session_id}/{handle}",
            {"janus": "trickle", "candidate": {"completed": True}},
        )

    async def _poll(self) -> None:
        while True:
            try:
                async with self.http.get(
                    f"{self.base}/janus/{self.session_id}", params={"maxev": "10"}
                ) as r:
                    events = await r.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.2)
                continue
            for event in events if isinstance(events, list) else [events]:
                future = self._waiting.get(event.get("transaction", ""))
                if future is not None and not future.done() and event.get("janus") == "event":
                    future.set_result(event)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(20)
            with contextlib.suppress(aiohttp.ClientError, JanusError):
                await self._post(f"/janus/{self.session_id}", {"janus": "keepalive"})

    async def close(self) -> None:
        for task in (self._poller, self._keepalive):
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(t for t in (self._poller, self._keepalive) if t), return_exceptions=True
        )
        if self.session_id is not None:
            with contextlib.suppress(aiohttp.ClientError, JanusError):
                await self._post(f"/janus/{self.session_id}", {"janus": "destroy"})
