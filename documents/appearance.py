"""Visible appearances of signatures: the party's handwritten mark from stroke data, an officer's
name card, the department's seal. Images only (drawn with the embedded-font rule in mind: text
in them is pixels, so no font object is added to the signed revisions)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from .errors import SigningError
from .fonts import find_cjk_font

MAX_STROKES = 200
MAX_POINTS = 5000
MAX_MARK_BYTES = 96 * 1024  # canonical JSON of MAX_POINTS points at 0.1 resolution fits

Strokes = list[list[tuple[float, float]]]


def parse_strokes(raw: Any) -> Strokes:
    """Stroke data as the party page sends it: a list of strokes, each a list of [x, y] (or
    [x, y, t]) points in any unit. Refused when empty, too large or not numbers."""
    if isinstance(raw, dict):
        raw = raw.get("strokes")
    if not isinstance(raw, list) or not raw or len(raw) > MAX_STROKES:
        raise SigningError(
            f"签名笔迹应为 1 至 {MAX_STROKES} 笔 / the mark must have 1 to {MAX_STROKES} strokes"
        )
    out: Strokes = []
    total = 0
    for stroke in raw:
        if not isinstance(stroke, list) or not stroke:
            raise SigningError("每一笔应为点的列表 / each stroke must be a list of points")
        pts: list[tuple[float, float]] = []
        for p in stroke:
            if (
                not isinstance(p, list | tuple)
                or len(p) < 2
                or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                    for v in p[:2]
                )
            ):
                raise SigningError("笔迹点应为 [x, y] 数字 / a point must be [x, y] numbers")
            # 0.1 unit is finer than a finger; rounding keeps the canonical JSON short
            pts.append((round(float(p[0]), 1), round(float(p[1]), 1)))
        total += len(pts)
        out.append(pts)
    if total > MAX_POINTS:
        raise SigningError(f"笔迹点过多（{total}）/ too many points ({total})")
    return out


def strokes_json(strokes: Strokes) -> bytes:
    """The canonical bytes of the stroke data (its SHA-256 goes into the party certificate)."""
    return json.dumps({"strokes": strokes}, separators=(",", ":")).encode()


def strokes_sha256(strokes: Strokes) -> str:
    return hashlib.sha256(strokes_json(strokes)).hexdigest()


def _font(size: int, font: Path | None) -> ImageFont.FreeTypeFont:
    path, index = find_cjk_font(font)
    return ImageFont.truetype(str(path), size, index=index)


def mark_image(
    strokes: Strokes,
    caption: str = "",
    size: tuple[int, int] = (600, 200),
    font: Path | None = None,
) -> Image.Image:
    """The strokes scaled into the box, with a small caption (name and time) underneath."""
    w, h = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    xs = [x for s in strokes for x, _ in s]
    ys = [y for s in strokes for _, y in s]
    spanx, spany = max(max(xs) - min(xs), 1e-6), max(max(ys) - min(ys), 1e-6)
    area_h = h - 40 if caption else h
    scale = min((w - 20) / spanx, (area_h - 20) / spany)
    ox = (w - spanx * scale) / 2 - min(xs) * scale
    oy = (area_h - spany * scale) / 2 - min(ys) * scale
    for s in strokes:
        pts = [(x * scale + ox, y * scale + oy) for x, y in s]
        if len(pts) == 1:
            x, y = pts[0]
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill="black")
        else:
            draw.line(pts, fill="black", width=6, joint="curve")
    if caption:
        draw.text((w / 2, h - 18), caption, font=_font(22, font), fill=(60, 60, 60), anchor="mm")
    return img


def name_card(
    lines: Sequence[str], size: tuple[int, int] = (600, 200), font: Path | None = None
) -> Image.Image:
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    big = _font(56, font)
    small = _font(24, font)
    draw.text((size[0] / 2, 70), lines[0], font=big, fill="black", anchor="mm")
    for i, line in enumerate(lines[1:]):
        draw.text((size[0] / 2, 130 + 32 * i), line, font=small, fill=(60, 60, 60), anchor="mm")
    return img


def flatten(img: Image.Image) -> Image.Image:
    """RGBA over white (the seal): PDF/A-friendly, no soft mask in the signed revision."""
    if img.mode != "RGBA":
        return img.convert("RGB")
    bg = Image.new("RGB", img.size, "white")
    bg.paste(img, mask=img.split()[3])
    return bg
