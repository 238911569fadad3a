"""An impaired network for any process: network namespaces, veth pairs and a userspace bridge.

``bench.impair`` impairs the sockets of an aiortc peer inside its own process; a browser's
sockets cannot be reached that way. This module gives a whole process (Chromium, a client, a
server) a network of its own whose one link is impaired:

    client namespace                middle namespace                  root namespace
    ┌──────────────┐  veth  ┌──────────────────────────────┐  veth  ┌──────────────────┐
    │ <c> 10.77.N.2├────────┤<cm>  bridge process  <rm>    ├────────┤<r> 10.77.N.1     │
    └──────────────┘        │ (AF_PACKET, one per veth end)│        │ (server binds    │
                            └──────────────────────────────┘        │  here)           │
                                                                    └──────────────────┘

Both addresses are in one /24, so the middle is a plain L2 bridge: it reads every frame from
one veth end with an ``AF_PACKET`` raw socket and writes it to the other, and on the way applies
a :class:`bench.impair.Impairment` per direction (``up``: what the client sends, ``down``: what
it receives). This kernel has no ``netem`` (``/work/shared/notes/impairment.md``), hence user
space. What is impaired:

- **UDP** (media: STUN, DTLS, SRTP, SRTCP) gets the impairment: loss, delay with jitter (it
  reorders), a rate limit with a queue, outages and cuts;
- **TCP** (the page, its signalling WebSocket) and ICMP pass unimpaired by loss, delay and rate
  (a measurement of media is not muddled by a page loading slowly), but an **outage** or a
  **cut** drops them too: a network that is gone is gone for signalling as well;
- **ARP** always passes (the link layer stays, as a radio link does through a fade), and the
  namespaces have IPv6 off.

The bridge is its own **process** (``ip netns exec MIDDLE python -m bench.netns bridge ...``),
not a thread of the caller, so a test's or a benchmark's GIL never delays a frame. It is driven
over its stdin/stdout, one JSON object a line; it leaves when its stdin closes, so it never
outlives its owner. Re-injected frames are only right with the offloads off on every veth
(checksums not left to a later hop, no 64 KB super-frames): ``ethtool`` is not installed here,
so :func:`disable_offloads` makes the same ``SIOCETHTOOL`` ioctls.

    async with ImpairedNetwork() as net:          # needs root; see unavailable()
        ...  # a server in this (root) namespace binds net.server_address
        chromium = net.wrapper(tmp / "chromium", "/usr/bin/chromium")  # runs in the client ns
        await net.set(down=Impairment(rate_bps=150_000, queue=1.0))
        await net.outage(5.0)
        print(await net.stats())                  # per direction counters

Names are unique per run (``rcnet<pid>x<n>``) and everything is torn down in ``close()``, also
after a failure; a namespace left by a process that died (a killed test run) is removed by the
next :meth:`ImpairedNetwork.start`. Network traffic stays on this host: the client namespace
has no route beyond its /24.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import fcntl
import itertools
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .impair import DirectionStats, ImpairedLink, Impairment

PREFIX = "rcnet"
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4  # what this socket's own interface sent: not to be forwarded back
SIOCETHTOOL = 0x8946
# ethtool's legacy set commands for: rx/tx checksumming, scatter-gather, TSO, UFO, GSO, GRO
_ETHTOOL_SETS = (0x15, 0x17, 0x19, 0x1F, 0x22, 0x24, 0x2C)
_ETHTOOL_GGRO, _ETHTOOL_GTXCSUM = 0x2B, 0x16
_counter = itertools.count()
_REPO = str(Path(__file__).resolve().parents[1])  # the bridge runs `-m bench.netns` from here


class NetnsError(RuntimeError):
    """A namespace, a link or the bridge could not be made."""


def unavailable() -> str | None:
    """Why this machine cannot make impaired networks (None: it can)."""
    if os.geteuid() != 0:
        return "网络命名空间需要 root 权限 / network namespaces need root"
    if shutil.which("ip") is None:
        return "未安装 ip（iproute2） / ip (iproute2) is not installed"
    if not hasattr(socket, "AF_PACKET"):
        return "没有 AF_PACKET 原始套接字 / no AF_PACKET raw sockets"
    return None


def _run(*args: str, ns: str | None = None) -> str:
    command = ["ip", "netns", "exec", ns, *args] if ns else list(args)
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise NetnsError(f"{' '.join(command)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _ethtool(sock: socket.socket, ifname: str, cmd: int, data: int = 0) -> int:
    value = ctypes.create_string_buffer(struct.pack("II", cmd, data))
    ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(value)).ljust(40, b"\0")
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    return int(struct.unpack_from("II", value.raw)[1])


def disable_offloads(ifname: str) -> None:
    """Checksum, segmentation and receive offloads off on ``ifname`` (of the caller's namespace),
    as ``ethtool -K IF rx off tx off sg off tso off ufo off gso off gro off`` would."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for cmd in _ETHTOOL_SETS:
            with contextlib.suppress(OSError):  # a feature the device cannot change (UFO: gone)
                _ethtool(sock, ifname, cmd, 0)
        if _ethtool(sock, ifname, _ETHTOOL_GTXCSUM) or _ethtool(sock, ifname, _ETHTOOL_GGRO):
            raise NetnsError(f"offloads of {ifname} stay on / {ifname} 的卸载功能无法关闭")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_LINK = re.compile(r"^rc(\d+)x\d+(?:c|cm|r|rm)$")


def sweep() -> list[str]:
    """Remove the namespaces and links of runs whose process is gone; the names removed."""
    removed = []
    for line in _run("ip", "-o", "link").splitlines():
        fields = line.split(":")
        name = fields[1].strip().split("@")[0] if len(fields) > 1 else ""
        match = _LINK.match(name)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(NetnsError):
                _run("ip", "link", "del", name)
                removed.append(name)
    listing = _run("ip", "netns", "list")
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        try:
            pid = int(name[len(PREFIX) :].split("x", 1)[0])
        except ValueError:
            continue
        if _alive(pid):
            continue
        tag = name[len(PREFIX) :].rsplit("-", 1)[0]
        with contextlib.suppress(NetnsError):
            _run("ip", "link", "del", f"rc{tag}r")
        with contextlib.suppress(NetnsError):
            _run("ip", "netns", "del", name)
        removed.append(name)
    return removed


def _free_subnet() -> int:
    used = _run("ip", "-4", "-o", "addr")
    for n in itertools.chain(range(os.getpid() % 200 + 20, 250), range(20, 250)):
        if f"10.77.{n}." not in used:
            return n
    raise NetnsError("no free 10.77.N.0/24 / 没有空闲的 10.77.N.0/24")


@dataclass(frozen=True, slots=True)
class Topology:
    tag: str
    client_ns: str
    middle_ns: str
    client_if: str  # in the client namespace
    client_side: str  # the middle namespace's end towards the client
    server_side: str  # the middle namespace's end towards the root namespace
    root_if: str  # in the root namespace
    client_address: str
    server_address: str

    @classmethod
    def new(cls) -> Topology:
        tag = f"{os.getpid()}x{next(_counter)}"
        if len(f"rc{tag}cm") > 15:  # interface names: at most 15 characters
            tag = f"{os.getpid() % 100000}x{next(_counter) % 100}"
        n = _free_subnet()
        return cls(
            tag=tag,
            client_ns=f"{PREFIX}{tag}-c",
            middle_ns=f"{PREFIX}{tag}-m",
            client_if=f"rc{tag}c",
            client_side=f"rc{tag}cm",
            server_side=f"rc{tag}rm",
            root_if=f"rc{tag}r",
            client_address=f"10.77.{n}.2",
            server_address=f"10.77.{n}.1",
        )


def _create(t: Topology) -> None:
    _run("ip", "netns", "add", t.client_ns)
    _run("ip", "netns", "add", t.middle_ns)
    _run("ip", "link", "add", t.client_if, "type", "veth", "peer", "name", t.client_side)
    _run("ip", "link", "add", t.root_if, "type", "veth", "peer", "name", t.server_side)
    for ifname in (t.client_if, t.client_side, t.server_side, t.root_if):
        disable_offloads(ifname)  # in the root namespace; the features move with the device
    _run("ip", "link", "set", t.client_if, "netns", t.client_ns)
    _run("ip", "link", "set", t.client_side, "netns", t.middle_ns)
    _run("ip", "link", "set", t.server_side, "netns", t.middle_ns)
    for ns in (t.client_ns, t.middle_ns):
        _run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", ns=ns)
        _run("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1", ns=ns)
        _run("ip", "link", "set", "lo", "up", ns=ns)
    _run("sysctl", "-qw", f"net.ipv6.conf.{t.root_if}.disable_ipv6=1")
    _run("ip", "addr", "add", f"{t.client_address}/24", "dev", t.client_if, ns=t.client_ns)
    _run("ip", "link", "set", t.client_if, "up", ns=t.client_ns)
    _run("ip", "link", "set", t.client_side, "up", ns=t.middle_ns)
    _run("ip", "link", "set", t.server_side, "up", ns=t.middle_ns)
    _run("ip", "addr", "add", f"{t.server_address}/24", "dev", t.root_if)
    _run("ip", "link", "set", t.root_if, "up")


def _destroy(t: Topology) -> None:
    """Everything of ``t`` gone; what is already gone is no error."""
    for command in (
        ("ip", "link", "del", t.root_if),
        ("ip", "link", "del", t.client_if),  # still here if the start failed before the move
        ("ip", "netns", "del", t.client_ns),
        ("ip", "netns", "del", t.middle_ns),
    ):
        with contextlib.suppress(NetnsError):
            _run(*command)


class ImpairedNetwork:
    """A client namespace whose one link to this namespace is impaired (see the module)."""

    def __init__(
        self, up: Impairment | None = None, down: Impairment | None = None, *, seed: int = 1
    ) -> None:
        self._initial = (up or Impairment(), down or Impairment())
        self._seed = seed
        self.topology: Topology | None = None
        self._bridge: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def server_address(self) -> str:
        assert self.topology is not None, "not started"
        return self.topology.server_address

    @property
    def client_address(self) -> str:
        assert self.topology is not None, "not started"
        return self.topology.client_address

    @property
    def client_ns(self) -> str:
        assert self.topology is not None, "not started"
        return self.topology.client_ns

    def exec_prefix(self) -> list[str]:
        """What runs a command in the client namespace."""
        return ["ip", "netns", "exec", self.client_ns]

    def wrapper(self, path: Path, program: str) -> Path:
        """An executable script at ``path`` that runs ``program`` with its arguments in the
        client namespace (for tools that take an executable, as Playwright does)."""
        path.write_text(f'#!/bin/sh\nexec ip netns exec {self.client_ns} {program} "$@"\n')
        path.chmod(0o755)
        return path

    async def start(self) -> None:
        reason = unavailable()
        if reason is not None:
            raise NetnsError(reason)
        await asyncio.to_thread(sweep)
        self.topology = await asyncio.to_thread(Topology.new)
        try:
            await asyncio.to_thread(_create, self.topology)
            t = self.topology
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [_REPO, env.get("PYTHONPATH")]))
            self._bridge = await asyncio.create_subprocess_exec(
                *("ip", "netns", "exec", t.middle_ns, sys.executable, "-m", "bench.netns"),
                *("bridge", t.client_side, t.server_side, "--seed", str(self._seed)),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
                cwd=_REPO,
            )
            ready = await self._reply(timeout=30)
            if not ready.get("ready"):
                raise NetnsError(f"the bridge did not start: {ready}")
            up, down = self._initial
            await self.set(up=up, down=down)
        except BaseException:
            await self.close()
            raise

    async def __aenter__(self) -> ImpairedNetwork:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the bridge, remove the namespaces and links. Idempotent."""
        if self._closed:
            return
        self._closed = True
        bridge, self._bridge = self._bridge, None
        if bridge is not None:
            if bridge.stdin is not None:
                bridge.stdin.close()
            try:
                await asyncio.wait_for(bridge.wait(), 5)
            except TimeoutError:
                bridge.kill()
                await bridge.wait()
        if self.topology is not None:
            await asyncio.to_thread(_destroy, self.topology)

    # -- control ---------------------------------------------------------------------------
    async def _reply(self, timeout: float = 10.0) -> dict[str, Any]:  # noqa: ASYNC109
        assert self._bridge is not None and self._bridge.stdout is not None
        line = await asyncio.wait_for(self._bridge.stdout.readline(), timeout)
        if not line:
            raise NetnsError("the bridge process ended / 网桥进程已结束")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise NetnsError(reply["error"])
        return reply

    async def _command(self, **command: Any) -> dict[str, Any]:
        async with self._lock:
            if self._bridge is None or self._bridge.stdin is None:
                raise NetnsError("not started / 未启动")
            self._bridge.stdin.write(json.dumps(command).encode() + b"\n")
            await self._bridge.stdin.drain()
            return await self._reply()

    async def set(self, up: Impairment | None = None, down: Impairment | None = None) -> None:
        """Change the conditions from now on (what is in flight keeps its own)."""
        await self._command(
            op="set",
            up=None if up is None else asdict(up),
            down=None if down is None else asdict(down),
        )

    async def outage(self, seconds: float) -> None:
        """Nothing but ARP gets through either way for ``seconds`` from now."""
        await self._command(op="outage", seconds=seconds)

    async def cut(self) -> None:
        """Nothing but ARP gets through any more, until :meth:`restore`."""
        await self._command(op="cut")

    async def restore(self) -> None:
        await self._command(op="restore")

    async def stats(self) -> dict[str, dict[str, int]]:
        """Per direction (``up``, ``down``): the UDP datagrams' :class:`DirectionStats`, plus
        ``other`` (frames passed unimpaired), ``other_dropped`` (in an outage or a cut) and
        ``send_errors`` (a frame the other end's socket refused)."""
        reply = await self._command(op="stats")
        stats: dict[str, dict[str, int]] = reply["stats"]
        return stats

    async def move(self) -> str:
        """The client changes network, as a phone going from Wi-Fi to 4G: its address moves to
        a new /24 (``10.77.M.2``, the root namespace's end getting ``10.77.M.1`` as its
        gateway) and the old one is removed, so whatever still uses the old address (sockets
        bound to it, packets sent to it) dies; the client reaches :attr:`server_address`
        through a host route via the new gateway, nothing beyond. Returns the new address
        (:attr:`client_address` from now on)."""
        assert self.topology is not None, "not started"
        async with self._lock:  # not while a command talks to the bridge: one change at a time
            self.topology = await asyncio.to_thread(_move, self.topology)
        return self.topology.client_address


def _move(t: Topology) -> Topology:
    n = _free_subnet()
    gateway, address = f"10.77.{n}.1", f"10.77.{n}.2"
    _run("ip", "addr", "add", f"{gateway}/24", "dev", t.root_if)
    # the old address gone first (the Wi-Fi lost), then the new one up (4G attached)
    _run("ip", "addr", "del", f"{t.client_address}/24", "dev", t.client_if, ns=t.client_ns)
    _run("ip", "addr", "add", f"{address}/24", "dev", t.client_if, ns=t.client_ns)
    _run("ip", "route", "replace", f"{t.server_address}/32", "via", gateway, ns=t.client_ns)
    return dataclasses.replace(t, client_address=address)


# -- the bridge (runs in the middle namespace) -------------------------------------------------
class _FrameLink(ImpairedLink):
    """:class:`ImpairedLink`'s impairment applied to frames instead of a peer's sockets."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed=seed)
        self.other = {"up": 0, "down": 0}
        self.other_dropped = {"up": 0, "down": 0}
        self.send_errors = {"up": 0, "down": 0}

    def dark(self) -> bool:
        return self._cut or asyncio.get_running_loop().time() < self._dark_until

    def pass_udp(self, direction: str, deliver: Any, ip_bytes: int) -> None:
        # ImpairedLink's rate counts the datagram plus 28 bytes of IP and UDP headers
        self._pass(self._up if direction == "up" else self._down, deliver, max(0, ip_bytes - 28))

    def report(self) -> dict[str, dict[str, int]]:
        out = {}
        for name, stats in (("up", self.up), ("down", self.down)):
            row = asdict(stats)
            row.update(
                other=self.other[name],
                other_dropped=self.other_dropped[name],
                send_errors=self.send_errors[name],
            )
            out[name] = row
        return out


def _raw_socket(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.bind((ifname, ETH_P_ALL))
    sock.setblocking(False)
    return sock


def _impairment(value: dict[str, Any] | None) -> Impairment | None:
    return None if value is None else Impairment(**value)


async def _bridge(client_side: str, server_side: str, seed: int) -> None:
    loop = asyncio.get_running_loop()
    for ifname in (client_side, server_side):
        disable_offloads(ifname)  # again, in case a move between namespaces reset them
    link = _FrameLink(seed)
    sockets = {"up": (_raw_socket(client_side), _raw_socket(server_side))}
    sockets["down"] = (sockets["up"][1], sockets["up"][0])

    def forward(direction: str) -> None:
        source, target = sockets[direction]
        while True:
            try:
                frame, address = source.recvfrom(65536)
            except BlockingIOError:
                return
            if address[2] == PACKET_OUTGOING:
                continue

            def deliver(frame: bytes = frame) -> None:
                try:
                    target.send(frame)
                except OSError:
                    link.send_errors[direction] += 1

            ethertype = frame[12:14]
            if ethertype == b"\x08\x06":  # ARP
                link.other[direction] += 1
                deliver()
            elif ethertype == b"\x08\x00" and len(frame) > 23 and frame[23] == 17:  # UDP
                link.pass_udp(direction, deliver, len(frame) - 14)
            elif link.dark():
                link.other_dropped[direction] += 1
            else:
                link.other[direction] += 1
                deliver()

    loop.add_reader(sockets["up"][0].fileno(), forward, "up")
    loop.add_reader(sockets["down"][0].fileno(), forward, "down")
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def answer(reply: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()

    answer({"ready": True})
    try:
        while line := await reader.readline():
            try:
                command = json.loads(line)
                op = command["op"]
                if op == "set":
                    link.set_impairment(
                        up=_impairment(command.get("up")), down=_impairment(command.get("down"))
                    )
                    answer({"ok": True})
                elif op == "outage":
                    link.outage(float(command["seconds"]))
                    answer({"ok": True})
                elif op == "cut":
                    link.cut()
                    answer({"ok": True})
                elif op == "restore":
                    link.restore()
                    answer({"ok": True})
                elif op == "stats":
                    answer({"ok": True, "stats": link.report()})
                else:
                    answer({"error": f"unknown op {op!r} / 未知操作"})
            except (KeyError, TypeError, ValueError) as exc:
                answer({"error": f"bad command / 命令有误: {exc}"})
    finally:
        link.close()
        for sock in sockets["up"]:
            loop.remove_reader(sock.fileno())
            sock.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.netns", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    bridge = sub.add_parser("bridge", help="run the bridge (inside the middle namespace)")
    bridge.add_argument("client_side")
    bridge.add_argument("server_side")
    bridge.add_argument("--seed", type=int, default=1)
    sub.add_parser("sweep", help="remove what runs that died left behind")
    args = parser.parse_args(argv)
    if args.command == "bridge":
        asyncio.run(_bridge(args.client_side, args.server_side, args.seed))
    else:
        for name in sweep():
            print(name)


__all__ = [
    "DirectionStats",
    "ImpairedNetwork",
    "Impairment",
    "NetnsError",
    "Topology",
    "disable_offloads",
    "sweep",
    "unavailable",
]

if __name__ == "__main__":
    main()
