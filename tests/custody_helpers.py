"""A short real recording, sealed, exported and witnessed, for the custody tests to tamper with."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from common.hashing import canonical
from control.appkeys import RECORDER
from recorder.custody import CustodyLog
from recorder.export import export_recording
from recorder.keys import KeyEncryptionKey, load_or_create_signing_key, load_public_key
from recorder.witness import KeyWitness
from tests.conftest import join, make_config, start_server, wait_until


@dataclass
class Site:
    """One deployment's directories (copied per test, so each tampers with its own)."""

    base: Path
    recording_id: str
    package: Path

    @property
    def keys(self) -> Path:
        return self.base / "keys"

    @property
    def custody(self) -> Path:
        return self.base / "var" / "custody"

    @property
    def recording(self) -> Path:
        return self.base / "var" / "recordings" / self.recording_id

    @property
    def public(self) -> Ed25519PublicKey:
        return load_public_key((self.keys / "custody-ed25519.pub.pem").read_bytes())

    @property
    def witness_public(self) -> Ed25519PublicKey:
        return load_public_key((self.base / "witness" / "witness-ed25519.pub.pem").read_bytes())

    def kek(self) -> KeyEncryptionKey:
        return KeyEncryptionKey.load_or_create(self.keys / "recording-kek.key")

    def witness(self) -> KeyWitness:
        return KeyWitness(self.base / "witness", self.base / "checkpoints")

    def custody_log(self) -> CustodyLog:
        key = load_or_create_signing_key(self.keys / "custody-ed25519.pem")
        return CustodyLog(self.custody, key, witness=self.witness())

    def copy(self, to: Path) -> Site:
        shutil.copytree(self.base, to)
        return Site(to, self.recording_id, to / self.package.relative_to(self.base))

    def config_env(self) -> dict[str, str]:
        return {
            "REMOTECASE_STORAGE__DATA_DIR": str(self.base / "var"),
            "REMOTECASE_KEYS__DIR": str(self.keys),
        }


async def record(base: Path, seconds: float = 2.0, room_id: str = "custody-room") -> str:
    """A real call of one party (VP8 video and Opus audio), recorded and sealed."""
    server = await start_server(make_config(base, recording={"segment_seconds": 1.0}))
    clients: list[PeerClient] = []
    try:
        party = await join(server, clients, room_id, "driver")
        await party.publish(PatternVideoTrack(fps=15), ToneAudioTrack(440), video_codec="video/VP8")
        room = server.sfu.rooms[room_id]
        await wait_until(lambda: len(room.up_tracks()) == 2, what="two tracks published")
        recorder = server.app[RECORDER]
        await recorder.start(room, actor="officer", reason="inquiry", case="CASE-7")
        await asyncio.sleep(seconds)
        manifest = await recorder.stop(room_id, actor="officer", reason="inquiry finished")
        return str(manifest["recording_id"])
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()


def make_site(base: Path) -> Site:
    recording_id = asyncio.run(record(base))
    site = Site(base, recording_id, base / "package")
    custody = site.custody_log()
    try:
        export_recording(
            recording_dir=site.recording,
            custody=custody,
            kek=site.kek(),
            signing_key=load_or_create_signing_key(site.keys / "custody-ed25519.pem"),
            out=site.package,
            actor="supervisor",
            reason="court request",
        )
    finally:
        custody.close()
    return site


def lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().split(b"\n") if line]


def write_lines(path: Path, items: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in items))


def entry_line(entry: dict[str, Any]) -> bytes:
    return canonical(entry)


def failures(findings: list[Any]) -> list[str]:
    return [str(f) for f in findings if not f.ok]


def load(path: Path) -> Any:
    return json.loads(path.read_bytes())
