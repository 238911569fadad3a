"""A recording's manifest, built in one place (:func:`build_manifest`) for both ways a recording
is sealed: at its stop (from the tracks the writer kept) and after a crash (from what
``recording.json`` and the custody log hold, :mod:`recorder.recovery`); and the sealing itself
(:func:`seal_manifest`): ``manifest.json``, ``recording.sealed``, a signed tree head and
``manifest.sig.json``. See ``docs/custody.md`` for the fields.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.files import write_atomic
from common.hashing import canonical

from .custody import CustodyLog
from .keys import sign_manifest
from .layout import MANIFEST, MANIFEST_SIG, parse_iso
from .writer import TrackState, track_info_json

FORMAT = "remotecase-recording-manifest/1"


def build_manifest(
    *,
    recording_id: str,
    case: str,
    room: str,
    status: str,
    note: str,
    started_at: str | None,
    stopped_at: str | None,
    started_by: str,
    stopped_by: str,
    participants: list[dict[str, Any]],
    parts: list[dict[str, Any]],
    tracks: list[dict[str, Any]],
    gaps: Iterable[dict[str, Any]],
    started_index: int | None,
    stopped_index: int | None,
    signing_key_id: str,
    key: dict[str, Any],
) -> dict[str, Any]:
    """The manifest; ``gaps`` are listed by start time, then track."""
    return {
        "format": FORMAT,
        "recording_id": recording_id,
        "case": case,
        "room": room,
        "status": status,
        "note": note,
        "started_at": started_at,
        "stopped_at": stopped_at,
        "started_by": started_by,
        "stopped_by": stopped_by,
        "participants": participants,
        "parts": parts,
        "tracks": tracks,
        "gaps": sorted(gaps, key=lambda g: (g.get("start_time") or "", g["track"])),
        "custody": {
            "started_index": started_index,
            "stopped_index": stopped_index,
            "signing_key_id": signing_key_id,
        },
        "key": key,
    }


def track_manifest(t: TrackState) -> dict[str, Any]:
    """A track in the manifest: what the SFU forwarded to the recorder and what it recorded.

    ``forwarded_frames`` = ``frames`` (recorded) + the ``frames`` of the track's gaps +
    ``late_frames`` + ``cut_frames``: every forwarded frame is in the file or accounted for.
    """
    counts = t.counts
    forwarded = counts.get("forwarded_frames", t.frames)
    late = counts.get("late_frames", 0) + t.late_frames
    return {
        **track_info_json(t.info),
        "container": t.container,
        "part": t.part,
        "first_rtp_timestamp": t.first_rtp_timestamp,
        "first_packet_time": t.first_packet_time,
        "sender_reports": [{"ntp": n, "rtp": r} for n, r in t.sender_reports],
        "forwarded_frames": forwarded,
        "frames": t.frames,
        "recorded_frames": t.frames,
        # forwarded, not recorded: in gaps or late (a frame cut off at the end is no loss)
        "dropped_frames": forwarded - t.frames - counts.get("cut_frames", 0),
        "late_frames": late,
        "cut_frames": counts.get("cut_frames", 0),
        "packets_forwarded": counts.get("packets_forwarded", 0),
        "packets_missing": counts.get("packets_missing", 0),
        "packets_late": counts.get("late_packets", 0),
        "queue_dropped": counts.get("queue_dropped", 0),
        "keyframes_requested": counts.get("keyframes_requested", 0),
        "failure": t.failure,
        "ended": "left" if t.left_at is not None and t.ended == "unpublished" else t.ended,
        "ended_at": t.ended_at,
        "segments": t.segments,
    }


def recovered_track(
    track_id: str, track: dict[str, Any], segments: list[dict[str, Any]]
) -> dict[str, Any]:
    """A track as a crash left it: what recording.json last saved, and the logged segments.

    The counts are those of the last save: frames forwarded after it are unknown, and the
    media after the last logged segment is lost (the manifest's note says so)."""
    counts = track.get("counts", {})
    frames = sum(seg["frames"] for seg in segments)
    kept = {k: v for k, v in track.items() if k not in ("track_id", "counts", "gaps")}
    return {
        **kept,
        "track_id": track_id,
        "sender_reports": track.get("sender_reports", []),
        # unknown past the crash; what the last save (at a segment's cut) counted
        "forwarded_frames": None,
        "frames": frames,
        "recorded_frames": frames,
        "dropped_frames": None,
        "counts_at_last_save": counts,
        "failure": track.get("failure"),
        "ended": "interrupted",
        "segments": segments,
    }


def track_gaps(
    tracks: Sequence[TrackState], participants: Sequence[dict[str, Any]], stopped_at: str | None
) -> list[dict[str, Any]]:
    """Every track's gaps, and a ``left`` gap for each track whose party left: from leaving to
    coming back (or to the end of the recording)."""
    gaps = [g for t in tracks for g in t.gaps]
    stopped = parse_iso(stopped_at)
    for t in tracks:
        if t.ended not in ("left", "unpublished") or t.left_at is None:
            continue
        left = parse_iso(t.left_at)
        back = [
            parse_iso(x["joined_at"])
            for p in participants
            if p["id"] == t.info.participant_id
            for x in p.get("presence", [])
            if parse_iso(x["joined_at"]) >= left
        ]
        until = min(back, default=stopped)
        gaps.append(
            {
                "track": t.info.track_id,
                "participant": t.info.participant_id,
                "cause": "left",
                "start_time": t.left_at,
                "start_timestamp": t.last_ts,
                "end_timestamp": t.last_ts,
                "start": round(t.last_ts / t.info.clock_rate, 3),
                "duration": round(max(0.0, until - left), 3),
                "frames": 0,
                "packets_missing": 0,
                "detail": "returned" if back else "did not return before the end",
            }
        )
    return gaps


def seal_manifest(
    custody: CustodyLog,
    signing_key: Ed25519PrivateKey,
    directory: Path,
    manifest: dict[str, Any],
    *,
    room: str,
    case: str,
    on_sealed: Callable[[], None],
) -> dict[str, Any]:
    """Write the manifest, log ``recording.sealed``, sign a tree head and write the envelope;
    then ``on_sealed`` marks ``recording.json`` sealed. Blocking (the writer thread, or a
    thread of recovery)."""
    body = canonical(manifest)
    digest = hashlib.sha256(body).hexdigest()
    write_atomic(directory / MANIFEST, body)
    sealed = custody.append(
        "recording.sealed",
        actor="recorder",
        case=case,
        room=room,
        recording=manifest["recording_id"],
        manifest_sha256=digest,
        status=manifest["status"],
    )
    head = custody.sign_head()
    envelope = {
        "manifest_sha256": digest,
        "signature": sign_manifest(signing_key, body),
        "signing_key_id": custody.key_id,
        "sealed_index": sealed["index"],
        "tree_head": head.to_json(),
    }
    write_atomic(directory / MANIFEST_SIG, canonical(envelope))
    on_sealed()
    return manifest
