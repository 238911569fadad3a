"""Sealing what a crash left open: at start, every recording still in state ``recording`` that no
live process owns (:func:`recorder.layout.owned_elsewhere`) is sealed as ``incomplete`` from the
segments the custody log holds. A segment file written but never logged is not evidence: it is
set aside (``.seg.unlogged``) and named in the manifest's note.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.files import write_atomic
from common.hashing import canonical

from .custody import CustodyLog
from .layout import METADATA, SEGMENTS, load_json, owned_elsewhere
from .manifest import build_manifest, recovered_track, seal_manifest

NOTE = (
    "interrupted: the server stopped while recording; sealed at the next start from the "
    "segments the custody log holds; media after the last logged segment is lost"
)
SEGMENT_FIELDS = (
    "track",
    "segment",
    "sha256",
    "sha256_stored",
    "bytes",
    "first_timestamp",
    "last_timestamp",
    "frames",
)


def recover(recordings_dir: Path, custody: CustodyLog, signing_key: Ed25519PrivateKey) -> list[str]:
    """Seal recordings a crash left open; returns their IDs. Blocking: run it in a thread."""
    recovered = []
    entries = custody.entries()
    for meta_path in sorted(recordings_dir.glob(f"*/{METADATA}")):
        meta = load_json(meta_path)
        if meta.get("state") != "recording":
            continue
        directory = meta_path.parent
        if owned_elsewhere(directory):
            continue  # another live process is recording it
        _recover_one(custody, signing_key, directory, meta_path, meta, entries)
        recovered.append(meta["recording_id"])
    return recovered


def _recover_one(
    custody: CustodyLog,
    signing_key: Ed25519PrivateKey,
    directory: Path,
    meta_path: Path,
    meta: dict[str, Any],
    entries: list[dict[str, Any]],
) -> None:
    recording_id = meta["recording_id"]
    mine = [e for e in entries if e.get("recording") == recording_id]
    logged: dict[str, list[dict[str, Any]]] = {}
    for entry in mine:
        if entry["type"] == "segment.written":
            logged.setdefault(entry["track"], []).append(
                {k: entry[k] for k in SEGMENT_FIELDS} | {"log_index": entry["index"]}
            )
    unlogged = []
    for path in sorted(directory.glob(f"{SEGMENTS}/*/*.seg")):
        track_id, index = path.parent.name, int(path.stem)
        if not any(seg["segment"] == index for seg in logged.get(track_id, [])):
            path.rename(path.with_suffix(".seg.unlogged"))
            unlogged.append(f"{track_id}/{path.name}")
    started = next((e for e in mine if e["type"] == "recording.started"), None)
    last_time = mine[-1]["time"] if mine else meta.get("started_at")
    note = NOTE
    if unlogged:
        note += f"; set aside, never logged: {', '.join(unlogged)}"
    stop = custody.append(
        "recording.stopped",
        actor="server",
        reason="interrupted (recovered at start)",
        case=meta.get("case", ""),
        room=meta.get("room", ""),
        recording=recording_id,
    )
    tracks = meta.get("tracks", {})
    manifest = build_manifest(
        recording_id=recording_id,
        case=meta.get("case", ""),
        room=meta.get("room", ""),
        status="incomplete",
        note=note,
        started_at=meta.get("started_at"),
        stopped_at=last_time,
        started_by=meta.get("started_by", ""),
        stopped_by="server",
        participants=meta.get("participants", []),
        parts=meta.get("parts", []),
        tracks=[
            recovered_track(track_id, track, logged.get(track_id, []))
            for track_id, track in tracks.items()
        ],
        gaps=(g for t in tracks.values() for g in t.get("gaps", [])),
        started_index=started["index"] if started else None,
        stopped_index=stop["index"],
        signing_key_id=custody.key_id,
        key=meta["key"],
    )

    def mark() -> None:
        write_atomic(meta_path, canonical({**meta, "state": "sealed"}))

    seal_manifest(
        custody,
        signing_key,
        directory,
        manifest,
        room=meta.get("room", ""),
        case=meta.get("case", ""),
        on_sealed=mark,
    )
