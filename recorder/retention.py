"""Retention: how long a sealed recording's media is kept, and its deletion once that has
passed. Each change is a custody log entry signed at once; the manifest, its signature and the
log stay, so what existed, and that it was deleted, by whom and why, remain checkable.

Blocking (file writes, the log's fsync): callers run these off the event loop.
"""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path
from typing import Any

from common.files import write_atomic
from common.hashing import canonical

from .custody import CustodyLog
from .layout import METADATA, SEGMENTS, load_json


def set_retention(
    recordings_dir: Path,
    custody: CustodyLog,
    recording_id: str,
    retain_until: datetime.date,
    *,
    actor: str,
    reason: str,
) -> dict[str, Any]:
    path = recordings_dir / recording_id / METADATA
    meta = load_json(path)
    if meta.get("state") == "deleted":
        raise ValueError("录像的媒体已删除 / the recording's media is already deleted")
    old = meta.get("retain_until")
    meta["retain_until"] = retain_until.isoformat()
    write_atomic(path, canonical(meta))
    return custody.append(
        "recording.retention_changed",
        actor=actor,
        reason=reason,
        case=meta.get("case", ""),
        room=meta.get("room", ""),
        recording=recording_id,
        old=old,
        new=meta["retain_until"],
    )


def delete_media(
    recordings_dir: Path,
    custody: CustodyLog,
    recording_id: str,
    *,
    actor: str,
    reason: str,
    today: datetime.date | None = None,
) -> dict[str, Any]:
    """Delete a sealed recording's media once its retention has passed."""
    directory = recordings_dir / recording_id
    meta = load_json(directory / METADATA)
    if meta.get("state") != "sealed":
        raise ValueError(
            f"只能删除已封存的录像（此录像状态为 {meta.get('state')}） / only a sealed recording "
            f"can be deleted (it is {meta.get('state')})"
        )
    today = today or datetime.datetime.now(datetime.UTC).date()
    retain_until = datetime.date.fromisoformat(meta.get("retain_until") or "9999-12-31")
    if today <= retain_until:
        raise ValueError(
            f"保存期至 {retain_until.isoformat()}，尚未届满 / "
            f"retained until {retain_until.isoformat()}"
        )
    removed = 0
    for path in sorted(directory.glob(f"{SEGMENTS}/*/*.seg*")):
        path.unlink()
        removed += 1
    shutil.rmtree(directory / "exports", ignore_errors=True)  # packages hold the media too
    meta["state"] = "deleted"
    write_atomic(directory / METADATA, canonical(meta))
    return custody.append(
        "recording.deleted",
        actor=actor,
        reason=reason,
        case=meta.get("case", ""),
        room=meta.get("room", ""),
        recording=recording_id,
        segments_removed=removed,
    )
