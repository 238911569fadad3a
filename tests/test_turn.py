"""TURN for parties behind firewalls (issue 18): Debian's coturn on 127.0.0.1 with the shared
secret scheme (``use-auth-secret``), credentials made per participant in ``joined``, and a real
aiortc party allowed only relay candidates (``iceTransportPolicy: relay``) over UDP, over TCP and
over TLS (``turns:``) to the relay, whose media reaches another participant through the SFU.

TLS: coturn serves a certificate for 127.0.0.1 made here (cryptography) and signed by a CA made
here. aiortc passes ``turns:`` to aioice as ``ssl=True`` (aiortc/rtcicetransport.py,
``kwargs["turn_ssl"] = parsed["scheme"] == "turns"``), and aioice hands that to
``loop.create_connection(..., ssl=True)`` (aioice/turn.py, ``create_turn_endpoint``): asyncio
then makes ``ssl.create_default_context()``, which verifies the relay's certificate and its
address against the default trust store. No SSL context can be passed through aiortc's
configuration, so the test's CA is trusted the way any OpenSSL program is told of one: the
``SSL_CERT_FILE`` environment variable, set for this test only (``monkeypatch``; OpenSSL reads it
each time a default context loads its certificates). A deployment needs nothing of the kind: its
relay has a certificate from a CA the clients already trust.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import ipaddress
import shutil
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aioice.turn import TurnClientTcpProtocol, TurnClientUdpProtocol
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.forwarding import free_port
from bench.peer import PatternVideoTrack, PeerClient
from control.config import ConfigError
from control.sessions.turn import turn_credentials
from tests.conftest import Server, join, make_config, start_server, wait_until

TURNSERVER = shutil.which("turnserver")
SECRET = "test-shared-secret-not-for-production"


def test_credentials_are_coturns_rest_scheme() -> None:
    username, password = turn_credentials("s3cret", 3600, "party-7", now=1_700_000_000)
    assert username == "1700003600:party-7"
    expected = hmac.new(b"s3cret", username.encode(), hashlib.sha1).digest()
    assert base64.b64decode(password) == expected


def test_config_refuses_a_secret_with_fixed_credentials(tmp_path: Path) -> None:
    bad = {"urls": ["turn:127.0.0.1:3478"], "secret": "x", "username": "u", "credential": "c"}
    with pytest.raises(ConfigError, match="secret"):
        make_config(tmp_path, media={"ice_servers": [bad]})
    with pytest.raises(ConfigError, match="ttl"):
        make_config(
            tmp_path, media={"ice_servers": [{"urls": ["turn:127.0.0.1"], "secret": "x", "ttl": 5}]}
        )


def _tls_files(into: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, relay certificate for 127.0.0.1, its key), PEM, made for this test."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "remotecase test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (into / "turn-ca.pem", into / "turn-cert.pem", into / "turn-key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[2].chmod(0o600)
    return paths


@dataclass(frozen=True)
class Coturn:
    port: int  # UDP and TCP
    tls_port: int  # TLS over TCP
    ca: Path  # the CA that signed its certificate


@pytest.fixture
async def coturn(tmp_path: Path) -> AsyncIterator[Coturn]:
    if TURNSERVER is None:
        pytest.skip("Debian's coturn is not installed (.ci/run installs it)")
    port = free_port()
    tls_port = free_port()
    low = free_port()
    ca, cert, key = await asyncio.to_thread(_tls_files, tmp_path)
    proc = await asyncio.create_subprocess_exec(
        TURNSERVER,
        "-n",
        "--listening-ip=127.0.0.1",
        f"--listening-port={port}",
        "--relay-ip=127.0.0.1",
        f"--min-port={low}",
        f"--max-port={low + 50}",
        "--use-auth-secret",
        f"--static-auth-secret={SECRET}",
        "--realm=remotecase.test",
        "--allow-loopback-peers",
        f"--tls-listening-port={tls_port}",
        f"--cert={cert}",
        f"--pkey={key}",
        "--no-dtls",
        "--no-cli",
        f"--userdb={tmp_path / 'turndb'}",
        f"--pidfile={tmp_path / 'turnserver.pid'}",
        "--log-file=stdout",
        "--simple-log",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    log: list[str] = []

    async def read() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            log.append(line.decode(errors="replace"))

    reader = asyncio.get_running_loop().create_task(read())
    try:
        await _listening(port, log)
        await _listening(tls_port, log)
        yield Coturn(port, tls_port, ca)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await asyncio.gather(reader, return_exceptions=True)


async def _listening(port: int, log: list[str]) -> None:
    """Until turnserver accepts TCP on ``port`` (it opens UDP at the same time)."""
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"turnserver did not start: {''.join(log)[-2000:]}") from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return


@pytest.fixture
async def turn_server(tmp_path: Path, coturn: Coturn) -> AsyncIterator[Server]:
    urls = [
        f"turn:127.0.0.1:{coturn.port}?transport=udp",
        f"turn:127.0.0.1:{coturn.port}?transport=tcp",
        f"turns:127.0.0.1:{coturn.tls_port}?transport=tcp",
    ]
    config = make_config(tmp_path, media={"ice_servers": [{"urls": urls, "secret": SECRET}]})
    srv = await start_server(config)
    yield srv
    await srv.runner.cleanup()


def _relay_only(servers: list[dict[str, Any]], scheme: str, transport: str) -> RTCConfiguration:
    (entry,) = servers
    urls = [u for u in entry["urls"] if u.startswith(f"{scheme}:") and u.endswith(f"={transport}")]
    assert len(urls) == 1, entry["urls"]
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(urls=urls, username=entry["username"], credential=entry["credential"])
        ],
        bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
        iceTransportPolicy=RTCIceTransportPolicy.RELAY,
    )


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_party_with_relay_candidates_only_reaches_the_room(
    turn_server: Server,
    coturn: Coturn,
    clients: list[PeerClient],
    transport: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = turn_server
    scheme, inner_transport = ("turns", "tcp") if transport == "tls" else ("turn", transport)
    if transport == "tls":
        # trust the test's CA as OpenSSL's default context does (see the module's docstring)
        monkeypatch.setenv("SSL_CERT_FILE", str(coturn.ca))
    party = await join(server, clients, "turn-room", "party-1")
    assert party.joined is not None
    (entry,) = party.joined["ice_servers"]
    expiry, user = entry["username"].split(":", 1)
    assert user == "party-1" and 86000 < int(expiry) - time.time() <= 86400
    assert SECRET not in str(party.joined)
    # the party may use nothing but the relay
    party.publisher_pc = RTCPeerConnection(
        _relay_only(party.joined["ice_servers"], scheme, inner_transport)
    )
    watcher = await join(server, clients, "turn-room", "watcher", decode=False)
    await party.publish(PatternVideoTrack(fps=15))
    await wait_until(
        lambda: len(watcher.mids_for_participant("party-1", "video")) == 1,
        timeout=30,
        what="the party's track offered",
    )
    (mid,) = watcher.mids_for_participant("party-1", "video")
    await wait_until(
        lambda: watcher.received_packets[mid] > 30, timeout=40, what="media through the relay"
    )
    ice = party.publisher_pc.getTransceivers()[0].sender.transport.transport
    (pair,) = ice._connection._nominated.values()
    assert pair.local_candidate.type == "relay"
    assert pair.local_candidate.transport == "udp"  # the relayed address is UDP either way
    # and the party reached the relay over the transport asked for
    inner = pair.protocol.transport._TurnTransport__inner_protocol  # type: ignore[attr-defined]
    expected = TurnClientUdpProtocol if transport == "udp" else TurnClientTcpProtocol
    assert isinstance(inner, expected), type(inner)
    if transport != "udp":
        tls = inner.transport.get_extra_info("ssl_object")
        if transport == "tcp":
            assert tls is None
        else:
            # over TLS, with the relay's certificate checked against the test's CA
            assert isinstance(tls, ssl.SSLObject)
            assert tls.context.verify_mode == ssl.CERT_REQUIRED and tls.context.check_hostname
            peer = tls.getpeercert()
            assert peer is not None
            assert ("IP Address", "127.0.0.1") in peer["subjectAltName"], peer
    assert not server.sfu.rooms["turn-room"].participants["party-1"].closed
