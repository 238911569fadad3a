"""What a recording is on disk, ``<data_dir>/recordings/<id>/``:

* ``recording.json``: state (``recording`` -> ``sealed`` -> ``deleted``), tracks, the wrapped
  data key (:data:`METADATA`);
* ``segments/<track>/<n>.seg``: ``nonce (12 bytes) || AES-GCM ciphertext and tag`` under the
  recording's data key, the segment's position bound in as associated data
  (:func:`encrypt_segment`, :func:`decrypt_segment`);
* ``manifest.json`` and ``manifest.sig.json`` once sealed (see ``docs/custody.md``);
* ``owner.lock``: held (``flock``) by the process that records it.

Timestamps in these files are UTC with milliseconds (:func:`iso_time`).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import re
import secrets
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

METADATA = "recording.json"
MANIFEST = "manifest.json"
MANIFEST_SIG = "manifest.sig.json"
SEGMENTS = "segments"
OWNER_LOCK = "owner.lock"
NONCE_BYTES = 12

# Why a span of a track is not in the recording (a gap's ``cause`` in the manifest: codes, kept
# as they are so old recordings still verify), in words for reports: (中文, English)
GAP_CAUSES: dict[str, tuple[str, str]] = {
    "loss": ("网络丢包", "packet loss"),
    "outage": ("网络中断（收不到数据）", "network outage (nothing arrived)"),
    "muted": ("被静音", "muted"),
    "failure": ("录制失败", "recording failure"),
    "left": ("离开房间", "left the room"),
}
# the words of a ``left`` gap's ``detail``
GAP_DETAILS: dict[str, tuple[str, str]] = {
    "returned": ("之后回到房间", "returned"),
    "did not return before the end": ("结束前未回到房间", "did not return before the end"),
}


def gap_cause(code: str, lang: str = "zh-CN") -> str:
    """A gap cause's words in ``lang`` (``zh-CN`` or ``en``); an unknown code as it is."""
    words = GAP_CAUSES.get(code)
    return code if words is None else words[0 if lang == "zh-CN" else 1]


# A sealed manifest's ``note`` is English, as written (recording.py ``_seal``, recovery.py
# ``NOTE``); its parts in Chinese for the reports, translated when shown
_NOTE_ZH: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"track (\S+) \((\S+) (\w+)\) failed after (\d+) frames: (.*?); "
            r"(\d+) forwarded frames after it not recorded"
        ),
        r"轨道 \1（\2 \3）录制 \4 帧后失败：\5；其后 \6 个已转发的帧未录入",
    ),
    (
        re.compile(
            r"interrupted: the server stopped while recording; sealed at the next start from "
            r"the segments the custody log holds; media after the last logged segment is lost"
        ),
        "录制中断：录制时服务器停止运行；下次启动时依据监管日志中已记录的片段封存；最后一个已记录"
        "片段之后的媒体已丢失",
    ),
    (re.compile(r"; set aside, never logged: (.*)$"), r"；另有从未记入日志、已搁置的文件：\1"),
)


def note_zh(note: str) -> str:
    """A manifest's note in Chinese, part by part; a part without words here stays as it is."""
    for pattern, words in _NOTE_ZH:
        note = pattern.sub(words, note)
    return note.replace("; ", "；")


def segment_path(directory: Path, track_id: str, index: int) -> Path:
    return directory / SEGMENTS / track_id / f"{index:06d}.seg"


def segment_aad(recording_id: str, track_id: str, index: int) -> bytes:
    return f"remotecase-segment-v1/{recording_id}/{track_id}/{index}".encode()


def encrypt_segment(
    aead: AESGCM, chunk: bytes, recording_id: str, track_id: str, index: int
) -> bytes:
    """A segment as stored: a fresh nonce, then the ciphertext and tag."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + aead.encrypt(nonce, chunk, segment_aad(recording_id, track_id, index))


def decrypt_segment(
    stored: bytes, data_key: bytes, recording_id: str, track_id: str, index: int
) -> bytes:
    nonce, body = stored[:NONCE_BYTES], stored[NONCE_BYTES:]
    plain: bytes = AESGCM(data_key).decrypt(nonce, body, segment_aad(recording_id, track_id, index))
    return plain


def take_owner_lock(directory: Path) -> IO[bytes]:
    """Hold the recording's owner lock until the returned file is closed (``BlockingIOError``
    if another process holds it): recovery elsewhere (another worker process starting)
    leaves a recording alone while its owner lives, and seals it once the owner is gone."""
    owner = open(directory / OWNER_LOCK, "a+b")
    try:
        fcntl.flock(owner.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        owner.close()
        raise
    return owner


def owned_elsewhere(directory: Path) -> bool:
    """Whether a live process holds the recording's owner lock."""
    path = directory / OWNER_LOCK
    if not path.exists():
        return False
    with open(path, "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        with contextlib.suppress(OSError):
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return False


def iso_time(epoch: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso(text: str | None) -> float:
    if not text:
        return 0.0
    return (
        datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
        .replace(tzinfo=datetime.UTC)
        .timestamp()
    )


def load_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_bytes())
    return data
