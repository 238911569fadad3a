"""The face check before the call: one still from the party's camera against the reference.

The party page posts JPEG stills from its camera before it joins (control/prejoin.py runs the
attempt). Each still is judged by the very rules of the continuous check
(:meth:`Verifier._sample`: the same detector, quality bounds, liveness model and threshold), so
a verdict before the call means what one during it means, and is logged the same way
(``verification.verdict``, with ``phase: "prejoin"``). A still is decoded only after its
header says it is a JPEG of a bounded size; it is never stored, only its hashes.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .service import Verdict, Verifier

MAX_STILL_BYTES = 512 * 1024
MAX_STILL_PIXELS = 1920 * 1080
MIN_STILL_SIDE = 120

# JPEG start-of-frame markers (every SOFn but DHT C4, JPG C8 and DAC CC)
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class StillRejected(Exception):
    """A still that is not a usable JPEG; ``code`` is stable, ``message`` Chinese first."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the start-of-frame segment, before anything is decoded."""
    if data[:2] != b"\xff\xd8":
        raise StillRejected("not_a_jpeg", "不是 JPEG 图像 / the still is not a JPEG image")
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            break
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        if marker in _SOF and at + 9 <= len(data):
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return width, height
        if marker == 0xDA or length < 2:  # image data before any frame header
            break
        at += 2 + length
    raise StillRejected("bad_jpeg", "JPEG 图像已损坏 / the JPEG image is damaged")


def decode_still(data: bytes) -> np.ndarray:
    """The still as RGB, or :class:`StillRejected` (empty, too large, not a JPEG, damaged)."""
    if not data:
        raise StillRejected("empty", "图像为空 / the still is empty")
    if len(data) > MAX_STILL_BYTES:
        raise StillRejected(
            "too_large",
            f"图像超过 {MAX_STILL_BYTES} 字节 / the still exceeds {MAX_STILL_BYTES} bytes",
        )
    width, height = jpeg_size(data)
    if width * height > MAX_STILL_PIXELS or min(width, height) < MIN_STILL_SIDE:
        raise StillRejected(
            "bad_size",
            f"图像为 {width}x{height} 像素，须在 {MIN_STILL_SIDE} 像素与 "
            f"{MAX_STILL_PIXELS} 像素总数之间 / the still is {width}x{height}: at "
            f"least {MIN_STILL_SIDE} px a side and at most {MAX_STILL_PIXELS} pixels",
        )
    # the header's size is the budget: an orientation tag must not turn the picture
    image = cv2.imdecode(
        np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    )
    if image is None or image.shape[:2] != (height, width):
        raise StillRejected("bad_jpeg", "JPEG 图像已损坏 / the JPEG image is damaged")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def brightness(rgb: np.ndarray) -> float:
    """Mean luma of the picture, 0-255 (a dark room is why many faces go unfound)."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return float(gray.mean())


@dataclass
class _Still:
    """What :meth:`Verifier._sample` reads from a decoded video frame."""

    rgb: np.ndarray

    def to_ndarray(self, format: str = "rgb24") -> np.ndarray:
        return self.rgb


@dataclass(frozen=True)
class StillVerdict:
    verdict: Verdict
    brightness: float
    still_sha256: str  # of the JPEG as received (the verdict's frame_sha256 is of its pixels)
    custody_index: int | None


def _judge(
    verifier: Verifier, participant: str, reference: np.ndarray, data: bytes, at: float
) -> tuple[Verdict, float]:
    rgb = decode_still(data)
    verdict = verifier._sample(participant, reference, _Still(rgb), at)
    return verdict, round(brightness(rgb), 1)


async def reference_of(verifier: Verifier, scope: str, participant: str) -> np.ndarray | None:
    loaded = await asyncio.to_thread(verifier.store.load, scope, participant)
    return None if loaded is None else loaded[1]


async def check_still(
    verifier: Verifier,
    *,
    room: str,
    participant: str,
    reference: np.ndarray,
    data: bytes,
    attempt: int,
    case: str = "",
) -> StillVerdict:
    """Judge one still (decoding and inference in the verifier's pool) and log the verdict.

    Raises :class:`StillRejected` for a still that cannot be decoded; nothing is logged then,
    since no picture was judged."""
    loop = asyncio.get_running_loop()
    # counted as busy, so that the continuous check skips a sample rather than queue behind
    verifier._busy += 1
    try:
        verdict, light = await loop.run_in_executor(
            verifier._pool, _judge, verifier, participant, reference, data, time.time()
        )
    finally:
        verifier._busy -= 1
    still_sha256 = hashlib.sha256(data).hexdigest()
    fields: dict[str, Any] = {}
    if verdict.reason:
        fields["reason"] = verdict.reason
    if verifier.liveness is not None:
        fields["liveness"] = verdict.liveness
    entry = None
    if verifier.custody is not None:
        recording = None
        if verifier.recorder is not None:
            active = verifier.recorder.active.get(room)
            recording = active.recording_id if active is not None else None
        entry = await verifier.custody.append_async(
            "verification.verdict",
            room=room,
            case=case,
            actor="verifier",
            **({"recording": recording} if recording else {}),
            phase="prejoin",
            attempt=attempt,
            participant=participant,
            verdict=verdict.verdict,
            score=verdict.score,
            threshold=verifier.spec.threshold,
            model_id=verifier.model_id,
            frame_sha256=verdict.frame_sha256,
            still_sha256=still_sha256,
            frame_time=verdict.time,
            faces=verdict.faces,
            quality=verdict.quality,
            brightness=light,
            **fields,
        )
    return StillVerdict(
        verdict, light, still_sha256, None if entry is None else int(entry["index"])
    )


__all__ = [
    "MAX_STILL_BYTES",
    "StillRejected",
    "StillVerdict",
    "check_still",
    "decode_still",
    "reference_of",
]
