"""`remotecase serve` as a process: TLS, health, metrics, ICE server configuration."""

from __future__ import annotations

import asyncio
import datetime
import os
import ssl
import sys
import time
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.forwarding import free_port
from bench.peer import PeerClient
from tests.conftest import join, make_config, start_server


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_serve_with_tls_answers_health_over_https(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port = free_port()
    config = tmp_path / "remotecase.toml"
    config.write_text(
        f'[server]\nport = {port}\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
        f'[storage]\ndata_dir = "{tmp_path / "var"}"\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "control.cli",
        "--config",
        str(config),
        "serve",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ},
    )
    try:
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with session.get(
                        f"https://127.0.0.1:{port}/healthz", ssl=context
                    ) as response:
                        assert response.status == 200
                        assert (await response.json())["status"] == "ok"
                        break
                except aiohttp.ClientConnectorError:
                    assert time.monotonic() < deadline, "server did not come up"
                    await asyncio.sleep(0.2)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
    assert proc.returncode == 0  # a clean shutdown on SIGTERM


async def test_no_public_stun_by_default_and_configured_servers_reach_clients(
    tmp_path: Path,
) -> None:
    server = await start_server(make_config(tmp_path))
    clients: list[PeerClient] = []
    try:
        client = await join(server, clients, "r", "a")
        assert client.joined is not None and client.joined["ice_servers"] == []
        participant = server.sfu.rooms["r"].participants["a"]
        # aiortc keeps the configuration only in a private, name-mangled attribute
        configuration = participant.publisher_pc._RTCPeerConnection__configuration  # type: ignore[attr-defined]
        assert configuration.iceServers == []
    finally:
        for c in clients:
            await c.close()
        await server.runner.cleanup()

    ice = [{"urls": ["turn:127.0.0.1:3478"], "username": "u", "credential": "p"}]
    server = await start_server(make_config(tmp_path, media={"ice_servers": ice}))
    clients = []
    try:
        client = await join(server, clients, "r", "a")
        assert client.joined is not None and client.joined["ice_servers"] == ice
        participant = server.sfu.rooms["r"].participants["a"]
        # aiortc keeps the configuration only in a private, name-mangled attribute
        configuration = participant.subscriber_pc._RTCPeerConnection__configuration  # type: ignore[attr-defined]
        (configured,) = configuration.iceServers
        assert configured.urls == ["turn:127.0.0.1:3478"] and configured.username == "u"
    finally:
        for c in clients:
            await c.close()
        await server.runner.cleanup()


async def test_sigterm_mid_call_ends_the_call_and_stops_at_once(tmp_path: Path) -> None:
    """aiohttp waits up to a minute for open connections when it stops: a server in a call took
    28 s to stop on SIGTERM. Now the calls end first (participants hear why) and the sockets
    close as going away."""
    from bench.peer import PatternVideoTrack, PeerClient
    from mediaserver import aiortc_hooks
    from tests.conftest import serve_process

    aiortc_hooks.install()
    clients: list[PeerClient] = []
    async with serve_process(tmp_path, AUTH__DEV_JOIN="true") as server:
        async with aiohttp.ClientSession() as http:
            for name in ("a", "b", "c"):
                async with http.post(
                    f"{server.base}/dev/token", json={"room": "r", "name": name}
                ) as response:
                    token = (await response.json())["token"]
                client = PeerClient(server.base, token, decode=False)
                clients.append(client)
                await client.connect()
        await clients[0].publish(PatternVideoTrack(fps=10))
        await asyncio.sleep(1.0)
        started = time.monotonic()
        server.proc.terminate()
        await asyncio.wait_for(server.proc.wait(), 10)
        stopped_in = time.monotonic() - started
    try:
        assert server.proc.returncode == 0
        assert stopped_in < 5, f"took {stopped_in:.1f} s to stop"
        for client in clients:
            await client.wait_for(lambda m: m["type"] == "bye")
            assert client.closed_reason == "shutdown"
        await asyncio.sleep(0.2)
        assert [c.ws_close_code for c in clients] == [1001] * 3  # going away
    finally:
        for client in clients:
            await client.close()
